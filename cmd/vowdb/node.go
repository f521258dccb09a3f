package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/vowdb/vowdb"
)

func newNodeCmd(g *globals) *cobra.Command {
	cf := &clientFlags{}
	cmd := newGroupCmd("node", "Inspect the cluster's nodes")
	cf.register(cmd.PersistentFlags())
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the nodes with their liveness and replica counts",
		Long: `Ls lists every node of the cluster as the meta range leader sees it: id,
gRPC and HTTP addresses, whether it heartbeated recently (LIVE), how long ago
it last did, and how many replicas and Raft leaderships it holds.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.withDB(cmd.Context(), func(ctx context.Context, db *vowdb.DB) error {
				nodes, err := db.Nodes(ctx)
				if err != nil {
					return err
				}
				return writeNodes(cmd.OutOrStdout(), string(g.format), time.Now(), nodes)
			})
		},
	}
	cmd.AddCommand(ls)
	return cmd
}
