package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/vowdb/vowdb"
)

func TestTableBytes(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"plain", []byte("user/1"), "user/1"},
		{"spaces", []byte("hello world"), "hello world"},
		{"unicode", []byte("héllo→"), "héllo→"},
		{"empty", []byte{}, `""`},
		{"nil", nil, `""`},
		{"nul", []byte("a\x00b"), `"a\x00b"`},
		{"tab", []byte("a\tb"), `"a\tb"`},
		{"newline", []byte("a\n"), `"a\n"`},
		{"invalid utf8", []byte{0xff, 0xfe}, `"\xff\xfe"`},
		{"leading quote", []byte(`"x"`), `"\"x\""`},
		{"leading angle", []byte("<max>"), `"<max>"`},
		{"inner quote", []byte(`a"b`), `a"b`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tableBytes(tc.in); got != tc.want {
				t.Errorf("tableBytes(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestTableBound(t *testing.T) {
	if got := tableBound(nil, "<min>"); got != "<min>" {
		t.Errorf("empty start = %s", got)
	}
	if got := tableBound([]byte("<min>"), "<min>"); got != `"<min>"` {
		t.Errorf("a key spelled <min> must not look like the open end, got %s", got)
	}
	if got := tableBound([]byte("m"), "<max>"); got != "m" {
		t.Errorf("m = %s", got)
	}
}

func TestWriteKVs(t *testing.T) {
	kvs := []vowdb.KeyValue{
		{Key: []byte("a"), Value: []byte("1")},
		{Key: []byte("bin\x01"), Value: []byte{0xff, 0xfe}},
		{Key: []byte("empty"), Value: []byte{}},
		{Key: []byte("<x>"), Value: []byte("v w")},
	}
	tests := []struct {
		name   string
		format string
		kvs    []vowdb.KeyValue
		single bool
		want   string
	}{
		{"table", formatTable, kvs, false, `KEY        VALUE
a          1
"bin\x01"  "\xff\xfe"
empty      ""
"<x>"      v w
`},
		{"table empty", formatTable, nil, false, "KEY  VALUE\n"},
		{"json scan", formatJSON, kvs, false, `[
  {
    "key": "a",
    "value": "1"
  },
  {
    "key": "bin\u0001",
    "value_base64": "//4="
  },
  {
    "key": "empty",
    "value": ""
  },
  {
    "key": "<x>",
    "value": "v w"
  }
]
`},
		{"json empty scan", formatJSON, nil, false, "[]\n"},
		{"json get", formatJSON, kvs[1:2], true, `{
  "key": "bin\u0001",
  "value_base64": "//4="
}
`},
		{"json binary key", formatJSON, []vowdb.KeyValue{{Key: []byte{0x80}, Value: []byte("v")}}, true, `{
  "key_base64": "gA==",
  "value": "v"
}
`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeKVs(&buf, tc.format, tc.kvs, tc.single); err != nil {
				t.Fatal(err)
			}
			if got := buf.String(); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestWriteRanges(t *testing.T) {
	ranges := []vowdb.RangeInfo{
		{ID: 1, Meta: true, Generation: 5, Voters: []uint64{1, 2, 3}, Leader: 1, Term: 6, Applied: 22},
		{ID: 2, EndKey: []byte("m"), Generation: 6, Voters: []uint64{1, 2, 3}, Learners: []uint64{4}, Leader: 2, Term: 7, Applied: 31},
		{ID: 3, StartKey: []byte("m"), Generation: 6, Voters: []uint64{1}},
	}
	var buf bytes.Buffer
	if err := writeRanges(&buf, formatTable, ranges); err != nil {
		t.Fatal(err)
	}
	want := `RANGE  START   END     GEN  VOTERS  LEARNERS  LEADER  TERM  APPLIED
1      <meta>  <meta>  5    1,2,3   -         1       6     22
2      <min>   m       6    1,2,3   4         2       7     31
3      m       <max>   6    1       -         -       0     0
`
	if got := buf.String(); got != want {
		t.Errorf("table got:\n%s\nwant:\n%s", got, want)
	}

	buf.Reset()
	if err := writeRanges(&buf, formatJSON, ranges[2:]); err != nil {
		t.Fatal(err)
	}
	want = `[
  {
    "id": 3,
    "meta": false,
    "start_key": "m",
    "end_key": "",
    "generation": 6,
    "voters": [
      1
    ],
    "learners": [],
    "leader": 0,
    "term": 0,
    "applied_index": 0
  }
]
`
	if got := buf.String(); got != want {
		t.Errorf("json got:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteNodes(t *testing.T) {
	now := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	nodes := []vowdb.NodeInfo{
		{ID: 1, Address: "127.0.0.1:7401", HTTP: "127.0.0.1:7402", Live: true, LastSeen: now.Add(-45 * time.Millisecond), Replicas: 3, Leaders: 2},
		{ID: 2, Address: "127.0.0.1:7411", Live: false, Replicas: 3},
	}
	var buf bytes.Buffer
	if err := writeNodes(&buf, formatTable, now, nodes); err != nil {
		t.Fatal(err)
	}
	want := `ID  ADDRESS         HTTP            LIVE  LAST SEEN  REPLICAS  LEADERS
1   127.0.0.1:7401  127.0.0.1:7402  yes   45ms ago   3         2
2   127.0.0.1:7411  -               no    -          3         0
`
	if got := buf.String(); got != want {
		t.Errorf("table got:\n%s\nwant:\n%s", got, want)
	}
	buf.Reset()
	if err := writeNodes(&buf, formatJSON, now, nodes); err != nil {
		t.Fatal(err)
	}
	for _, frag := range []string{`"last_seen": "2026-11-23T07:59:59.955Z"`, `"http_address": ""`, `"live": false`} {
		if !strings.Contains(buf.String(), frag) {
			t.Errorf("json lacks %s:\n%s", frag, buf.String())
		}
	}
	if strings.Count(buf.String(), "last_seen") != 1 {
		t.Errorf("an unknown last_seen must be left out:\n%s", buf.String())
	}
}

func TestAge(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		ago  time.Duration
		want string
	}{
		{1234567 * time.Nanosecond, "1ms ago"},
		{2345 * time.Millisecond, "2.3s ago"},
		{90*time.Second + 400*time.Millisecond, "1m30s ago"},
		{-time.Second, "0s ago"}, // clock skew between nodes
	}
	for _, tc := range tests {
		if got := age(now, now.Add(-tc.ago)); got != tc.want {
			t.Errorf("age(%v) = %q, want %q", tc.ago, got, tc.want)
		}
	}
	if got := age(now, time.Time{}); got != "-" {
		t.Errorf("age(zero) = %q", got)
	}
}

func TestFormatFlag(t *testing.T) {
	var f formatFlag
	for _, ok := range []string{"table", "json"} {
		if err := f.Set(ok); err != nil || string(f) != ok {
			t.Errorf("Set(%q) = %v, f = %q", ok, err, f)
		}
	}
	for _, bad := range []string{"", "yaml", "JSON"} {
		if err := f.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}
