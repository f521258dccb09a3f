//go:build !linux

package torture

import "syscall"

// nodeProcAttr puts a node in its own process group, so a Ctrl-C at the
// terminal reaches only the runner (which then stops the nodes itself).
func nodeProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
