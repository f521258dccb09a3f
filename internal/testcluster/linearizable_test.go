package testcluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/vowdb/vowdb"
)

// regInput is one operation on a register (a key).
type regInput struct {
	key      string
	op       string // get, put, cas
	old, val string
}

// regOutput is what the client saw. unknown marks an ambiguous write: it may
// or may not have taken effect, at any time after it was invoked.
type regOutput struct {
	found, swapped, unknown bool
	val                     string
}

type regState struct {
	present bool
	val     string
}

// registerModel is a register per key, with get, put and compare-and-swap;
// ambiguous writes may or may not have happened.
var registerModel = porcupine.NondeterministicModel{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(regInput).key
			by[k] = append(by[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range by {
			out = append(out, ops)
		}
		return out
	},
	Init: func() []interface{} { return []interface{}{regState{}} },
	Step: func(s, in, out interface{}) []interface{} {
		st, i, o := s.(regState), in.(regInput), out.(regOutput)
		switch i.op {
		case "get":
			if o.found == st.present && (!st.present || o.val == st.val) {
				return []interface{}{st}
			}
			return nil
		case "put":
			next := regState{present: true, val: i.val}
			if o.unknown {
				return []interface{}{st, next}
			}
			return []interface{}{next}
		case "cas":
			match := st.present && st.val == i.old
			next := st
			if match {
				next = regState{present: true, val: i.val}
			}
			if o.unknown {
				return []interface{}{st, next}
			}
			if o.swapped != match {
				return nil
			}
			return []interface{}{next}
		}
		return nil
	},
	DescribeOperation: func(in, out interface{}) string {
		i, o := in.(regInput), out.(regOutput)
		return fmt.Sprintf("%s %s %q %q -> %+v", i.op, i.key, i.old, i.val, o)
	},
}

// TestLinearizableUnderLeaderKills: clients run gets, puts and CAS on a few
// keys in two ranges while the leader of a range is killed and restarted,
// twice; porcupine must find the history linearizable, with ambiguous
// writes modelled as may-or-may-not-have-happened.
func TestLinearizableUnderLeaderKills(t *testing.T) {
	c, db := startCluster(t, 3)
	ctx := context.Background()
	if _, _, err := db.Split(ctx, []byte("k2")); err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var mu sync.Mutex
	var history []porcupine.Operation
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for cl := 0; cl < 6; cl++ {
		wg.Add(1)
		go func(cl int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(cl)))
			for n := 0; wctx.Err() == nil; n++ {
				in := regInput{key: fmt.Sprintf("k%d", rng.IntN(4)), val: fmt.Sprintf("c%d-%d", cl, n)}
				switch r := rng.IntN(10); {
				case r < 4:
					in.op = "get"
				case r < 8:
					in.op = "put"
				default:
					in.op = "cas"
					in.old = fmt.Sprintf("c%d-%d", rng.IntN(6), n-rng.IntN(3))
				}
				octx, cancel := context.WithTimeout(ctx, 10*time.Second)
				call := time.Now().UnixNano()
				var out regOutput
				var err error
				switch in.op {
				case "get":
					var v []byte
					v, err = db.Get(octx, []byte(in.key))
					if errors.Is(err, vowdb.ErrNotFound) {
						err = nil
					} else if err == nil {
						out.found, out.val = true, string(v)
					}
				case "put":
					err = db.Put(octx, []byte(in.key), []byte(in.val))
				case "cas":
					out.swapped, err = db.CompareAndSwap(octx, []byte(in.key), []byte(in.old), []byte(in.val))
				}
				ret := time.Now().UnixNano()
				cancel()
				switch {
				case err == nil:
				case errors.Is(err, vowdb.ErrAmbiguousCommit) && in.op != "get":
					out.unknown, ret = true, math.MaxInt64
				default:
					continue // definitely not applied (or a failed read): not part of the history
				}
				mu.Lock()
				history = append(history, porcupine.Operation{ClientId: cl, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		}(cl)
	}
	for round := 0; round < 2; round++ {
		time.Sleep(700 * time.Millisecond)
		victim := leaderIndex(t, c, db, "k1")
		c.Kill(victim)
		time.Sleep(1200 * time.Millisecond)
		if err := c.Restart(victim); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(700 * time.Millisecond)
	stop()
	wg.Wait()
	res, _ := porcupine.CheckOperationsVerbose(registerModel.ToModel(), history, 60*time.Second)
	t.Logf("%d operations checked: %s", len(history), res)
	if res != porcupine.Ok {
		t.Fatalf("history of %d operations is %s (seed %d)", len(history), res, seed)
	}
}

// TestRegisterModelCatchesStaleRead: the checker itself must reject a read
// that returns an overwritten value after the overwrite completed, and must
// accept an ambiguous write seen by a later read.
func TestRegisterModelCatchesStaleRead(t *testing.T) {
	op := func(in regInput, out regOutput, call, ret int64) porcupine.Operation {
		return porcupine.Operation{Input: in, Output: out, Call: call, Return: ret}
	}
	stale := []porcupine.Operation{
		op(regInput{key: "k", op: "put", val: "1"}, regOutput{}, 0, 10),
		op(regInput{key: "k", op: "put", val: "2"}, regOutput{}, 20, 30),
		op(regInput{key: "k", op: "get"}, regOutput{found: true, val: "1"}, 40, 50),
	}
	if porcupine.CheckOperations(registerModel.ToModel(), stale) {
		t.Fatal("stale read accepted")
	}
	ambiguous := []porcupine.Operation{
		op(regInput{key: "k", op: "put", val: "1"}, regOutput{unknown: true}, 0, math.MaxInt64),
		op(regInput{key: "k", op: "get"}, regOutput{found: true, val: "1"}, 40, 50),
		op(regInput{key: "k", op: "cas", old: "1", val: "2"}, regOutput{swapped: true}, 60, 70),
	}
	if !porcupine.CheckOperations(registerModel.ToModel(), ambiguous) {
		t.Fatal("ambiguous write observed later rejected")
	}
}
