package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vowdb/vowdb"
)

// How bytes are printed (also in docs/cli.md and outputHelp):
//
// Table mode shows a key or value as its text when that text is non-empty,
// valid UTF-8 made of printable characters (spaces included, tabs and
// newlines not), and does not start with `"` or `<`. Anything else is shown
// as a Go-quoted string (strconv.Quote), so `""` is the empty value and
// "a\x00b" is binary. `<min>` and `<max>` stand for the open ends of a range.
// The rules make every printed form map back to exactly one byte string.
//
// JSON mode writes a byte string that is valid UTF-8 as a JSON string under
// its field name ("key"), which is lossless. Other bytes go under the field
// name with a "_base64" suffix ("key_base64") in standard base64. Exactly one
// of the two fields is present, so `jq '.key // (.key_base64 | @base64d)'`
// reads both.

// Output formats of -w/--write-out.
const (
	formatTable = "table"
	formatJSON  = "json"
)

const outputHelp = `Output (-w/--write-out):
  table  aligned columns (the default). Keys and values print as text when
         they are printable and do not start with '"' or '<'; otherwise as a
         Go-quoted string ("" is empty, "\x00\x01" is binary). <min> and <max>
         are the open ends of a range.
  json   one JSON document. A key or value that is valid UTF-8 is a string
         field ("key", "value"); other bytes are base64 under "key_base64",
         "value_base64". Exactly one of the pair is present.
`

// formatFlag is the pflag.Value of -w; it refuses unknown formats at parse
// time so they are usage errors.
type formatFlag string

func (f *formatFlag) String() string { return string(*f) }
func (f *formatFlag) Type() string   { return "format" }
func (f *formatFlag) Set(s string) error {
	switch s {
	case formatTable, formatJSON:
		*f = formatFlag(s)
		return nil
	}
	return fmt.Errorf("unknown output format %q (want table or json)", s)
}

// printable reports whether b prints unambiguously as itself in a table.
func printable(b []byte) bool {
	if len(b) == 0 || b[0] == '"' || b[0] == '<' || !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// tableBytes renders a key or value for a table cell.
func tableBytes(b []byte) string {
	if printable(b) {
		return string(b)
	}
	return strconv.Quote(string(b))
}

// tableBound renders a range boundary; empty means the open end (<min> for
// a start key, <max> for an end key).
func tableBound(b []byte, open string) string {
	if len(b) == 0 {
		return open
	}
	return tableBytes(b)
}

// jsonBytes encodes b for JSON: as text when it is valid UTF-8, otherwise
// as base64. Exactly one result is non-nil; each goes in a field with
// omitempty, the second named with a "_base64" suffix.
func jsonBytes(b []byte) (text, b64 *string) {
	if utf8.Valid(b) {
		s := string(b)
		return &s, nil
	}
	s := base64.StdEncoding.EncodeToString(b)
	return nil, &s
}

// writeJSON writes v as indented JSON followed by a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // keys like "<a>" stay readable
	return enc.Encode(v)
}

// writeTable writes a header and rows as aligned columns.
func writeTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// kvJSON is the JSON form of a key-value pair.
type kvJSON struct {
	Key         *string `json:"key,omitempty"`
	KeyBase64   *string `json:"key_base64,omitempty"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 *string `json:"value_base64,omitempty"`
}

func newKVJSON(kv vowdb.KeyValue) kvJSON {
	var j kvJSON
	j.Key, j.KeyBase64 = jsonBytes(kv.Key)
	j.Value, j.ValueBase64 = jsonBytes(kv.Value)
	return j
}

// writeKVs prints key-value pairs (kv get, kv scan). In JSON a scan is an
// array (possibly empty) and a get is one object.
func writeKVs(w io.Writer, format string, kvs []vowdb.KeyValue, single bool) error {
	if format == formatJSON {
		if single && len(kvs) == 1 {
			return writeJSON(w, newKVJSON(kvs[0]))
		}
		out := make([]kvJSON, 0, len(kvs))
		for _, kv := range kvs {
			out = append(out, newKVJSON(kv))
		}
		return writeJSON(w, out)
	}
	rows := make([][]string, 0, len(kvs))
	for _, kv := range kvs {
		rows = append(rows, []string{tableBytes(kv.Key), tableBytes(kv.Value)})
	}
	return writeTable(w, []string{"KEY", "VALUE"}, rows)
}

// nodeJSON is the JSON form of one node in node ls.
type nodeJSON struct {
	ID       uint64 `json:"id"`
	Address  string `json:"address"`
	HTTP     string `json:"http_address"`
	Live     bool   `json:"live"`
	LastSeen string `json:"last_seen,omitempty"` // RFC 3339, UTC
	Replicas int    `json:"replicas"`
	Leaders  int    `json:"leaders"`
}

// age renders how long ago t was, for tables; "-" when t is unknown.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Second:
		d = d.Round(time.Millisecond)
	case d < time.Minute:
		d = d.Round(100 * time.Millisecond)
	default:
		d = d.Round(time.Second)
	}
	return d.String() + " ago"
}

func writeNodes(w io.Writer, format string, now time.Time, nodes []vowdb.NodeInfo) error {
	if format == formatJSON {
		out := make([]nodeJSON, 0, len(nodes))
		for _, n := range nodes {
			nj := nodeJSON{ID: n.ID, Address: n.Address, HTTP: n.HTTP, Live: n.Live, Replicas: n.Replicas, Leaders: n.Leaders}
			if !n.LastSeen.IsZero() {
				nj.LastSeen = n.LastSeen.UTC().Format(time.RFC3339Nano)
			}
			out = append(out, nj)
		}
		return writeJSON(w, out)
	}
	rows := make([][]string, 0, len(nodes))
	for _, n := range nodes {
		http := n.HTTP
		if http == "" {
			http = "-"
		}
		live := "no"
		if n.Live {
			live = "yes"
		}
		rows = append(rows, []string{strconv.FormatUint(n.ID, 10), n.Address, http, live,
			age(now, n.LastSeen), strconv.Itoa(n.Replicas), strconv.Itoa(n.Leaders)})
	}
	return writeTable(w, []string{"ID", "ADDRESS", "HTTP", "LIVE", "LAST SEEN", "REPLICAS", "LEADERS"}, rows)
}

// rangeJSON is the JSON form of a range. An empty start_key is the start of
// the keyspace and an empty end_key its end; leader 0 means unknown.
type rangeJSON struct {
	ID             uint64   `json:"id"`
	Meta           bool     `json:"meta"`
	StartKey       *string  `json:"start_key,omitempty"`
	StartKeyBase64 *string  `json:"start_key_base64,omitempty"`
	EndKey         *string  `json:"end_key,omitempty"`
	EndKeyBase64   *string  `json:"end_key_base64,omitempty"`
	Generation     uint64   `json:"generation"`
	Voters         []uint64 `json:"voters"`
	Learners       []uint64 `json:"learners"`
	Leader         uint64   `json:"leader"`
	Term           uint64   `json:"term"`
	AppliedIndex   uint64   `json:"applied_index"`
}

func newRangeJSON(r vowdb.RangeInfo) rangeJSON {
	j := rangeJSON{ID: r.ID, Meta: r.Meta, Generation: r.Generation, Voters: nonNil(r.Voters), Learners: nonNil(r.Learners),
		Leader: r.Leader, Term: r.Term, AppliedIndex: r.Applied}
	j.StartKey, j.StartKeyBase64 = jsonBytes(r.StartKey)
	j.EndKey, j.EndKeyBase64 = jsonBytes(r.EndKey)
	return j
}

func nonNil(ids []uint64) []uint64 {
	if ids == nil {
		return []uint64{}
	}
	return ids
}

func idList(ids []uint64) string {
	if len(ids) == 0 {
		return "-"
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(s, ",")
}

// writeRanges prints ranges (range ls, range split). The meta range, which
// indexes the others and holds no user keys, shows "meta" as its bounds.
func writeRanges(w io.Writer, format string, ranges []vowdb.RangeInfo) error {
	if format == formatJSON {
		out := make([]rangeJSON, 0, len(ranges))
		for _, r := range ranges {
			out = append(out, newRangeJSON(r))
		}
		return writeJSON(w, out)
	}
	rows := make([][]string, 0, len(ranges))
	for _, r := range ranges {
		start, end := tableBound(r.StartKey, "<min>"), tableBound(r.EndKey, "<max>")
		if r.Meta {
			start, end = "<meta>", "<meta>"
		}
		leader := "-"
		if r.Leader != 0 {
			leader = strconv.FormatUint(r.Leader, 10)
		}
		rows = append(rows, []string{strconv.FormatUint(r.ID, 10), start, end,
			strconv.FormatUint(r.Generation, 10), idList(r.Voters), idList(r.Learners), leader,
			strconv.FormatUint(r.Term, 10), strconv.FormatUint(r.Applied, 10)})
	}
	return writeTable(w, []string{"RANGE", "START", "END", "GEN", "VOTERS", "LEARNERS", "LEADER", "TERM", "APPLIED"}, rows)
}
