package check

import (
	"fmt"
	"slices"
	"strings"
)

// TransferID identifies one bank transfer: the client picks it (Op.ID) and
// the transfer transaction records it in the database's ledger.
type TransferID string

// Transfer is one ledger entry: Amount moved from From to To by transfer ID.
type Transfer struct {
	ID     TransferID `json:"id"`
	From   string     `json:"from"`
	To     string     `json:"to"`
	Amount int        `json:"amount"`
}

// Bank checks every ok read of a bank history: the balances name each of
// accounts once and no other account, none is negative, and they sum to
// total. Transfers are only counted here; LedgerCheck checks their effects.
func Bank(history []Op, accounts []string, total int) Result {
	rep := newReporter()
	known := make(map[string]bool, len(accounts))
	for _, a := range accounts {
		known[a] = true
	}
	for i, op := range history {
		switch op.F {
		case FTransfer:
			rep.stats["transfers-"+string(op.Type)]++
			continue
		case FRead:
		default:
			rep.add(AnomalyMalformed, fmt.Sprintf("op %d (%s): not a bank transfer or read", i, op), i)
			continue
		}
		if op.Type != OK {
			continue
		}
		rep.stats["reads"]++
		var missing, unexpected, negative []string
		for _, a := range accounts {
			if _, ok := op.Balances[a]; !ok {
				missing = append(missing, a)
			}
		}
		sum := 0
		for _, a := range sortedKeys(op.Balances) {
			b := op.Balances[a]
			sum += b
			if !known[a] {
				unexpected = append(unexpected, a)
			}
			if b < 0 {
				negative = append(negative, fmt.Sprintf("%s=%d", a, b))
			}
		}
		if len(missing) > 0 {
			rep.add(AnomalyMissingAccount, fmt.Sprintf("op %d (%s): no balance for %s", i, op, strings.Join(missing, ", ")), i)
		}
		if len(unexpected) > 0 {
			rep.add(AnomalyUnexpectedAccount, fmt.Sprintf("op %d (%s): balance for unknown account %s", i, op, strings.Join(unexpected, ", ")), i)
		}
		if len(negative) > 0 {
			rep.add(AnomalyNegativeBalance, fmt.Sprintf("op %d (%s): negative balance %s", i, op, strings.Join(negative, ", ")), i)
		}
		if sum != total {
			rep.add(AnomalyWrongTotal, fmt.Sprintf("op %d (%s): balances sum to %d, want %d", i, op, sum, total), i)
		}
	}
	return rep.result()
}

// TransferOutcomes returns the ids of the transfers of a bank history that
// were acknowledged (ok) and that failed, in history order. Info transfers
// are in neither: they may or may not be in the ledger.
func TransferOutcomes(history []Op) (acknowledged, failed []TransferID) {
	for _, op := range history {
		if op.F != FTransfer || op.ID == "" {
			continue
		}
		switch op.Type {
		case OK:
			acknowledged = append(acknowledged, TransferID(op.ID))
		case Fail:
			failed = append(failed, TransferID(op.ID))
		}
	}
	return acknowledged, failed
}

// LedgerCheck checks the ledger of transfers read back from the database at
// the end of a run: every acknowledged transfer is in it exactly once, no
// failed transfer is in it, no transfer is in it twice, and replaying it (in
// any order) from the initial balances gives exactly the final balances.
// Transfers that are neither acknowledged nor failed (info) may be in it.
func LedgerCheck(acknowledged, failed []TransferID, ledger []Transfer, initial, final map[string]int) Result {
	rep := newReporter()
	count := make(map[TransferID]int, len(ledger))
	for _, t := range ledger {
		count[t.ID]++
	}
	rep.stats["ledger-entries"] = len(ledger)
	rep.stats["acknowledged"] = len(acknowledged)
	rep.stats["failed"] = len(failed)

	for _, id := range sortedKeys(count) {
		if n := count[id]; n > 1 {
			rep.add(AnomalyDuplicateTransfer, fmt.Sprintf("transfer %s is in the ledger %d times", id, n))
		}
	}
	seen := make(map[TransferID]bool, len(acknowledged))
	for _, id := range acknowledged {
		if seen[id] {
			continue
		}
		seen[id] = true
		if count[id] == 0 {
			rep.add(AnomalyLostTransfer, fmt.Sprintf("transfer %s was acknowledged but is not in the ledger", id))
		}
	}
	for _, id := range failed {
		if count[id] > 0 && !seen[id] {
			seen[id] = true
			rep.add(AnomalyAbortedTransfer, fmt.Sprintf("transfer %s failed but is in the ledger", id))
		}
	}
	unacknowledged := 0
	for id := range count {
		if !seen[id] {
			unacknowledged++
		}
	}
	rep.stats["unacknowledged-entries"] = unacknowledged

	replay := make(map[string]int, len(initial))
	for a, b := range initial {
		replay[a] = b
	}
	for _, t := range ledger {
		replay[t.From] -= t.Amount
		replay[t.To] += t.Amount
	}
	accounts := sortedKeys(replay)
	for a := range final {
		if _, ok := replay[a]; !ok {
			accounts = append(accounts, a)
		}
	}
	slices.Sort(accounts)
	var diffs []string
	for _, a := range accounts {
		r, rok := replay[a]
		f, fok := final[a]
		switch {
		case !rok:
			if f != 0 {
				diffs = append(diffs, fmt.Sprintf("%s: final %d, unknown to the initial balances and the ledger", a, f))
			}
		case !fok:
			diffs = append(diffs, fmt.Sprintf("%s: replay gives %d, absent from the final balances", a, r))
		case r != f:
			diffs = append(diffs, fmt.Sprintf("%s: initial %d, replay gives %d, final %d", a, initial[a], r, f))
		}
	}
	if len(diffs) > 0 {
		rep.add(AnomalyLedgerMismatch, fmt.Sprintf("replaying %d ledger entries from the initial balances does not give the final balances: %s",
			len(ledger), strings.Join(diffs, "; ")))
	}
	return rep.result()
}
