package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vowdb/vowdb"
)

const kvLong = `Read and write single keys.

Keys and values are the bytes of the arguments as given. Each command is
linearizable on its own; a scan that crosses ranges is not one snapshot.

A write (put, del, cas) that fails with exit code 5 may or may not have been
applied: read the key back to learn what happened.`

func newKVCmd(g *globals) *cobra.Command {
	cf := &clientFlags{}
	cmd := newGroupCmd("kv", "Read and write keys")
	cmd.Long = kvLong
	cf.register(cmd.PersistentFlags())
	cmd.AddCommand(newKVPutCmd(g, cf), newKVGetCmd(g, cf), newKVDelCmd(g, cf), newKVScanCmd(g, cf), newKVCasCmd(g, cf))
	return cmd
}

// printOK acknowledges a write that has no data to show.
func printOK(cmd *cobra.Command, g *globals) error {
	if g.format == formatJSON {
		return writeJSON(cmd.OutOrStdout(), map[string]bool{"ok": true})
	}
	_, err := fmt.Fprintln(cmd.OutOrStdout(), "OK")
	return err
}

func newKVPutCmd(g *globals, cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "put KEY VALUE",
		Short: "Set KEY to VALUE",
		Args:  usageArgs(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.withDB(cmd.Context(), func(ctx context.Context, db *vowdb.DB) error {
				if err := db.Put(ctx, []byte(args[0]), []byte(args[1])); err != nil {
					return err
				}
				return printOK(cmd, g)
			})
		},
	}
}

func newKVGetCmd(g *globals, cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get KEY",
		Short: "Print the value of KEY (exit code 3 if it is absent)",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.withDB(cmd.Context(), func(ctx context.Context, db *vowdb.DB) error {
				key := []byte(args[0])
				v, err := db.Get(ctx, key)
				if err != nil {
					return fmt.Errorf("get %s: %w", tableBytes(key), err)
				}
				return writeKVs(cmd.OutOrStdout(), string(g.format), []vowdb.KeyValue{{Key: key, Value: v}}, true)
			})
		},
	}
}

func newKVDelCmd(g *globals, cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "del KEY",
		Aliases: []string{"delete", "rm"},
		Short:   "Delete KEY (succeeds if it is absent)",
		Args:    usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.withDB(cmd.Context(), func(ctx context.Context, db *vowdb.DB) error {
				if err := db.Delete(ctx, []byte(args[0])); err != nil {
					return err
				}
				return printOK(cmd, g)
			})
		},
	}
}

func newKVScanCmd(g *globals, cf *clientFlags) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "scan [START [END]]",
		Short: "Print the keys in [START, END) in order",
		Long: `Scan prints the keys in [START, END) in key order with their values.
Without START the scan begins at the first key; without END it runs to the
last key. --limit 0 prints every key.`,
		Args: usageArgs(cobra.MaximumNArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 0 {
				return usageErrorf("--limit must not be negative, not %d", limit)
			}
			var start, end []byte
			if len(args) > 0 {
				start = []byte(args[0])
			}
			if len(args) > 1 {
				end = []byte(args[1])
			}
			return cf.withDB(cmd.Context(), func(ctx context.Context, db *vowdb.DB) error {
				kvs, err := db.Scan(ctx, start, end, limit)
				if err != nil {
					return err
				}
				return writeKVs(cmd.OutOrStdout(), string(g.format), kvs, false)
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "print at most this many keys (0: no limit)")
	return cmd
}

// casArgs is a parsed kv cas command line.
type casArgs struct {
	key, old, new []byte // old == nil: expect absent; new == nil: delete
}

// parseCasArgs reads KEY [OLD] [NEW]: OLD is left out with --expect-absent
// and NEW with --delete.
func parseCasArgs(args []string, expectAbsent, del bool) (casArgs, error) {
	want := 3
	usage := "KEY OLD NEW"
	switch {
	case expectAbsent && del:
		want, usage = 1, "KEY (with --expect-absent and --delete)"
	case expectAbsent:
		want, usage = 2, "KEY NEW (with --expect-absent)"
	case del:
		want, usage = 2, "KEY OLD (with --delete)"
	}
	if len(args) != want {
		return casArgs{}, usageErrorf("kv cas takes %s, got %d argument(s)", usage, len(args))
	}
	c := casArgs{key: []byte(args[0])}
	rest := args[1:]
	if !expectAbsent {
		c.old = []byte(rest[0]) // non-nil even when empty: expect the empty value
		rest = rest[1:]
	}
	if !del {
		c.new = []byte(rest[0])
	}
	return c, nil
}

func newKVCasCmd(g *globals, cf *clientFlags) *cobra.Command {
	var expectAbsent, del bool
	cmd := &cobra.Command{
		Use:   "cas KEY OLD NEW",
		Short: "Set KEY to NEW only if its value is OLD, atomically",
		Long: `Cas (compare-and-swap) sets KEY to NEW if and only if its current value
is OLD, in one atomic step. With --expect-absent the swap happens only if KEY
is absent, and OLD is left out: "kv cas --expect-absent KEY NEW". With
--delete a successful swap deletes KEY, and NEW is left out:
"kv cas --delete KEY OLD".

It prints "swapped: true" or "swapped: false" ({"swapped": ...} with -w json).
A comparison that fails is not an error: the exit code is 0 either way, so
scripts must read the output.`,
		Example: `  vowdb kv cas counter 41 42
  vowdb kv cas --expect-absent lock owner-1
  vowdb kv cas --delete lock owner-1`,
		Args: usageArgs(cobra.RangeArgs(1, 3)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := parseCasArgs(args, expectAbsent, del)
			if err != nil {
				return err
			}
			return cf.withDB(cmd.Context(), func(ctx context.Context, db *vowdb.DB) error {
				swapped, err := db.CompareAndSwap(ctx, c.key, c.old, c.new)
				if err != nil {
					return err
				}
				if g.format == formatJSON {
					return writeJSON(cmd.OutOrStdout(), map[string]bool{"swapped": swapped})
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "swapped: %t\n", swapped)
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&expectAbsent, "expect-absent", false, "swap only if KEY is absent (OLD is left out)")
	cmd.Flags().BoolVar(&del, "delete", false, "delete KEY on a successful swap (NEW is left out)")
	return cmd
}
