package dataplane

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/bpf"
)

// The record encoding (ctrecord.go) against the object's own layouts and
// those of earlier releases; no kernel needed.

func testCodec(t testing.TB) *recordCodec {
	t.Helper()
	spec, err := bpf.LoadLb()
	if err != nil {
		t.Fatal(err)
	}
	c, err := newRecordCodec(spec)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func oldCodec(t testing.TB, obj string) *recordCodec {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	c, err := newRecordCodec(spec)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const testNow = 5_000_000_000_000

func sampleCT() (bpf.LbCtKey, bpf.LbCtVal) {
	k := bpf.LbCtKey{Src: addr16(clientV4), Dst: addr16(vipV4), Sport: htons(40000), Dport: htons(80), Proto: 6}
	v := bpf.LbCtVal{NatSrc: addr16(vipV4), NatDst: addr16(epAddr(false, 1)), NatSport: htons(2000), NatDport: htons(8080),
		Svc: 7, Ep: 1, State: bpf.CtStateTcpEstablished, Family: afInet, Mode: uint8(ModeFullNAT), Timeout: 7440,
		Created: testNow - 3e9, LastSeen: testNow - 1e9, Packets: 9, Bytes: 900,
		FibIfindex: 4, FibMacs: [12]uint8{1, 2, 3}, FibNs: testNow - 2e9}
	return k, v
}

func sampleAssoc() (bpf.LbAssocKey, bpf.LbAssoc) {
	k := bpf.LbAssocKey{Svc: 7, VtagClient: 0x11110000, Cport: htons(5000), Vport: htons(38412)}
	a := bpf.LbAssoc{Svc: 7, Ep: 1, VtagEp: 0x22220000, Nc: 2, Ne: 2, Nv: 2, Mode: uint8(ModeFullNAT), Family: afInet,
		NatSport: htons(3000), Eport: htons(38412), Cseen: [4]uint64{testNow - 5e8, testNow - 7e8}, Steers: 2}
	a.Caddr[0], a.Caddr[1] = addr16(clientV4), addr16(client2V4)
	a.Vip[0], a.Vip[1] = addr16(vipV4), addr16(vip2V4)
	a.Eaddr[0], a.Eaddr[1] = addr16(epAddr(false, 1)), addr16(ep2V4)
	a.Lsrc0 = addr16(vipV4)
	return k, a
}

func TestRecordRoundTripLeavesNodeLocalFieldsOut(t *testing.T) {
	c := testCodec(t)
	k, v := sampleCT()
	kb, err := c.ctKey.decode(c.ctKey.encode(rawOf(&k), testNow), 9e12, true)
	if err != nil || !bytes.Equal(kb, rawOf(&k)) {
		t.Fatalf("key round trip: %v", err)
	}
	enc := c.ctVal.encode(rawOf(&v), testNow)
	if bytes.Contains(enc, []byte("fib_")) {
		t.Fatal("the cached FIB result is in the record")
	}
	// Read on a node whose clock is 4,000 s further: same ages.
	const later = testNow + 4000e9
	vb, err := c.ctVal.decode(enc, later, false)
	if err != nil {
		t.Fatal(err)
	}
	var got bpf.LbCtVal
	if _, err := binary.Decode(vb, binary.LittleEndian, &got); err != nil {
		t.Fatal(err)
	}
	want := v
	want.FibIfindex, want.FibMacs, want.FibNs = 0, [12]uint8{}, 0
	want.Created, want.LastSeen = later-3e9, later-1e9
	if got != want {
		t.Fatalf("value round trip\n got %+v\nwant %+v", got, want)
	}
	ak, a := sampleAssoc()
	ab, err := c.assoc.decode(c.assoc.encode(rawOf(&a), testNow), testNow, false)
	if err != nil || !bytes.Equal(ab, rawOf(&a)) {
		t.Fatalf("association round trip: %v", err)
	}
	if kb, err := c.assocKey.decode(c.assocKey.encode(rawOf(&ak), testNow), testNow, true); err != nil || !bytes.Equal(kb, rawOf(&ak)) {
		t.Fatalf("association key round trip: %v", err)
	}
}

// Records written by another version of the object are applied when every
// field they carry has a place here, and refused naming the field when not.
func TestRecordsFromAnotherVersion(t *testing.T) {
	cur := testCodec(t)
	// 57d5762 predates the association's path failover fields (steers, ...).
	old := oldCodec(t, "testdata/lb_bpfel_57d5762.o")
	if len(old.assoc.leaves) >= len(cur.assoc.leaves) {
		t.Fatalf("old object's association has %d fields, current %d: pick an older object", len(old.assoc.leaves), len(cur.assoc.leaves))
	}
	_, a := sampleAssoc()
	oldRaw := make([]byte, old.assoc.size)
	copy(oldRaw, rawOf(&a)) // the fields before the appended ones
	// Old writer, new reader: applied, the new fields zero.
	b, err := cur.assoc.decode(old.assoc.encode(oldRaw, testNow), testNow, false)
	if err != nil {
		t.Fatalf("old record refused: %v", err)
	}
	var got bpf.LbAssoc
	if _, err := binary.Decode(b, binary.LittleEndian, &got); err != nil {
		t.Fatal(err)
	}
	if got.Caddr != a.Caddr || got.VtagEp != a.VtagEp || got.NatSport != a.NatSport || got.Steers != 0 {
		t.Fatalf("old record read as %+v", got)
	}
	// New writer, old reader: refused, naming a field it does not know.
	_, err = old.assoc.decode(cur.assoc.encode(rawOf(&a), testNow), testNow, false)
	if err == nil || !strings.Contains(err.Error(), "unknown to this node") {
		t.Fatalf("a record with fields the old node lacks: %v", err)
	}
	// ... unless those fields are zero: nothing would be lost.
	a.Steers, a.Cseen = 0, [4]uint64{}
	if _, err := old.assoc.decode(cur.assoc.encode(rawOf(&a), testNow), testNow, false); err != nil {
		t.Fatalf("a record whose extra fields are zero: %v", err)
	}

	k, _ := sampleCT()
	enc := cur.ctKey.encode(rawOf(&k), testNow)
	cases := []struct {
		name, want string
		rec        []byte
	}{
		{"version", "version 2", append([]byte{2}, enc[1:]...)},
		{"empty", "empty record", nil},
		{"key field missing", `field "proto" missing`, encodeWithout(cur.ctKey, rawOf(&k), "proto")},
		{"truncated", "truncated", enc[:len(enc)-3]},
		{"repeated", "repeated", append(append([]byte{}, enc...), enc[1:1+1+3+2+16]...)}, // src again
	}
	for _, c := range cases {
		_, err := cur.ctKey.decode(c.rec, testNow, true)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
		}
	}
	// An integer from a wider field: taken when it fits, refused when not.
	wide := func(v uint64) []byte {
		l, err := planLayout("ct_val", []leaf{{path: "svc", off: 0, size: 8, isInt: true}}, 8)
		if err != nil {
			t.Fatal(err)
		}
		return l.encode(binary.LittleEndian.AppendUint64(nil, v), testNow)
	}
	vb, err := cur.ctVal.decode(wide(42), testNow, false)
	if err != nil {
		t.Fatalf("wider field that fits: %v", err)
	}
	var gotV bpf.LbCtVal
	if _, err := binary.Decode(vb, binary.LittleEndian, &gotV); err != nil || gotV.Svc != 42 {
		t.Fatalf("svc %d (%v), want 42", gotV.Svc, err)
	}
	if _, err := cur.ctVal.decode(wide(1<<40), testNow, false); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("wider field that does not fit: %v", err)
	}
}

// encodeWithout is l.encode with one field left out.
func encodeWithout(l layout, raw []byte, field string) []byte {
	var kept []leaf
	for _, f := range l.leaves {
		if f.path != field {
			kept = append(kept, f)
		}
	}
	l, err := planLayout(l.name, kept, l.size)
	if err != nil {
		panic(err)
	}
	return l.encode(raw, testNow)
}

func FuzzDecodeRecord(f *testing.F) {
	c := testCodec(f)
	k, v := sampleCT()
	ak, a := sampleAssoc()
	f.Add(uint8(0), c.ctKey.encode(rawOf(&k), testNow))
	f.Add(uint8(1), c.ctVal.encode(rawOf(&v), testNow))
	f.Add(uint8(2), c.assocKey.encode(rawOf(&ak), testNow))
	f.Add(uint8(3), c.assoc.encode(rawOf(&a), testNow))
	f.Add(uint8(1), []byte{1, 5, 's', 't', 'a', 't', 'e', 0, 1, 3})
	f.Add(uint8(3), []byte{1, 1, 'x', 0xff, 0xff})
	f.Fuzz(func(t *testing.T, which uint8, rec []byte) {
		// recordField finds what parseFields does, with its errors.
		for _, name := range []string{"last_seen" + ageSuffix, "cseen" + ageSuffix, "state"} {
			fields, perr := parseFields(rec)
			got, err := recordField(rec, name)
			if (err == nil) != (perr == nil) || perr == nil && !bytes.Equal(got, fields[name]) {
				t.Fatalf("recordField(%q) %x, %v; parseFields %x, %v", name, got, err, fields[name], perr)
			}
		}
		ls := []*layout{&c.ctKey, &c.ctVal, &c.assocKey, &c.assoc}
		l := ls[int(which)%len(ls)]
		complete := l == &c.ctKey || l == &c.assocKey
		b, err := l.decode(rec, testNow, complete)
		if err != nil {
			return
		}
		if len(b) != l.size {
			t.Fatalf("decoded %d bytes, layout has %d", len(b), l.size)
		}
		// The fast path for this node's own records says what the
		// general one says.
		if own, ok := l.decodeOwn(rec, testNow); ok {
			gen, err := l.decodeFields(rec, testNow, complete)
			if err != nil || !bytes.Equal(own, gen) {
				t.Fatalf("own-layout decode %x, by field names %x (%v)", own, gen, err)
			}
		}
		// What was accepted encodes to a record that decodes the same.
		b2, err := l.decode(l.encode(b, testNow), testNow, complete)
		if err != nil {
			t.Fatalf("re-encoded record refused: %v", err)
		}
		if !bytes.Equal(b, b2) {
			t.Fatalf("round trip changed the entry\n%x\n%x", b, b2)
		}
	})
}

// This node's own records take the fast path of decode (decodeOwn) and
// give what decoding by field names gives; a record of another layout (an
// earlier release's, or the fields in another order) does not take it and
// still decodes.
func TestOwnRecordsDecodeAsByFieldNames(t *testing.T) {
	c := testCodec(t)
	k, v := sampleCT()
	ak, a := sampleAssoc()
	for _, x := range []struct {
		l        *layout
		raw      []byte
		complete bool
	}{{&c.ctKey, rawOf(&k), true}, {&c.ctVal, rawOf(&v), false}, {&c.assocKey, rawOf(&ak), true}, {&c.assoc, rawOf(&a), false}} {
		rec := x.l.encode(x.raw, testNow)
		own, ok := x.l.decodeOwn(rec, testNow)
		if !ok {
			t.Fatalf("%s: own record not decoded by decodeOwn", x.l.name)
		}
		gen, err := x.l.decodeFields(rec, testNow, x.complete)
		if err != nil || !bytes.Equal(own, gen) {
			t.Fatalf("%s: decodeOwn %x, by field names %x (%v)", x.l.name, own, gen, err)
		}
		// The same fields, the first two swapped: another writer's order.
		fields, err := splitRecordFields(rec)
		if err != nil {
			t.Fatal(err)
		}
		fields[0], fields[1] = fields[1], fields[0]
		swapped := append([]byte{recordVersion}, bytes.Join(fields, nil)...)
		if _, ok := x.l.decodeOwn(swapped, testNow); ok {
			t.Errorf("%s: decodeOwn took a record in another field order", x.l.name)
		}
		got, err := x.l.decode(swapped, testNow, x.complete)
		if err != nil || !bytes.Equal(got, own) {
			t.Errorf("%s: reordered record decoded %x (%v), want %x", x.l.name, got, err, own)
		}
	}
}

// splitRecordFields cuts an encoded record into its encoded fields.
func splitRecordFields(rec []byte) ([][]byte, error) {
	var out [][]byte
	b := rec[1:]
	for len(b) > 0 {
		n := int(b[0])
		if len(b) < 1+n+2 {
			return nil, fmt.Errorf("truncated at %d", len(rec)-len(b))
		}
		end := 1 + n + 2 + int(binary.BigEndian.Uint16(b[1+n:]))
		out = append(out, b[:end])
		b = b[end:]
	}
	return out, nil
}

// TestRecordIdle: the idle time a record carries is its entry's last_seen
// age, an association's most recent client address; none for a deletion,
// a never-seen entry or garbage.
func TestRecordIdle(t *testing.T) {
	c := testCodec(t)
	_, v := sampleCT()
	_, a := sampleAssoc()
	never := v
	never.LastSeen = 0
	for _, tt := range []struct {
		name string
		r    Record
		want time.Duration
		ok   bool
	}{
		{"entry", Record{Kind: RecordConntrack, Value: c.ctVal.encode(rawOf(&v), testNow)}, time.Second, true},
		{"association: most recent path", Record{Kind: RecordAssoc, Value: c.assoc.encode(rawOf(&a), testNow)}, 500 * time.Millisecond, true},
		{"never seen", Record{Kind: RecordConntrack, Value: c.ctVal.encode(rawOf(&never), testNow)}, 0, false},
		{"deleted", Record{Kind: RecordConntrack, Deleted: true}, 0, false},
		{"garbage", Record{Kind: RecordConntrack, Value: []byte{9, 9, 9}}, 0, false},
	} {
		got, ok := RecordIdle(tt.r)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: RecordIdle = %v %v, want %v %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

// AgeRecord makes every time in a record older by d (what a record
// encoded at a dump's start says when it is sent after the dump): the
// idle time grows by d, an unset time stays unset, the rest of the record
// is unchanged, and the caller's record is not written; deletions and
// unreadable records pass as they are.
func TestAgeRecord(t *testing.T) {
	c := testCodec(t)
	_, v := sampleCT()
	_, a := sampleAssoc()
	never := v
	never.LastSeen = 0
	const d = 300 * time.Millisecond
	for _, tt := range []struct {
		name     string
		r        Record
		wantIdle time.Duration
		idleOK   bool
	}{
		{"entry", Record{Kind: RecordConntrack, Value: c.ctVal.encode(rawOf(&v), testNow)}, time.Second + d, true},
		{"association", Record{Kind: RecordAssoc, Value: c.assoc.encode(rawOf(&a), testNow)}, 500*time.Millisecond + d, true},
		{"never seen", Record{Kind: RecordConntrack, Value: c.ctVal.encode(rawOf(&never), testNow)}, 0, false},
		{"deleted", Record{Kind: RecordConntrack, Deleted: true}, 0, false},
		{"garbage", Record{Kind: RecordConntrack, Value: []byte{1, 9, 9}}, 0, false},
	} {
		orig := bytes.Clone(tt.r.Value)
		got := AgeRecord(tt.r, d)
		if !bytes.Equal(tt.r.Value, orig) {
			t.Errorf("%s: AgeRecord wrote the caller's record", tt.name)
		}
		idle, ok := RecordIdle(got)
		if idle != tt.wantIdle || ok != tt.idleOK {
			t.Errorf("%s: idle after AgeRecord %v %v, want %v %v", tt.name, idle, ok, tt.wantIdle, tt.idleOK)
		}
		if !tt.idleOK {
			continue
		}
		// Every other field as it was, every set time d older.
		before, err1 := parseFields(tt.r.Value)
		after, err2 := parseFields(got.Value)
		if err1 != nil || err2 != nil || len(before) != len(after) {
			t.Fatalf("%s: fields %v %v, %d vs %d", tt.name, err1, err2, len(before), len(after))
		}
		for name, b := range before {
			g := after[name]
			if !strings.HasSuffix(name, ageSuffix) {
				if !bytes.Equal(b, g) {
					t.Errorf("%s: field %s changed %x -> %x", tt.name, name, b, g)
				}
				continue
			}
			for i := 0; i+8 <= len(b); i += 8 {
				was, now := binary.LittleEndian.Uint64(b[i:]), binary.LittleEndian.Uint64(g[i:])
				if want := map[bool]uint64{true: 0, false: was + uint64(d)}[was == 0]; now != want {
					t.Errorf("%s: %s[%d] %d -> %d, want %d", tt.name, name, i/8, was, now, want)
				}
			}
		}
	}
}

// FuzzAgeRecord: whatever the bytes, AgeRecord does not panic, keeps the
// record's length, and a readable idle time grows by exactly d.
func FuzzAgeRecord(f *testing.F) {
	c := testCodec(f)
	_, v := sampleCT()
	_, a := sampleAssoc()
	f.Add(uint8(0), c.ctVal.encode(rawOf(&v), testNow), int64(time.Second))
	f.Add(uint8(1), c.assoc.encode(rawOf(&a), testNow), int64(time.Millisecond))
	f.Add(uint8(0), []byte{1, 13, 'l', 'a', 's', 't', '_', 's', 'e', 'e', 'n', '@', 'a', 'g', 'e', 0, 8, 1, 0, 0, 0, 0, 0, 0, 0}, int64(5))
	f.Add(uint8(0), []byte{1, 4, 'x', '@', 'a', 'g', 0, 3}, int64(1))
	f.Fuzz(func(t *testing.T, kind uint8, rec []byte, d int64) {
		r := Record{Kind: RecordConntrack, Value: rec}
		if kind%2 == 1 {
			r.Kind = RecordAssoc
		}
		got := AgeRecord(r, time.Duration(d))
		if len(got.Value) != len(rec) {
			t.Fatalf("length %d -> %d", len(rec), len(got.Value))
		}
		idle, ok := RecordIdle(r)
		idle2, ok2 := RecordIdle(got)
		if d > 0 && ok && idle >= 0 && idle <= math.MaxInt64-1-time.Duration(d) && idle2 != idle+time.Duration(d) {
			t.Fatalf("idle %v -> %v, aged by %v", idle, idle2, time.Duration(d))
		}
		if ok != ok2 {
			t.Fatalf("idle readable %v before, %v after", ok, ok2)
		}
	})
}

// TestRawOfIsTheLittleEndianEncoding: the records' raw bytes are the
// structs' memory, which must be what binary.LittleEndian writes for each
// generated type the records carry (no hidden padding, every field named).
func TestRawOfIsTheLittleEndianEncoding(t *testing.T) {
	k, v := sampleCT()
	ak, a := sampleAssoc()
	v.Pad, v.Pad3, a.Pad, a.Pad2 = 0x5a, 0xa5a5, [3]uint8{0xa5, 0x5a}, 0x5aa5 // padding as it is held
	for name, c := range map[string]struct {
		got  []byte
		want any
	}{"ct_key": {rawOf(&k), &k}, "ct_val": {rawOf(&v), &v}, "assoc_key": {rawOf(&ak), &ak}, "assoc": {rawOf(&a), &a}} {
		want, err := binary.Append(nil, binary.LittleEndian, c.want)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.got, want) {
			t.Errorf("%s: rawOf\n%x\nbinary.LittleEndian\n%x", name, c.got, want)
		}
	}
}

// rawOf is a copy of view(v).
func rawOf[T any](v *T) []byte { return bytes.Clone(view(v)) }

// TestRecordsCarryTheirIdleTime: the idle time a record this node encodes
// carries (RecordIdle without parsing) is the one its encoding says, for
// entries and associations, set, unset and future times, before and after
// AgeRecord.
func TestRecordsCarryTheirIdleTime(t *testing.T) {
	c := testCodec(t)
	k, v := sampleCT()
	ak, a := sampleAssoc()
	type rec struct {
		name string
		r    Record
	}
	var recs []rec
	for _, last := range []uint64{0, 1, testNow - 1e9, testNow, testNow + 5} {
		v.LastSeen = last
		recs = append(recs, rec{fmt.Sprintf("entry last_seen %d", last), c.record(RecordConntrack, &c.ctKey, &c.ctVal, view(&k), view(&v), testNow)})
	}
	for _, cseen := range [][4]uint64{{}, {testNow - 5e8, testNow - 7e8}, {0, 0, testNow - 2}, {testNow + 9, 1}} {
		a.Cseen = cseen
		recs = append(recs, rec{fmt.Sprintf("association cseen %v", cseen), c.record(RecordAssoc, &c.assocKey, &c.assoc, view(&ak), view(&a), testNow)})
	}
	for _, x := range recs {
		for _, d := range []time.Duration{0, time.Millisecond, math.MaxInt64} {
			r := AgeRecord(x.r, d)
			parsed := Record{Kind: r.Kind, Key: r.Key, Value: r.Value}
			gotAge, gotOK := RecordIdle(r)
			wantAge, wantOK := RecordIdle(parsed)
			if gotAge != wantAge || gotOK != wantOK {
				t.Errorf("%s aged %v: carried idle %v %v, encoding says %v %v", x.name, d, gotAge, gotOK, wantAge, wantOK)
			}
		}
	}
}
