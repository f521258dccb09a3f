package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// benchCPU is a CPU-time reading taken before or after a run.
type benchCPU struct {
	self                      time.Duration   // this process, user+system
	machineBusy, machineTotal uint64          // /proc/stat jiffies
	pids                      []time.Duration // each PID, user+system
	rss                       []int64         // each PID's VmRSS in KiB
}

// benchClockTick is the unit of /proc/PID/stat times (USER_HZ), 100 on
// every Linux architecture Go supports.
const benchClockTick = 10 * time.Millisecond

func benchReadCPU(pids []int) (benchCPU, error) {
	var c benchCPU
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		c.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	c.machineBusy, c.machineTotal = benchMachineCPU()
	for _, pid := range pids {
		t, err := benchPIDCPU(pid)
		if err != nil {
			return c, fmt.Errorf("bench: --pids: %w", err)
		}
		c.pids = append(c.pids, t)
		c.rss = append(c.rss, benchPIDRSS(pid))
	}
	return c, nil
}

// benchMachineCPU returns busy and total jiffies of all CPUs from /proc/stat
// (busy excludes idle and iowait).
func benchMachineCPU() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "cpu" {
		return 0, 0
	}
	for i, x := range f[1:] {
		if i >= 8 { // guest time is already counted in user
			break
		}
		v, _ := strconv.ParseUint(x, 10, 64)
		total += v
		if i != 3 && i != 4 {
			busy += v
		}
	}
	return busy, total
}

// benchPIDCPU returns utime+stime of pid (all its threads).
func benchPIDCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is parenthesized and may hold spaces;
	// fields after it start with field 3 (state).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return time.Duration(utime+stime) * benchClockTick, nil
}

// benchPIDRSS returns pid's VmRSS in KiB (0 if unknown).
func benchPIDRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}
