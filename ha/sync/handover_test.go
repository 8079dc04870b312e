package sync

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// What a node keeps of the records handed to it: PutAll's are taken as
// they are (a loaded node's producer makes them for the sync and never
// touches them again), Put's are copied, and a record's ID is the table's
// key itself.

// convergedPair is a group of nodes a and b, converged, and a.
func convergedPair(t *testing.T) (*group, *tnode) {
	t.Helper()
	g := newGroup(t, Config{}, "a", "b")
	g.converged(10 * time.Second)
	return g, g.nodes["a"]
}

// owns records that tn's peers must end up holding key=value from it
// (the records themselves are put by the test).
func (tn *tnode) owns(kv ...string) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	for i := 0; i+1 < len(kv); i += 2 {
		tn.own[kv[i]] = kv[i+1]
	}
}

// tableEntry is the table's key string and value for key (kind 1), under
// the node's lock.
func tableEntry(n *Node, key string) (tk string, v []byte, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	want := KeyOf(1, []byte(key))
	for k, val := range n.m.table {
		if k == want {
			return k, val.v, true
		}
	}
	return "", nil, false
}

// TestPutAllTakesTheRecords: the table holds the very value slices and ID
// strings PutAll was given (no copy of either), and the peer gets the
// records.
func TestPutAllTakesTheRecords(t *testing.T) {
	g, a := convergedPair(t)
	var rs []Record
	for i := range 8 {
		k, v := fmt.Sprintf("taken%d", i), value(i)
		a.owns(k, v)
		r := Record{Kind: 1, Key: []byte(k), Value: []byte(v)}
		if i%2 == 0 {
			r.ID = KeyOf(1, r.Key)
		}
		rs = append(rs, r)
	}
	given := make([]Record, len(rs))
	copy(given, rs) // PutAll takes rs itself too
	if err := a.n.PutAll(rs); err != nil {
		t.Fatal(err)
	}
	g.converged(10 * time.Second)
	for _, r := range given {
		tk, v, ok := tableEntry(a.n, string(r.Key))
		switch {
		case !ok:
			t.Fatalf("%s not in the table", r.Key)
		case unsafe.SliceData(v) != unsafe.SliceData(r.Value):
			t.Errorf("%s: the table holds a copy of the value PutAll was given", r.Key)
		case r.ID != "" && unsafe.StringData(tk) != unsafe.StringData(r.ID):
			t.Errorf("%s: the table's key is a string of its own, not the record's ID", r.Key)
		}
	}
}

// TestPutCopiesTheRecord: a record put with Put is the caller's still
// (it may reuse its buffers): changing it afterwards changes nothing sent.
func TestPutCopiesTheRecord(t *testing.T) {
	g, a := convergedPair(t)
	a.owns("reused", "first")
	key, val := []byte("reused"), []byte("first")
	if err := a.n.Put(Record{Kind: 1, Key: key, Value: val}); err != nil {
		t.Fatal(err)
	}
	copy(key, "XXXXXX")
	copy(val, "later")
	g.converged(10 * time.Second)
	if _, v, ok := tableEntry(a.n, "reused"); !ok || string(v) != "first" {
		t.Fatalf("table holds %q (found %v), want the value as put", v, ok)
	}
}

// TestRecordIDMustNameItsKey: an ID that is not KeyOf(Kind, Key) would
// file the record under another key: refused, naming it, the others
// queued.
func TestRecordIDMustNameItsKey(t *testing.T) {
	g, a := convergedPair(t)
	a.owns("right", "1")
	err := a.n.PutAll([]Record{
		{Kind: 1, Key: []byte("right"), Value: []byte("1"), ID: KeyOf(1, []byte("right"))},
		{Kind: 1, Key: []byte("wrong"), Value: []byte("2"), ID: KeyOf(1, []byte("other"))},
		{Kind: 1, Key: []byte("kind"), Value: []byte("3"), ID: KeyOf(2, []byte("kind"))},
	})
	for _, want := range []string{"record 2 of 3", "record 3 of 3", "is not the kind 1 and key"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("PutAll error %v, want one saying %q", err, want)
		}
	}
	if err := a.n.Put(Record{Kind: 1, Key: []byte("k"), ID: "\x00\x01j"}); err == nil {
		t.Fatal("Put took a record whose ID names another key")
	}
	g.converged(10 * time.Second)
}

// TestTableRecordsEncodeAsRecords: a message's records written from the
// table (key string, value) are byte for byte those of the records
// themselves, deletions, empty values, kinds past 255 and hold times
// included.
func TestTableRecordsEncodeAsRecords(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		r := Record{Kind: uint16(rng.IntN(1 << 16)), Key: make([]byte, 1+rng.IntN(MaxKey)), Deleted: i%5 == 0}
		for j := range r.Key {
			r.Key[j] = byte(rng.IntN(256))
		}
		if !r.Deleted && i%7 != 0 {
			r.Value = make([]byte, rng.IntN(600))
			for j := range r.Value {
				r.Value[j] = byte(rng.IntN(256))
			}
		}
		if i%3 == 0 {
			r.Held = time.Duration(rng.Int64N(int64(100 * 24 * time.Hour))) // past the field's 49 days too
		}
		prefix := []byte{0xa5, byte(i)}
		want := appendRecord(bytes.Clone(prefix), r)
		held := heldMillis(r.Held, r.Deleted)
		got := appendTableRecord(bytes.Clone(prefix), KeyOf(r.Kind, r.Key), r.Value, r.Deleted, held)
		if !bytes.Equal(got, want) {
			t.Fatalf("record %d (kind %d, key %d bytes, value %d, deleted %v): table encoding\n%x\nwant\n%x", i, r.Kind, len(r.Key), len(r.Value), r.Deleted, got, want)
		}
		if n := (sendRec{tk: KeyOf(r.Kind, r.Key), v: r.Value, held: held}).len(); n != recordLen(r) || n != len(want)-len(prefix) {
			t.Fatalf("record %d: sendRec.len %d, recordLen %d", i, n, recordLen(r))
		}
	}
}
