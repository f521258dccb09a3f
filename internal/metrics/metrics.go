// Package metrics defines the Prometheus collectors of one vowdb node. Each
// node has its own registry, so several nodes can live in one process (tests,
// the demo) without sharing counters.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Node holds every collector of a node.
type Node struct {
	Registry *prometheus.Registry

	LeaderChanges    prometheus.Counter
	Proposals        prometheus.Counter
	ProposalsDropped prometheus.Counter
	ReadIndexes      prometheus.Counter
	SnapshotsSent    prometheus.Counter
	SnapshotsApplied prometheus.Counter
	RaftMsgsSent     prometheus.Counter
	RaftMsgsRecv     prometheus.Counter
	FsyncSeconds     prometheus.Histogram // one synced Pebble write of a scheduler round
	ApplySeconds     prometheus.Histogram // one apply batch of a scheduler round
	ReadyBatchGroups prometheus.Histogram // ranges persisted together in one synced write
	Ranges           prometheus.Gauge
	Leaders          prometheus.Gauge
	Requests         *prometheus.CounterVec   // by method and outcome
	RequestSeconds   *prometheus.HistogramVec // by method
	TxnCommits       *prometheus.CounterVec   // by path (1PC, 2PC, read-only)
	TxnAborts        *prometheus.CounterVec   // by reason
	TxnCollected     prometheus.Counter       // finished txn state collected past the retention
}

// New builds and registers a node's collectors.
func New() *Node {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	lat := prometheus.ExponentialBuckets(50e-6, 2, 16)
	m := &Node{
		Registry:         r,
		LeaderChanges:    prometheus.NewCounter(prometheus.CounterOpts{Name: "vowdb_raft_leader_changes_total", Help: "Times a local replica saw its range's leader change."}),
		Proposals:        prometheus.NewCounter(prometheus.CounterOpts{Name: "vowdb_raft_proposals_total", Help: "Commands proposed to Raft by local leaders."}),
		ProposalsDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "vowdb_raft_proposals_dropped_total", Help: "Proposals refused by Raft (no leader, transfer in progress)."}),
		ReadIndexes:      prometheus.NewCounter(prometheus.CounterOpts{Name: "vowdb_raft_read_index_total", Help: "ReadIndex rounds issued (each may serve many reads)."}),
		SnapshotsSent:    prometheus.NewCounter(prometheus.CounterOpts{Name: "vowdb_raft_snapshots_sent_total", Help: "Range snapshots generated for lagging followers."}),
		SnapshotsApplied: prometheus.NewCounter(prometheus.CounterOpts{Name: "vowdb_raft_snapshots_applied_total", Help: "Range snapshots applied by local followers."}),
		RaftMsgsSent:     prometheus.NewCounter(prometheus.CounterOpts{Name: "vowdb_raft_messages_sent_total", Help: "Raft messages handed to the transport."}),
		RaftMsgsRecv:     prometheus.NewCounter(prometheus.CounterOpts{Name: "vowdb_raft_messages_received_total", Help: "Raft messages received from peers."}),
		FsyncSeconds:     prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vowdb_storage_fsync_seconds", Help: "Latency of the synced write that persists one scheduler round.", Buckets: lat}),
		ApplySeconds:     prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vowdb_raft_apply_seconds", Help: "Latency of applying the committed entries of one scheduler round.", Buckets: lat}),
		ReadyBatchGroups: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vowdb_raft_ready_groups", Help: "Raft groups whose Ready was persisted in one synced write.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		Ranges:           prometheus.NewGauge(prometheus.GaugeOpts{Name: "vowdb_ranges", Help: "Replicas hosted by this node."}),
		Leaders:          prometheus.NewGauge(prometheus.GaugeOpts{Name: "vowdb_range_leaders", Help: "Ranges this node leads."}),
		Requests:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vowdb_requests_total", Help: "Client requests by method and outcome."}, []string{"method", "outcome"}),
		RequestSeconds:   prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "vowdb_request_seconds", Help: "Client request latency by method.", Buckets: lat}, []string{"method"}),
		TxnCommits:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vowdb_txn_commits_total", Help: "Transactions committed by this gateway, by commit path."}, []string{"path"}),
		TxnAborts:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vowdb_txn_aborts_total", Help: "Transaction aborts seen by this node, by reason."}, []string{"reason"}),
		TxnCollected:     prometheus.NewCounter(prometheus.CounterOpts{Name: "vowdb_txn_state_collected_total", Help: "Remembered outcomes and ended txn records collected past the txn retention by ranges this node leads."}),
	}
	r.MustRegister(m.LeaderChanges, m.Proposals, m.ProposalsDropped, m.ReadIndexes, m.SnapshotsSent, m.SnapshotsApplied,
		m.RaftMsgsSent, m.RaftMsgsRecv, m.FsyncSeconds, m.ApplySeconds, m.ReadyBatchGroups, m.Ranges, m.Leaders, m.Requests, m.RequestSeconds, m.TxnCommits, m.TxnAborts, m.TxnCollected)
	return m
}
