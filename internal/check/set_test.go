package check

import "testing"

func add(typ OpType, e int, invoke, complete int64) Op {
	return Op{Type: typ, F: FAdd, Element: e, Invoke: invoke, Complete: complete}
}

func setRead(invoke, complete int64, elements ...int) Op {
	return Op{Type: OK, F: FRead, Elements: elements, Invoke: invoke, Complete: complete}
}

func TestSet(t *testing.T) {
	for _, tc := range []struct {
		name    string
		history []Op
		want    []string
	}{
		{"valid", []Op{
			add(OK, 1, 0, 10), add(OK, 2, 5, 15), setRead(12, 20, 1),
			setRead(30, 40, 2, 1),
		}, nil},
		{"info add present", []Op{add(OK, 1, 0, 10), add(Info, 2, 0, 0), setRead(30, 40, 1, 2)}, nil},
		{"info add absent", []Op{add(OK, 1, 0, 10), add(Info, 2, 0, 0), setRead(30, 40, 1)}, nil},
		{"info add seen, then not: no final-read rule broken", []Op{add(Info, 2, 0, 0), setRead(10, 20, 2), setRead(30, 40, 2)}, nil},
		{"lost", []Op{add(OK, 1, 0, 10), add(OK, 2, 0, 10), setRead(30, 40, 2)}, []string{AnomalyLost}},
		{"lost, though an earlier read saw it", []Op{add(OK, 1, 0, 10), setRead(20, 25, 1), setRead(30, 40)}, []string{AnomalyLost}},
		{"unexpected: never added", []Op{add(OK, 1, 0, 10), setRead(30, 40, 1, 7)}, []string{AnomalyUnexpected}},
		{"unexpected: its add failed", []Op{add(OK, 1, 0, 10), add(Fail, 2, 0, 10), setRead(30, 40, 1, 2)}, []string{AnomalyUnexpected}},
		{"unexpected in an intermediate read", []Op{setRead(1, 2, 9), add(OK, 1, 0, 10), setRead(30, 40, 1)}, []string{AnomalyUnexpected}},
		{"duplicate", []Op{add(OK, 1, 0, 10), setRead(30, 40, 1, 1, 1)}, []string{AnomalyDuplicate}},
		{"no final read", []Op{add(OK, 1, 0, 10), setRead(5, 40, 1)}, []string{AnomalyNoFinalRead}},
		{"malformed", []Op{{Type: OK, F: FPut}, setRead(5, 40)}, []string{AnomalyMalformed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkTypes(t, Set(tc.history), tc.want...)
		})
	}
}

func TestSetStats(t *testing.T) {
	res := Set([]Op{
		add(OK, 1, 0, 10), add(OK, 2, 0, 10), add(Info, 3, 0, 0), add(Info, 4, 0, 0), add(Fail, 5, 0, 10),
		add(Info, 1, 0, 0), // an element's best outcome counts
		setRead(20, 30, 1, 3),
	})
	want := map[string]int{"acknowledged": 2, "indeterminate": 2, "failed": 1, "present": 2, "recovered": 1, "lost": 1, "reads": 1}
	for k, v := range want {
		if res.Stats[k] != v {
			t.Errorf("Stats[%s] = %d, want %d (%v)", k, res.Stats[k], v, res.Stats)
		}
	}
}
