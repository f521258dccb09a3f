package torture

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// ErrNeedRoot is returned by NewNet when the process cannot create network
// namespaces.
var ErrNeedRoot = errors.New("torture: network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN); " +
	"run as root, or use loopback mode (--loopback), in which partition and netem faults are skipped")

// Ports every node uses on its own address in a namespace.
const (
	netnsPort     = 7401
	netnsHTTPPort = 7402
	netnsDev      = "eth0"
)

// Net is a Network of one network namespace per node, joined by a private
// bridge. Every name it creates starts with a tag unique to the run
// (vt<pid>), so concurrent runs do not collide and Close removes only what
// this run created:
//
//	namespace <tag>-br   the bridge br0 and one port per node, plus "host"
//	namespace <tag>-nI   node I: lo and eth0 (10.a.b.I/24), peer of port nI
//	root link <tag>-h    10.a.b.254/24, peer of the bridge port "host"
//
// The bridge lives in a namespace of its own so that frames between nodes
// never cross the root namespace's firewall (with br_netfilter loaded, a
// FORWARD policy of DROP, as Docker sets, would drop them). The root link
// lets the runner reach every node. The /24 is chosen to overlap no address
// or route of the root namespace.
//
// Partitions are iptables rules in the nodes' namespaces and link faults
// are netem qdiscs on their eth0; both stay inside namespaces this run owns.
type Net struct {
	tag    string
	subnet netip.Prefix
	hosts  []Host
	// Stale lists namespaces left by earlier runs whose process is gone
	// (a run that was SIGKILLed cannot clean up). Net never removes them.
	Stale []string

	mu     sync.Mutex
	undo   []undoStep // in creation order; Close runs them backwards
	closed bool
}

type undoStep struct {
	what string
	fn   func() error
}

var netSeq atomic.Int32

// NewNet creates n namespaced hosts. It fails with ErrNeedRoot when not run
// as root, and with an error naming the failed command when the machine
// refuses namespaces. On error everything created so far is removed.
func NewNet(n int) (*Net, error) {
	if n < 1 || n > 250 {
		return nil, fmt.Errorf("torture: %d nodes: want 1 to 250", n)
	}
	if os.Geteuid() != 0 {
		return nil, ErrNeedRoot
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("torture: network namespaces need the ip command (iproute2): %w", err)
	}
	existing, err := listNetns()
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNeedRoot, err)
	}
	nt := &Net{tag: pickTag(existing), Stale: staleNetns(existing)}
	if nt.subnet, err = pickSubnet(); err != nil {
		return nil, err
	}
	if err := nt.build(n); err != nil {
		return nil, errors.Join(err, nt.Close())
	}
	return nt, nil
}

// pickTag returns vt<pid>, with a letter appended when this process already
// made a Net or a name with that prefix exists.
func pickTag(existing []string) string {
	base := "vt" + strconv.Itoa(os.Getpid())
	for seq := netSeq.Add(1) - 1; ; seq++ {
		tag := base
		if seq > 0 {
			tag += string(rune('a' + (seq-1)%26))
			if seq > 26 {
				tag += strconv.Itoa(int(seq))
			}
		}
		taken := false
		for _, ns := range existing {
			if strings.HasPrefix(ns, tag+"-") {
				taken = true
			}
		}
		if !taken {
			return tag
		}
	}
}

var tagRE = regexp.MustCompile(`^vt(\d+)[a-z0-9]*-`)

// staleNetns returns the namespaces named like ours whose process is gone.
func staleNetns(existing []string) []string {
	var stale []string
	for _, ns := range existing {
		m := tagRE.FindStringSubmatch(ns)
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			stale = append(stale, ns)
		}
	}
	return stale
}

func listNetns() ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %v: %s", err, bytes.TrimSpace(out))
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// pickSubnet returns a 10.a.b.0/24 that overlaps no address or route of
// the root namespace.
func pickSubnet() (netip.Prefix, error) {
	used, err := usedPrefixes()
	if err != nil {
		return netip.Prefix{}, err
	}
	for try := 0; try < 1000; try++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(64 + rand.IntN(190)), byte(1 + rand.IntN(254)), 0}), 24)
		free := true
		for _, u := range used {
			if u.Overlaps(p) {
				free = false
				break
			}
		}
		if free {
			return p, nil
		}
	}
	return netip.Prefix{}, errors.New("torture: no free 10.x.y.0/24 for the test network")
}

// usedPrefixes lists the IPv4 addresses and routes of the root namespace.
func usedPrefixes() ([]netip.Prefix, error) {
	var used []netip.Prefix
	addrs, err := exec.Command("ip", "-4", "-o", "addr", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("torture: ip addr show: %w", err)
	}
	for _, line := range strings.Split(string(addrs), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" {
				if p, err := netip.ParsePrefix(f[i+1]); err == nil {
					used = append(used, p.Masked())
				}
			}
		}
	}
	routes, err := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		return nil, fmt.Errorf("torture: ip route show: %w", err)
	}
	for _, line := range strings.Split(string(routes), "\n") {
		for _, tok := range strings.Fields(line) {
			if tok == "default" {
				break
			}
			if p, err := netip.ParsePrefix(tok); err == nil {
				used = append(used, p.Masked())
				break
			}
			if a, err := netip.ParseAddr(tok); err == nil && a.Is4() {
				used = append(used, netip.PrefixFrom(a, 32))
				break
			}
		}
	}
	return used, nil
}

// ip runs the ip command.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// step runs one creation command and remembers how to undo it.
func (nt *Net) step(undo func() error, what string, args ...string) error {
	if err := ip(args...); err != nil {
		return err
	}
	if undo != nil {
		nt.mu.Lock()
		nt.undo = append(nt.undo, undoStep{what, undo})
		nt.mu.Unlock()
	}
	return nil
}

func (nt *Net) addNetns(name string) error {
	err := nt.step(func() error { return ip("netns", "del", name) }, "namespace "+name, "netns", "add", name)
	if err != nil && len(nt.undo) == 0 {
		// The first namespace: most likely missing privileges.
		return fmt.Errorf("%w (%v)", ErrNeedRoot, err)
	}
	return err
}

func (nt *Net) build(n int) error {
	br := nt.tag + "-br"
	hostLink := nt.tag + "-h"
	base := nt.subnet.Addr().As4()
	addr := func(last byte) string {
		a := base
		a[3] = last
		return netip.AddrFrom4(a).String()
	}
	if err := nt.addNetns(br); err != nil {
		return err
	}
	steps := [][]string{
		{"-n", br, "link", "set", "lo", "up"},
		{"-n", br, "link", "add", "br0", "type", "bridge"},
		{"-n", br, "link", "set", "br0", "up"},
	}
	for _, s := range steps {
		if err := nt.step(nil, "", s...); err != nil {
			return err
		}
	}
	delHost := func() error {
		// Deleting the bridge's namespace usually took the pair with it.
		if exec.Command("ip", "link", "show", hostLink).Run() != nil {
			return nil
		}
		return ip("link", "del", hostLink)
	}
	if err := nt.step(delHost, "link "+hostLink, "link", "add", hostLink, "type", "veth", "peer", "name", "host", "netns", br); err != nil {
		return err
	}
	steps = [][]string{
		{"-n", br, "link", "set", "host", "master", "br0", "up"},
		{"addr", "add", addr(254) + "/24", "dev", hostLink},
		{"link", "set", hostLink, "up"},
	}
	for _, s := range steps {
		if err := nt.step(nil, "", s...); err != nil {
			return err
		}
	}
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("%s-n%d", nt.tag, i+1)
		port := fmt.Sprintf("n%d", i+1)
		if err := nt.addNetns(ns); err != nil {
			return err
		}
		steps := [][]string{
			{"-n", ns, "link", "set", "lo", "up"},
			{"-n", br, "link", "add", port, "type", "veth", "peer", "name", netnsDev, "netns", ns},
			{"-n", br, "link", "set", port, "master", "br0", "up"},
			{"-n", ns, "addr", "add", addr(byte(i+1)) + "/24", "dev", netnsDev},
			{"-n", ns, "link", "set", netnsDev, "up"},
		}
		for _, s := range steps {
			if err := nt.step(nil, "", s...); err != nil {
				return err
			}
		}
		nt.hosts = append(nt.hosts, Host{Name: nodeName(i), IP: addr(byte(i + 1)), Port: netnsPort,
			HTTPPort: netnsHTTPPort, NetNS: ns, Dev: netnsDev})
	}
	return nil
}

// Hosts implements Network.
func (nt *Net) Hosts() []Host { return nt.hosts }

// Command implements Network: ip netns exec execs the program after
// entering the namespace, so the started process is the program.
func (nt *Net) Command(i int, name string, arg ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", nt.hosts[i].NetNS, name}, arg...)...)
}

// Describe implements Network.
func (nt *Net) Describe() string {
	return fmt.Sprintf("network namespaces %s-n1..n%d on %s, bridge in %s-br", nt.tag, len(nt.hosts), nt.subnet, nt.tag)
}

// Tag is the prefix of every name the network created.
func (nt *Net) Tag() string { return nt.tag }

// Close implements Network: it removes the namespaces and links it
// created, newest first, and reports any that remain.
func (nt *Net) Close() error {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	if nt.closed {
		return nil
	}
	nt.closed = true
	var errs []error
	for i := len(nt.undo) - 1; i >= 0; i-- {
		if err := nt.undo[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("torture: remove %s: %w", nt.undo[i].what, err))
		}
	}
	nt.undo = nil
	if names, err := listNetns(); err == nil {
		for _, ns := range names {
			if strings.HasPrefix(ns, nt.tag+"-") {
				errs = append(errs, fmt.Errorf("torture: namespace %s still exists after cleanup", ns))
			}
		}
	}
	return errors.Join(errs...)
}

// inNetns runs a command inside host i's namespace, with stdin.
func (nt *Net) inNetns(i int, stdin string, name string, arg ...string) error {
	cmd := nt.Command(i, name, arg...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s in %s: %v: %s", name, strings.Join(arg, " "), nt.hosts[i].NetNS, err, bytes.TrimSpace(out))
	}
	return nil
}

// filterTable is an iptables-restore input that replaces the filter table
// of a namespace with rules (none: accept everything).
func filterTable(rules []string) string {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for _, r := range rules {
		b.WriteString(r + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// Block drops all traffic between hosts i and j wherever blocked[i][j]
// (missing rows and columns block nothing):
// each host's namespace drops packets from and to the hosts it is cut off
// from. Traffic with the runner is never blocked. It replaces any earlier
// Block.
func (nt *Net) Block(blocked [][]bool) error {
	var errs []error
	for i := range nt.hosts {
		var rules []string
		for j, h := range nt.hosts {
			if i < len(blocked) && j < len(blocked[i]) && blocked[i][j] {
				rules = append(rules, "-A INPUT -s "+h.IP+" -j DROP", "-A OUTPUT -d "+h.IP+" -j DROP")
			}
		}
		errs = append(errs, nt.inNetns(i, filterTable(rules), "iptables-restore"))
	}
	return errors.Join(errs...)
}

// Unblock removes every Block rule.
func (nt *Net) Unblock() error { return nt.Block(nil) }

// ProbePartition checks that iptables works in the namespaces.
func (nt *Net) ProbePartition() error {
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		return fmt.Errorf("iptables-restore not found: %w", err)
	}
	return nt.inNetns(0, filterTable(nil), "iptables-restore")
}

// Netem sets a netem qdisc with the given parameters (tc-netem(8)) on
// host i's interface: every packet the host sends goes through it.
func (nt *Net) Netem(i int, params []string) error {
	return nt.inNetns(i, "", "tc", append([]string{"qdisc", "replace", "dev", nt.hosts[i].Dev, "root", "netem"}, params...)...)
}

// ClearNetem removes host i's netem qdisc.
func (nt *Net) ClearNetem(i int) error {
	return nt.inNetns(i, "", "tc", "qdisc", "del", "dev", nt.hosts[i].Dev, "root")
}

// ProbeNetem checks that the kernel has netem, by adding it to the
// loopback interface of the first host's namespace and removing it.
func (nt *Net) ProbeNetem() error {
	if _, err := exec.LookPath("tc"); err != nil {
		return fmt.Errorf("tc not found: %w", err)
	}
	if err := nt.inNetns(0, "", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"); err != nil {
		return err
	}
	return nt.inNetns(0, "", "tc", "qdisc", "del", "dev", "lo", "root")
}
