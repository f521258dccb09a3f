package torture

import "syscall"

// nodeProcAttr puts a node in its own process group, so a Ctrl-C at the
// terminal reaches only the runner (which then stops the nodes itself), and
// has the kernel SIGKILL it if the runner dies without cleaning up.
func nodeProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
