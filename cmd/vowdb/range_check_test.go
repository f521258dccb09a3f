package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vowdb/vowdb"
	"github.com/vowdb/vowdb/internal/keys"
	"github.com/vowdb/vowdb/internal/testcluster"
)

func sum(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// TestRangeCheckOutput: rows per replica, statuses, and the error and exit
// code for disagreeing, unreachable and unknown ranges.
func TestRangeCheckOutput(t *testing.T) {
	agree := vowdb.ConsistencyCheck{Range: 2, Index: 40, Replicas: []vowdb.ReplicaChecksum{
		{Node: 1, Applied: 40, Checksum: sum(0xaa)}, {Node: 2, Applied: 41, Checksum: sum(0xaa)}}}
	differ := vowdb.ConsistencyCheck{Range: 3, Index: 57, Replicas: []vowdb.ReplicaChecksum{
		{Node: 1, Applied: 57, Checksum: sum(0xbb)}, {Node: 2, Applied: 57, Checksum: sum(0xcc)},
		{Node: 3, Applied: 58, Checksum: sum(0xbb), Learner: true}}}
	lagging := vowdb.ConsistencyCheck{Range: 4, Index: 9, Replicas: []vowdb.ReplicaChecksum{
		{Node: 1, Applied: 9, Checksum: sum(0xdd)}, {Node: 2, Err: "replica lags"}}}
	results := []rangeCheck{{id: 2, check: agree}, {id: 3, check: differ}, {id: 4, check: lagging},
		{id: 5, err: fmt.Errorf("%w: no leader", vowdb.ErrUnavailable)}}

	var b bytes.Buffer
	if err := writeRangeChecks(&b, formatTable, results); err != nil {
		t.Fatal(err)
	}
	want := `RANGE  INDEX  NODE         APPLIED  CHECKSUM          STATUS
2      40     1            40       aaaaaaaaaaaaaaaa  ok
2      40     2            41       aaaaaaaaaaaaaaaa  ok
3      57     1            57       bbbbbbbbbbbbbbbb  majority
3      57     2            57       cccccccccccccccc  DIFFERS
3      57     3 (learner)  58       bbbbbbbbbbbbbbbb  majority
4      9      1            9        dddddddddddddddd  ok
4      9      2            0        -                 error: replica lags
5      -      -            -        -                 error: vowdb: cluster unavailable (vowdb: retryable): no leader
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	if err := writeRangeChecks(&b, formatJSON, results); err != nil {
		t.Fatal(err)
	}
	var js []rangeCheckJSON
	if err := json.Unmarshal(b.Bytes(), &js); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if len(js) != 4 || !js[0].Consistent || js[1].Consistent || js[2].Consistent || js[3].Error == "" ||
		*js[1].Replicas[1].Checksum != strings.Repeat("cc", 32) || js[2].Replicas[1].Checksum != nil ||
		js[2].Replicas[1].Error != "replica lags" || js[3].Replicas == nil {
		t.Errorf("json:\n%s", b.String())
	}

	err := rangeChecksError(results)
	if code := exitCode(err); code != exitError || err.Error() !=
		"range 3: replicas disagree at index 57: node 2 has cccccccccccccccc, nodes 1, 3 have bbbbbbbbbbbbbbbb" {
		t.Errorf("disagreement: exit %d, %v", code, err)
	}
	err = rangeChecksError(results[2:])
	if code := exitCode(err); code != exitUnavailable || !strings.Contains(err.Error(), "range 4: node 2 gave no checksum: replica lags") ||
		!strings.Contains(err.Error(), "range 5: ") {
		t.Errorf("unchecked replicas: exit %d, %v", code, err)
	}
	err = rangeChecksError([]rangeCheck{{id: 9, err: fmt.Errorf("%w: there is no range 9", vowdb.ErrInvalidArgument)}})
	if code := exitCode(err); code != exitInvalid {
		t.Errorf("unknown range: exit %d, %v", code, err)
	}
	if err := rangeChecksError(results[:1]); err != nil {
		t.Errorf("agreeing replicas: %v", err)
	}
}

// TestRangeCheckCLI runs vowdb range check against a cluster: every range
// agrees; a key written straight into one node's store makes it exit 1
// naming the range and the node.
func TestRangeCheckCLI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := testcluster.Start(ctx, testcluster.Options{Nodes: 3, Dir: t.TempDir(), Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	db, err := cl.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, k := range []string{"a", "m", "z"} {
		if err := db.Put(ctx, []byte(k), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	right := func() uint64 {
		_, r, err := db.Split(ctx, []byte("m"))
		if err != nil {
			t.Fatal(err)
		}
		return r.ID
	}()
	env := map[string]string{"VOWDB_ENDPOINTS": strings.Join(cl.Endpoints(), ","), "VOWDB_TIMEOUT": "20s"}

	code, stdout, stderr := runCLI(t, env, "range", "check")
	if code != 0 || strings.Count(stdout, "  ok\n") != 9 || stderr != "" { // 3 ranges x 3 replicas
		t.Fatalf("range check: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, env, "range", "check", fmt.Sprint(right), "-w", "json")
	var js []rangeCheckJSON
	if err := json.Unmarshal([]byte(stdout), &js); code != 0 || err != nil || len(js) != 1 || !js[0].Consistent ||
		js[0].Range != right || len(js[0].Replicas) != 3 {
		t.Fatalf("range check %d -w json: exit %d, %v\n%s", right, code, err, stdout)
	}
	if code, _, stderr := runCLI(t, env, "range", "check", "999"); code != exitInvalid || !strings.Contains(stderr, "no range 999") {
		t.Fatalf("range check 999: exit %d %s", code, stderr)
	}
	if code, _, _ := runCLI(t, env, "range", "check", "x"); code != exitUsage {
		t.Fatalf("range check x: exit %d", code)
	}

	n := cl.Nodes[1]
	b := n.Engine().NewBatch()
	_ = b.Set(keys.UserKey([]byte("q")), []byte("behind raft's back"), nil)
	if err := n.Engine().Commit(b, true); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, env, "range", "check")
	wantErr := fmt.Sprintf("Error: range %d: replicas disagree at index ", right)
	if code != exitError || !strings.Contains(stderr, wantErr) || !strings.Contains(stderr, fmt.Sprintf("node %d has ", n.NodeID())) ||
		strings.Count(stdout, "DIFFERS") != 1 {
		t.Fatalf("range check after corrupting node %d: exit %d (want 1, %q)\n%s%s", n.NodeID(), code, wantErr, stdout, stderr)
	}
}
