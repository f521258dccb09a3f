package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vowdb/vowdb"
)

const initLong = `Init bootstraps a new cluster through one node, exactly once.

The node must have been started with an empty data directory. It becomes
node 1 of the new cluster and creates the first ranges; the other nodes
started with --join find it and join. Init asks only the first of
--endpoints.

Run against a node that already belongs to a cluster, init changes nothing
and fails with the server's "cluster already initialized" error (exit 1).`

func newInitCmd() *cobra.Command {
	cf := &clientFlags{}
	cmd := &cobra.Command{
		Use:     "init",
		Short:   "Bootstrap a new cluster",
		Long:    initLong,
		Example: "  vowdb init --endpoints 127.0.0.1:7401",
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			eps, err := cf.check()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), cf.timeout)
			defer cancel()
			id, err := vowdb.Init(ctx, eps[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster initialized: %s\n", id)
			return nil
		},
	}
	cf.register(cmd.Flags())
	return cmd
}
