package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/vowdb/vowdb"
)

func newRangeCmd(g *globals) *cobra.Command {
	cf := &clientFlags{}
	cmd := newGroupCmd("range", "Inspect, split and check ranges")
	cf.register(cmd.PersistentFlags())
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the ranges with their replicas and leaders",
		Long: `Ls lists every range: its id, key span [START, END), descriptor generation,
voting and learner replicas (node ids), Raft leader, term and the leader's
applied index. The meta range, which indexes the others, comes first and
shows <meta> as its span.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.withDB(cmd.Context(), func(ctx context.Context, db *vowdb.DB) error {
				ranges, err := db.Ranges(ctx)
				if err != nil {
					return err
				}
				return writeRanges(cmd.OutOrStdout(), string(g.format), ranges)
			})
		},
	}
	split := &cobra.Command{
		Use:   "split KEY",
		Short: "Split the range holding KEY at KEY",
		Long: `Split splits the range that holds KEY into [start, KEY) and [KEY, end).
Both halves keep the same replicas; traffic continues during the split. It
prints the two new descriptors (leader, term and applied index are not known
yet and show as - and 0).`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.withDB(cmd.Context(), func(ctx context.Context, db *vowdb.DB) error {
				left, right, err := db.Split(ctx, []byte(args[0]))
				if err != nil {
					return err
				}
				return writeRanges(cmd.OutOrStdout(), string(g.format), []vowdb.RangeInfo{left, right})
			})
		},
	}
	cmd.AddCommand(ls, split, newRangeCheckCmd(g, cf))
	return cmd
}
