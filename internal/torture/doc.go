// Package torture is vowdb's Jepsen-style fault-injection runner: it runs a
// real cluster of `vowdb start` processes, drives a workload against it
// through the Go client while it injects faults on a seeded schedule, and
// judges the recorded history. `vowdb torture` is its command line.
//
// # Pieces
//
//   - Network places the nodes. Net gives each node its own network
//     namespace on a private bridge (root needed), so that partitions
//     (iptables) and link faults (netem) can be applied per node; Loopback
//     puts every node on 127.0.0.1 and needs no privileges, but cannot
//     partition (those faults are then reported as skipped).
//   - Cluster starts one process per node inside its namespace, bootstraps
//     the cluster with `vowdb init`, and controls the processes by PID:
//     Kill (SIGKILL), Restart, Pause/Resume (SIGSTOP/SIGCONT) and Stop
//     (SIGTERM, then SIGKILL).
//   - Fault is one kind of failure: kill, pause, partition (isolate one
//     node, halves, bridge, majorities ring), netem (delay, jitter, loss,
//     duplication, reordering on one node's link), lose-unsynced (a kill
//     in which the nodes lose every byte they had not fsynced; it needs the
//     hidden `vowdb start --unsafe-lose-unsynced` flag), kill-leader and
//     pause-leader (the node leading the most ranges, or the leader of a
//     range drawn at random), partition-leader (the leader of the meta
//     range or of a data range holding transaction records, isolated) and
//     power-loss (every node SIGKILLed at once, losing its unsynced bytes,
//     then all restarted together). A fault the machine cannot inject is
//     found by trying (Prober) and is skipped, never counted as passed.
//   - PlanSchedule turns a seed into a schedule: fault on, hold, heal,
//     recovery window, repeated, or a fault at a fixed cadence (Every).
//     The same seed gives the same schedule and the same choices of nodes
//     and partitions (a leader fault's choice also depends on which nodes
//     lead at that moment).
//   - Workload drives the clients and records each operation with a
//     Recorder into history.jsonl, one JSON object per line (for the
//     register workload, in the form internal/check reads). Checker is the
//     plug for checkers that judge that file after the run.
//
// # A run
//
// Run creates the network and the cluster, runs the workload for the
// configured duration under the schedule, then heals everything, restarts
// every stopped node, waits until the cluster is ready, runs the
// workload's final reads and an audit (every node answers /readyz and every
// range has a leader; no lock held or awaited and no transaction in
// flight, after a bounded settle time; the replicas of every range agree,
// by `vowdb range check`), and runs the checks. The output directory holds
// history.jsonl, faults.log (every fault and process event, on the
// history's clock), summary.txt and nodes/ (each node's data and log).
// Every process is stopped by PID and the network removed, also on error
// and on SIGINT.
package torture
