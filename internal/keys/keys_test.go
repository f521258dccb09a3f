package keys

import (
	"bytes"
	"testing"
)

func TestOrdering(t *testing.T) {
	// Every class of key must sort in its own block, and user keys must keep
	// their order after encoding.
	ordered := [][]byte{
		MetaCounterKey("node"), MetaDescriptorKey(nil), MetaDescriptorKey([]byte("a")), MetaNodeKey(1),
		RaftLogKey(1, 1), RaftLogKey(1, 2), RaftLogKey(1, 256), RangeLocalKey(2, SuffixDescriptor),
		StoreIdentKey,
		UserKey(nil), UserKey([]byte{0}), UserKey([]byte("a")), UserKey([]byte("a\x00")), UserKey([]byte("b")), UserKey([]byte{0xff, 0xff}),
	}
	for i := 1; i < len(ordered); i++ {
		if bytes.Compare(ordered[i-1], ordered[i]) >= 0 {
			t.Errorf("key %d %q does not sort before key %d %q", i-1, ordered[i-1], i, ordered[i])
		}
	}
	ms, me := MetaSpan()
	for _, k := range [][]byte{MetaCounterKey("x"), MetaDescriptorKey([]byte{0xff}), MetaNodeKey(1 << 60)} {
		if bytes.Compare(k, ms) < 0 || bytes.Compare(k, me) >= 0 {
			t.Errorf("meta key %q outside meta span", k)
		}
	}
}

func TestUserSpan(t *testing.T) {
	tests := []struct {
		name       string
		a, b, k    []byte
		wantInside bool
	}{
		{"whole keyspace", nil, nil, []byte{0xff, 0xff, 0xff}, true},
		{"start inclusive", []byte("b"), []byte("d"), []byte("b"), true},
		{"end exclusive", []byte("b"), []byte("d"), []byte("d"), false},
		{"below", []byte("b"), []byte("d"), []byte("a"), false},
		{"open end", []byte("b"), nil, []byte("zzz"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, e := UserSpan(tc.a, tc.b)
			sk := UserKey(tc.k)
			inside := bytes.Compare(sk, s) >= 0 && bytes.Compare(sk, e) < 0
			if inside != tc.wantInside {
				t.Fatalf("storage span: inside=%v want %v", inside, tc.wantInside)
			}
			if got := Contains(tc.a, tc.b, tc.k); got != tc.wantInside {
				t.Fatalf("Contains=%v want %v", got, tc.wantInside)
			}
			back, err := DecodeUserKey(sk)
			if err != nil || !bytes.Equal(back, tc.k) {
				t.Fatalf("round trip: %q %v", back, err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		key     []byte
		val     []byte
		wantErr bool
	}{
		{"ok", []byte("k"), []byte("v"), false},
		{"empty key", nil, nil, true},
		{"key at limit", make([]byte, 16), nil, false},
		{"key over limit", make([]byte, 17), nil, true},
		{"value over limit", []byte("k"), make([]byte, 33), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateKey(tc.key, 16)
			if err == nil {
				err = ValidateValue(tc.val, 32)
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("err=%v wantErr=%v", err, tc.wantErr)
			}
		})
	}
}

func TestPrefixEnd(t *testing.T) {
	if got := PrefixEnd([]byte("ab")); string(got) != "ac" {
		t.Fatalf("got %q", got)
	}
	if got := PrefixEnd([]byte{'a', 0xff}); string(got) != "b" {
		t.Fatalf("got %q", got)
	}
	if got := PrefixEnd([]byte{0xff}); got != nil {
		t.Fatalf("got %q", got)
	}
}
