package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

const rootLong = `vowdb is a distributed key-value database: an ordered keyspace split into
ranges, each replicated by its own Raft group.

Run a node with "vowdb start", bootstrap a new cluster once with "vowdb init",
then talk to it with "vowdb kv", "vowdb node" and "vowdb range". Client
commands reach the cluster through --endpoints (default 127.0.0.1:7401).

Errors are printed as "Error: <message>" on stderr; data goes to stdout.

` + exitCodesHelp + `
` + envHelp + `
` + outputHelp

// globals holds what every command shares.
type globals struct {
	format    formatFlag
	lookupEnv func(string) (string, bool) // os.LookupEnv outside tests
}

// newRootCmd builds the command tree. Each subcommand lives in its own file.
func newRootCmd() *cobra.Command {
	return newRootCmdEnv(os.LookupEnv)
}

func newRootCmdEnv(lookupEnv func(string) (string, bool)) *cobra.Command {
	g := &globals{format: formatTable, lookupEnv: lookupEnv}
	root := &cobra.Command{
		Use:           "vowdb",
		Short:         "vowdb: a distributed, transactional key-value database",
		Long:          rootLong,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          groupArgs,
		RunE:          groupRun,
		// Cobra runs only the nearest PersistentPreRunE, so a subcommand
		// that defines its own must call bindEnv itself.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return bindEnv(cmd.Flags(), g.lookupEnv)
		},
	}
	root.PersistentFlags().VarP(&g.format, "write-out", "w", "output format: table or json (env VOWDB_WRITE_OUT)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.AddCommand(newStartCmd(), newInitCmd(), newKVCmd(g), newNodeCmd(g), newRangeCmd(g), newTxnCmd(g), newLocksCmd(g))
	root.AddCommand(newDemoCmd(), newBenchCmd(), newTortureCmd())
	return root
}

// groupArgs rejects unknown subcommands of a command that only groups
// others, as a usage error.
func groupArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, which SuggestionsFor does not apply
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return usageErrorf("%s", msg)
}

// groupRun prints the help of a command that only groups others.
func groupRun(cmd *cobra.Command, _ []string) error { return cmd.Help() }

// newGroupCmd returns a command that only groups subcommands.
func newGroupCmd(use, short string) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: groupArgs, RunE: groupRun}
}

// run executes the CLI and returns the process exit code. SIGINT and SIGTERM
// cancel the commands' context: "start" then shuts the node down and exits
// 0; a client command stops and exits 130.
func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runContext(ctx, newRootCmd(), args, os.Stdout, os.Stderr)
}

// runContext runs root with args under ctx, prints a failure as
// "Error: ..." on stderr and returns the exit code.
func runContext(ctx context.Context, root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w: %v", errInterrupted, err)
	}
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	code := exitCode(err)
	if code == exitUsage && cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}
