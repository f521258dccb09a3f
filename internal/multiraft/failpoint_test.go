//go:build failpoints

package multiraft

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/vowdb/vowdb/internal/failpoint"
	"github.com/vowdb/vowdb/internal/keys"
)

// TestCrashAtEveryFailpoint crashes the node's disk (losing every unsynced
// byte) exactly at each failpoint of the scheduler round, and checks that
// every write acknowledged before that instant survives the restart.
func TestCrashAtEveryFailpoint(t *testing.T) {
	for _, name := range failpoint.Names {
		t.Run(name, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			s, eng, _ := open(t, fs, true)
			var mu sync.Mutex
			acked := map[string]string{}
			var crashed *vfs.MemFS
			var snapshot map[string]string
			hits := 0
			failpoint.Enable(name, func() {
				hits++
				if hits != 150 || crashed != nil {
					return
				}
				mu.Lock()
				snapshot = map[string]string{}
				for k, v := range acked {
					snapshot[k] = v
				}
				mu.Unlock()
				crashed = fs.CrashClone(vfs.CrashCloneCfg{})
			})
			for i := 0; i < 300; i++ {
				k, v := fmt.Sprintf("%c%02d", "am"[i%2], i%23), fmt.Sprint(i)
				propose(t, s, uint64(2+i%2), k, v)
				mu.Lock()
				acked[k] = v
				mu.Unlock()
			}
			failpoint.Disable(name)
			s.Stop()
			_ = eng.Close()
			if crashed == nil {
				t.Fatalf("failpoint %s hit only %d times", name, hits)
			}
			s2, eng2, _ := open(t, crashed, false)
			defer eng2.Close()
			defer s2.Stop()
			propose(t, s2, 2, "a-probe", "x") // waits until the group is back
			propose(t, s2, 3, "z-probe", "x")
			deadline := time.Now().Add(10 * time.Second)
			for k, v := range snapshot {
				for {
					got, err := eng2.Get(keys.UserKey([]byte(k)))
					if err == nil && acceptable(string(got), v) {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("crash at %s: key %s = %q (%v), acknowledged %q before the crash", name, k, got, err, v)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}
}

// acceptable: the value may be the acknowledged one or a later write of the
// same key (proposed after the snapshot but durable before the crash).
func acceptable(got, acked string) bool {
	var g, a int
	fmt.Sscan(got, &g)
	fmt.Sscan(acked, &a)
	return g >= a
}
