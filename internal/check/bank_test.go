package check

import (
	"slices"
	"testing"
)

func bankRead(b map[string]int) Op {
	return Op{Type: OK, F: FRead, Invoke: 1, Complete: 2, Balances: b}
}

func transfer(typ OpType, id string, from, to string, amount int) Op {
	return Op{Type: typ, F: FTransfer, ID: id, From: from, To: to, Amount: amount, Invoke: 1, Complete: 2}
}

// checkTypes fails the test unless res found exactly the anomaly types
// want (none: valid).
func checkTypes(t *testing.T, res Result, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := res.Types(); !slices.Equal(got, want) || res.Valid != (len(want) == 0) {
		t.Fatalf("valid=%v types %v, want %v\n%s", res.Valid, got, want, explain(res))
	}
}

func explain(res Result) string {
	s := ""
	for _, a := range res.Anomalies {
		s += a.Type + ": " + a.Explanation + "\n"
	}
	return s
}

func TestBank(t *testing.T) {
	accounts := []string{"a", "b", "c"}
	for _, tc := range []struct {
		name    string
		history []Op
		want    []string
	}{
		{"valid", []Op{
			bankRead(map[string]int{"a": 10, "b": 10, "c": 10}),
			transfer(OK, "t1", "a", "b", 5),
			transfer(Info, "t2", "b", "c", 5),
			transfer(Fail, "t3", "c", "a", 5),
			bankRead(map[string]int{"a": 5, "b": 15, "c": 10}),
			{Type: Info, F: FRead, Invoke: 3}, // no result: not checked
			{Type: Fail, F: FRead, Invoke: 3, Complete: 4, Balances: map[string]int{"a": -100}},
		}, nil},
		{"wrong total", []Op{bankRead(map[string]int{"a": 10, "b": 10, "c": 11})}, []string{AnomalyWrongTotal}},
		{"negative balance", []Op{bankRead(map[string]int{"a": -5, "b": 25, "c": 10})}, []string{AnomalyNegativeBalance}},
		{"missing account", []Op{bankRead(map[string]int{"a": 20, "b": 10})}, []string{AnomalyMissingAccount}},
		{"unexpected account", []Op{bankRead(map[string]int{"a": 10, "b": 10, "c": 10, "d": 0})}, []string{AnomalyUnexpectedAccount}},
		{"malformed", []Op{{Type: OK, F: FAdd}}, []string{AnomalyMalformed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkTypes(t, Bank(tc.history, accounts, 30), tc.want...)
		})
	}
}

func TestBankStats(t *testing.T) {
	res := Bank([]Op{
		transfer(OK, "t1", "a", "b", 1), transfer(Info, "t2", "a", "b", 1), transfer(Fail, "t3", "a", "b", 1),
		bankRead(map[string]int{"a": 1}),
	}, []string{"a"}, 1)
	want := map[string]int{"transfers-ok": 1, "transfers-info": 1, "transfers-fail": 1, "reads": 1}
	for k, v := range want {
		if res.Stats[k] != v {
			t.Errorf("Stats[%s] = %d, want %d (%v)", k, res.Stats[k], v, res.Stats)
		}
	}
}

func TestTransferOutcomes(t *testing.T) {
	ack, failed := TransferOutcomes([]Op{
		transfer(OK, "t1", "a", "b", 1), transfer(Info, "t2", "a", "b", 1), transfer(Fail, "t3", "a", "b", 1),
		transfer(OK, "t4", "a", "b", 1), bankRead(nil),
	})
	if !slices.Equal(ack, []TransferID{"t1", "t4"}) || !slices.Equal(failed, []TransferID{"t3"}) {
		t.Fatalf("acknowledged %v failed %v", ack, failed)
	}
}

func TestLedgerCheck(t *testing.T) {
	initial := map[string]int{"a": 10, "b": 10}
	t1 := Transfer{ID: "t1", From: "a", To: "b", Amount: 3}
	t2 := Transfer{ID: "t2", From: "b", To: "a", Amount: 1} // info: either way
	t3 := Transfer{ID: "t3", From: "a", To: "b", Amount: 5} // failed
	for _, tc := range []struct {
		name   string
		ledger []Transfer
		final  map[string]int
		want   []string
	}{
		{"valid", []Transfer{t1}, map[string]int{"a": 7, "b": 13}, nil},
		{"valid with the info transfer", []Transfer{t2, t1}, map[string]int{"a": 8, "b": 12}, nil},
		{"lost entry", []Transfer{}, map[string]int{"a": 10, "b": 10}, []string{AnomalyLostTransfer}},
		{"lost entry, money moved", []Transfer{}, map[string]int{"a": 7, "b": 13}, []string{AnomalyLostTransfer, AnomalyLedgerMismatch}},
		{"duplicated entry", []Transfer{t1, t1}, map[string]int{"a": 4, "b": 16}, []string{AnomalyDuplicateTransfer}},
		{"duplicated entry, applied once", []Transfer{t1, t1}, map[string]int{"a": 7, "b": 13}, []string{AnomalyDuplicateTransfer, AnomalyLedgerMismatch}},
		{"failed transfer in the ledger", []Transfer{t1, t3}, map[string]int{"a": 2, "b": 18}, []string{AnomalyAbortedTransfer}},
		{"balances differ from the ledger", []Transfer{t1}, map[string]int{"a": 7, "b": 12}, []string{AnomalyLedgerMismatch}},
		{"account vanished", []Transfer{t1}, map[string]int{"b": 13}, []string{AnomalyLedgerMismatch}},
		{"account appeared", []Transfer{t1}, map[string]int{"a": 7, "b": 13, "c": 1}, []string{AnomalyLedgerMismatch}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := LedgerCheck([]TransferID{"t1"}, []TransferID{"t3"}, tc.ledger, initial, tc.final)
			checkTypes(t, res, tc.want...)
		})
	}
}
