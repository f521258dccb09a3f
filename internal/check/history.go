package check

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// OpType is what the client learned about an operation's outcome.
type OpType string

const (
	// OK: the operation took effect and its results are valid.
	OK OpType = "ok"
	// Fail: the operation did not take effect.
	Fail OpType = "fail"
	// Info: the outcome is unknown; the operation may take effect at any
	// time after it was invoked, or never.
	Info OpType = "info"
)

// Functions of single-operation workloads (Op.F) and micro-operations of
// list-append transactions (Mop.F).
const (
	FGet      = "get"      // register: read Key
	FPut      = "put"      // register: write Value to Key
	FCAS      = "cas"      // register: if Key holds Expected, write Value
	FTransfer = "transfer" // bank: move Amount from From to To
	FRead     = "read"     // bank: read all Balances; set: read all Elements
	FAdd      = "add"      // set: add Element
	FAppend   = "append"   // list-append: append Value to the list at Key
	FR        = "r"        // list-append: read the list at Key into List
)

// Op is one client operation of a history.
//
// Which payload fields mean something depends on the workload (see the
// package documentation). Unused fields stay zero and are left out of JSON.
type Op struct {
	// Process identifies the client that ran the op. One process runs one
	// op at a time.
	Process int `json:"process"`
	// Type is ok, fail or info.
	Type OpType `json:"type"`
	// Invoke and Complete are when the client sent the op and when it got
	// its answer, in nanoseconds on a clock shared by all processes. For an
	// info op Complete is when the client gave up (0 if never recorded):
	// checkers treat it as +infinity (see RealtimeEnd).
	Invoke   int64 `json:"invoke"`
	Complete int64 `json:"complete,omitempty"`
	// ID is a client-chosen unique id, for ops that leave a trace under an
	// id in the database: a bank transfer's TransferID in the ledger.
	ID string `json:"id,omitempty"`

	// F is the function of a register, bank or set op.
	F string `json:"f,omitempty"`

	// Register: Key is the register. get: Found reports whether Key
	// existed and Value is what it held. put: Value is written. cas: if Key
	// holds Expected, Value is written; an ok cas's Found reports whether
	// Key held Expected, i.e. whether the swap took effect (an ok cas with
	// Found false observed a different value and wrote nothing).
	Key      string `json:"key,omitempty"`
	Value    int    `json:"value,omitempty"`
	Expected int    `json:"expected,omitempty"`
	Found    bool   `json:"found,omitempty"`

	// Bank: a transfer moves Amount from From to To; a read returns the
	// Balances of all accounts.
	From     string         `json:"from,omitempty"`
	To       string         `json:"to,omitempty"`
	Amount   int            `json:"amount,omitempty"`
	Balances map[string]int `json:"balances,omitempty"`

	// Set: an add adds Element; a read returns the Elements present (nil
	// and empty mean the same).
	Element  int   `json:"element,omitempty"`
	Elements []int `json:"elements,omitempty"`

	// Txn is a list-append transaction's micro-operations, in order.
	Txn []Mop `json:"txn,omitempty"`
}

// Mop is one micro-operation of a list-append transaction: append Value to
// the list at Key, or read (r) the list at Key into List. A read's List is
// valid only in an ok transaction; nil and empty mean the same.
type Mop struct {
	F     string `json:"f"`
	Key   string `json:"key"`
	Value int    `json:"value,omitempty"`
	List  []int  `json:"list,omitempty"`
}

// Append returns the micro-op that appends v to the list at key.
func Append(key string, v int) Mop { return Mop{F: FAppend, Key: key, Value: v} }

// Read returns the micro-op that read list from key.
func Read(key string, list ...int) Mop { return Mop{F: FR, Key: key, List: list} }

// RealtimeEnd is the latest time at which the op may have taken effect:
// Complete for ok and fail ops, +infinity (math.MaxInt64) for info ops.
func (o Op) RealtimeEnd() int64 {
	if o.Type == Info {
		return math.MaxInt64
	}
	return o.Complete
}

// String describes the op in one line, e.g. "p3 ok [append(x, 5) r(y)=[1 2]]".
func (o Op) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "p%d %s ", o.Process, o.Type)
	switch {
	case o.Txn != nil:
		b.WriteByte('[')
		for i, m := range o.Txn {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(m.describe(o.Type == OK))
		}
		b.WriteByte(']')
	case o.F == FGet:
		fmt.Fprintf(&b, "get(%s)", o.Key)
		if o.Type == OK {
			if o.Found {
				fmt.Fprintf(&b, "=%d", o.Value)
			} else {
				b.WriteString("=nil")
			}
		}
	case o.F == FPut:
		fmt.Fprintf(&b, "put(%s, %d)", o.Key, o.Value)
	case o.F == FCAS:
		fmt.Fprintf(&b, "cas(%s, %d->%d)", o.Key, o.Expected, o.Value)
		if o.Type == OK && !o.Found {
			b.WriteString(" not swapped")
		}
	case o.F == FTransfer:
		fmt.Fprintf(&b, "transfer %s %d from %s to %s", o.ID, o.Amount, o.From, o.To)
	case o.F == FAdd:
		fmt.Fprintf(&b, "add(%d)", o.Element)
	case o.F == FRead && o.Balances != nil:
		fmt.Fprintf(&b, "read %s", describeBalances(o.Balances))
	case o.F == FRead:
		fmt.Fprintf(&b, "read %s", describeList(o.Elements))
	default:
		fmt.Fprintf(&b, "%s", o.F)
	}
	return b.String()
}

func (m Mop) describe(withResult bool) string {
	switch m.F {
	case FAppend:
		return fmt.Sprintf("append(%s, %d)", m.Key, m.Value)
	case FR:
		if !withResult {
			return fmt.Sprintf("r(%s)", m.Key)
		}
		return fmt.Sprintf("r(%s)=%s", m.Key, describeList(m.List))
	}
	return fmt.Sprintf("%s(%s)", m.F, m.Key)
}

// describeList prints a list, eliding the middle of a long one.
func describeList(l []int) string {
	const head, tail = 4, 4
	var b strings.Builder
	b.WriteByte('[')
	for i, v := range l {
		if len(l) > head+tail+1 && i >= head && i < len(l)-tail {
			if i == head {
				fmt.Fprintf(&b, " ...%d more...", len(l)-head-tail)
			}
			continue
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(v))
	}
	b.WriteByte(']')
	return b.String()
}

func describeBalances(m map[string]int) string {
	keys := sortedKeys(m)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%d", k, m[k])
	}
	b.WriteByte('}')
	return b.String()
}

// WriteJSONL writes the history as JSON lines, one op per line.
func WriteJSONL(w io.Writer, history []Op) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw) // Encode ends each value with a newline
	for i := range history {
		if err := enc.Encode(&history[i]); err != nil {
			return fmt.Errorf("check: encode op %d: %w", i, err)
		}
	}
	return bw.Flush()
}

// ReadJSONL reads a history written by WriteJSONL. Fields it does not know
// are ignored.
func ReadJSONL(r io.Reader) ([]Op, error) {
	dec := json.NewDecoder(bufio.NewReader(r))
	var history []Op
	for {
		var op Op
		err := dec.Decode(&op)
		if errors.Is(err, io.EOF) {
			return history, nil
		}
		if err != nil {
			return history, fmt.Errorf("check: decode op %d: %w", len(history), err)
		}
		history = append(history, op)
	}
}
