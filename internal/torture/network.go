package torture

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
)

// Host is where one node runs and how to reach it.
type Host struct {
	// Name is the node's name in logs and fault descriptions: n1, n2, ...
	Name string
	// IP is the node's address: its own in a namespace, 127.0.0.1 in
	// loopback mode.
	IP string
	// Port and HTTPPort are the node's gRPC and HTTP ports.
	Port, HTTPPort int
	// NetNS is the node's network namespace, "" in loopback mode.
	NetNS string
	// Dev is the node's network interface inside NetNS, "" in loopback
	// mode.
	Dev string
}

// Addr is the node's gRPC address.
func (h Host) Addr() string { return net.JoinHostPort(h.IP, strconv.Itoa(h.Port)) }

// HTTPAddr is the node's HTTP address (/readyz, /metrics).
func (h Host) HTTPAddr() string { return net.JoinHostPort(h.IP, strconv.Itoa(h.HTTPPort)) }

// Network places the nodes of a cluster: on their own network stacks (Net)
// or all on the loopback interface (Loopback). The runner, in the root
// namespace, reaches every host.
type Network interface {
	// Hosts returns one host per node.
	Hosts() []Host
	// Command returns a command that runs name on host i (inside its
	// namespace). When started, the command's process is name itself, so
	// signals sent to its PID reach the program.
	Command(i int, name string, arg ...string) *exec.Cmd
	// Describe says where the hosts are, for the summary.
	Describe() string
	// Close removes whatever the network created. It is safe to call more
	// than once.
	Close() error
}

// Loopback is a Network of hosts that all listen on 127.0.0.1, on distinct
// ports. It needs no privileges, but nodes share one network stack, so
// partitions and link faults cannot be applied (they are skipped).
type Loopback struct {
	hosts []Host
}

// NewLoopback returns n loopback hosts with free ports.
func NewLoopback(n int) (*Loopback, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	l := &Loopback{}
	for i := 0; i < n; i++ {
		l.hosts = append(l.hosts, Host{Name: nodeName(i), IP: "127.0.0.1", Port: ports[2*i], HTTPPort: ports[2*i+1]})
	}
	return l, nil
}

// Hosts implements Network.
func (l *Loopback) Hosts() []Host { return l.hosts }

// Command implements Network.
func (l *Loopback) Command(_ int, name string, arg ...string) *exec.Cmd {
	return exec.Command(name, arg...)
}

// Describe implements Network.
func (l *Loopback) Describe() string { return "loopback (127.0.0.1), no network isolation" }

// Close implements Network.
func (l *Loopback) Close() error { return nil }

// freePorts reserves n loopback ports by listening on port 0, then frees
// them for the nodes. Another program could take one in between; that would
// show as a node failing to start.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lis []net.Listener
	defer func() {
		for _, l := range lis {
			_ = l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("torture: reserve a loopback port: %w", err)
		}
		lis = append(lis, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func nodeName(i int) string { return "n" + strconv.Itoa(i+1) }
