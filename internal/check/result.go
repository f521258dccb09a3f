package check

import (
	"cmp"
	"slices"
)

// Anomaly types. The cycle types of ListAppend also come with the suffix
// "-realtime" (RealtimeSuffix) when the cycle needs a realtime edge.
const (
	// Any checker.
	AnomalyMalformed = "malformed" // the history cannot be checked as given

	// Bank and LedgerCheck.
	AnomalyWrongTotal        = "wrong-total"
	AnomalyNegativeBalance   = "negative-balance"
	AnomalyMissingAccount    = "missing-account"
	AnomalyUnexpectedAccount = "unexpected-account"
	AnomalyLostTransfer      = "lost-transfer"      // acknowledged, not in the ledger
	AnomalyDuplicateTransfer = "duplicate-transfer" // in the ledger more than once
	AnomalyAbortedTransfer   = "aborted-transfer"   // failed, yet in the ledger
	AnomalyLedgerMismatch    = "ledger-mismatch"    // replayed ledger != final balances

	// Set.
	AnomalyLost        = "lost"
	AnomalyUnexpected  = "unexpected"
	AnomalyDuplicate   = "duplicate"
	AnomalyNoFinalRead = "no-final-read"

	// Register.
	AnomalyNonlinearizable = "nonlinearizable"
	AnomalyUnknown         = "unknown" // the search timed out

	// ListAppend.
	AnomalyG0                = "G0"
	AnomalyG1a               = "G1a"
	AnomalyG1b               = "G1b"
	AnomalyG1c               = "G1c"
	AnomalyGSingle           = "G-single"
	AnomalyG2                = "G2"
	AnomalyGarbage           = "garbage"
	AnomalyDuplicateElements = "duplicate-elements"
	AnomalyIncompatibleOrder = "incompatible-order"
	AnomalyInternal          = "internal"

	// RealtimeSuffix marks a cycle that needs a realtime edge.
	RealtimeSuffix = "-realtime"
)

// MaxListed is how many anomalies of one type a Result lists; Stats counts
// them all.
const MaxListed = 10

// Result is a checker's verdict on a history.
type Result struct {
	// Valid is true iff no anomaly was found.
	Valid bool `json:"valid"`
	// Anomalies lists up to MaxListed anomalies of each type, in the order
	// found.
	Anomalies []Anomaly `json:"anomalies,omitempty"`
	// Stats counts what was checked (checker-specific names such as
	// "txns" or "acknowledged") and, under each anomaly type, how many
	// anomalies of that type were found.
	Stats map[string]int `json:"stats"`
}

// Anomaly is one violation found in a history.
type Anomaly struct {
	// Type names the anomaly: one of the Anomaly* constants.
	Type string `json:"type"`
	// Explanation says what was seen, for a human: for a cycle, the witness
	// cycle, each transaction on it and the elements behind each edge.
	Explanation string `json:"explanation"`
	// Ops are the indexes in the history of the ops involved.
	Ops []int `json:"ops,omitempty"`
}

// Types returns the distinct anomaly types found, sorted.
func (r Result) Types() []string {
	var ts []string
	for _, a := range r.Anomalies {
		ts = append(ts, a.Type)
	}
	slices.Sort(ts)
	return slices.Compact(ts)
}

// Has reports whether an anomaly of type t was found.
func (r Result) Has(t string) bool { return r.Stats[t] > 0 }

// reporter collects the anomalies and stats of one check.
type reporter struct {
	stats     map[string]int
	anomalies []Anomaly
	found     int
}

func newReporter() *reporter { return &reporter{stats: map[string]int{}} }

// add records an anomaly of type typ; it is listed if fewer than MaxListed
// of its type are.
func (r *reporter) add(typ, explanation string, ops ...int) {
	r.found++
	r.stats[typ]++
	if r.stats[typ] <= MaxListed {
		r.anomalies = append(r.anomalies, Anomaly{Type: typ, Explanation: explanation, Ops: ops})
	}
}

func (r *reporter) result() Result {
	return Result{Valid: r.found == 0, Anomalies: r.anomalies, Stats: r.stats}
}

func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
