package dataplane

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/bpf"
)

// TestLastEntryEvents specifies which change events of one read are
// answered: an entry event whose key comes again later is dropped (the
// later one carries the entry's later state); association and deletion
// events are all kept, and so is the order of what is kept.
func TestLastEntryEvents(t *testing.T) {
	key := func(n byte) bpf.LbCtKey { return bpf.LbCtKey{Src: [16]byte{15: n}, Proto: 17} }
	entry := func(n byte) change { return change{LbCtEvent: bpf.LbCtEvent{Kind: bpf.CtEvEntry, Key: key(n)}} }
	deleted := func(n byte) change { return change{LbCtEvent: bpf.LbCtEvent{Kind: bpf.CtEvDeleted, Key: key(n)}} }
	assoc := func(n uint16) change {
		return change{LbCtEvent: bpf.LbCtEvent{Kind: bpf.CtEvAssoc, Assoc: bpf.LbAssocKey{Vport: n}}}
	}
	for _, tc := range []struct {
		name     string
		in, want []change
	}{
		{"none", nil, nil},
		{"one", []change{entry(1)}, []change{entry(1)}},
		{"new flow and its reply's state change", []change{entry(1), entry(1)}, []change{entry(1)}},
		{"other keys keep their order", []change{entry(1), entry(2), entry(1), entry(3)}, []change{entry(2), entry(1), entry(3)}},
		{"made again after its deletion", []change{entry(1), deleted(1), entry(1)}, []change{deleted(1), entry(1)}},
		{"deleted last", []change{entry(1), entry(1), deleted(1)}, []change{entry(1), deleted(1)}},
		{"deletions and associations all kept", []change{assoc(1), deleted(2), assoc(1), deleted(2)}, []change{assoc(1), deleted(2), assoc(1), deleted(2)}},
		{"an entry after its association stays after it", []change{entry(1), assoc(1), entry(1)}, []change{assoc(1), entry(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			got := lastEntryEvents(in)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %s, want %s", evNames(got), evNames(tc.want))
			}
			if !slices.Equal(in, tc.in) {
				t.Errorf("the input was changed: %s", evNames(in))
			}
		})
	}
}

func evNames(evs []change) string {
	var s []string
	for _, e := range evs {
		s = append(s, fmt.Sprintf("%d:%d/%d", e.Kind, e.Key.Src[15], e.Assoc.Vport))
	}
	return fmt.Sprint(s)
}

// flowAndReply opens a change reader on a fresh datapath, then a UDP flow
// (client port 42000 to VIP port 53 of service 9) and its endpoint's reply.
func flowAndReply(t *testing.T) (*env, *ChangeReader) {
	t.Helper()
	e := newEnv(t)
	e.upsert(Service{ID: 9, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Endpoints: testEndpoints(false, 1, 5353)})
	rd, err := e.d.ConntrackChanges()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.Close() })
	epVia(t, e.run, udpTo(clientV4, vipV4, 42000, 53).frame())
	reply := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: epAddr(false, 0), dst: clientV4, proto: 17, sport: 5353, dport: 42000, payload: []byte("pong")}
	if ret, out := e.runOn(e.d.objs.TcIngress, e.ifindex("lb1"), reply.frame()); ret != actRedirect {
		t.Fatalf("reply: verdict %d, out %x", ret, out)
	}
	return e, rd
}

// dropBehindReader deletes every conntrack entry straight from the maps,
// queueing no deletion to the change readers, and returns their keys.
func dropBehindReader(t *testing.T, e *env) []bpf.LbCtKey {
	t.Helper()
	var keys []bpf.LbCtKey
	if err := e.d.ct().each(func(k bpf.LbCtKey, _ *bpf.LbCtVal) { keys = append(keys, k) }); err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		if err := e.d.ct().delete(&keys[i]); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// TestAFlowAndItsReplyReadOnce: a new UDP flow's first packet and its
// endpoint's reply (a state change naming the same entry) read in one
// batch give each direction's record once.
func TestAFlowAndItsReplyReadOnce(t *testing.T) {
	e, rd := flowAndReply(t)
	recs, err := rd.Poll()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range recs {
		if r.Kind == RecordConntrack && !r.Deleted {
			seen[string(r.Key)]++
		}
	}
	if len(seen) != 2 || len(recs) != 2 {
		t.Fatalf("%d records of %d entries, want each direction's once", len(recs), len(seen))
	}
	// The record carries the reply's state change.
	for _, c := range e.conns() {
		if c.ServiceID == 9 && c.ReplyPackets != 1 {
			t.Fatalf("listed %+v, want the reply counted", c)
		}
	}
}

// TestEntryEventsCarryTheirEntries: an entry event's records come from the
// values the datapath put into the event, read after its change, not from
// the map when the event is read (two system calls an event, issue 15): a
// flow's records are the dump's byte for byte even when its entries are
// gone from the map by the time the events are read.
func TestEntryEventsCarryTheirEntries(t *testing.T) {
	e, rd := flowAndReply(t)
	at := e.d.now()
	e.d.now = func() uint64 { return at } // one clock: equal ages
	dump, err := e.d.DumpConntrack()
	if err != nil {
		t.Fatal(err)
	}
	if len(dump) != 2 {
		t.Fatalf("dump has %d records, want the flow's 2", len(dump))
	}
	// Gone behind the reader's back (no deletion queued to it).
	dropBehindReader(t, e)
	recs, err := rd.Poll()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for _, r := range dump {
		want[string(r.Key)] = r.Value
	}
	if len(recs) != 2 {
		t.Fatalf("%d records, want the flow's 2", len(recs))
	}
	for _, r := range recs {
		w, ok := want[string(r.Key)]
		if r.Deleted || !ok || !bytes.Equal(r.Value, w) {
			t.Errorf("record %x (deleted %v): value %x, want the dump's %x", r.Key, r.Deleted, r.Value, w)
		}
	}
}

// TestDaemonDeletionInTheSameReadWins: the daemon's deletions (ageing)
// and the ring's events are not ordered with each other, so an entry event
// read with a deletion of its entry is answered from the map: a flow made
// and aged out before one read ends is deleted on the peers, never made
// again after its deletion. Another flow's events in that read still
// carry their values (the ageing deletes while it runs, so on a busy node
// most reads hold some deletion).
func TestDaemonDeletionInTheSameReadWins(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 9, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Endpoints: testEndpoints(false, 1, 5353)})
	rd, err := e.d.ConntrackChanges()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	epVia(t, e.run, udpTo(clientV4, vipV4, 42000, 53).frame())
	if n, err := e.d.ageOnce(e.d.now() + uint64(time.Hour)); err != nil || n != 1 {
		t.Fatalf("ageing removed %d flows (%v), want 1", n, err)
	}
	// Another flow, its entries then gone behind the reader's back: its
	// records can only come from its events' values.
	epVia(t, e.run, udpTo(clientV4, vipV4, 42001, 53).frame())
	other := dropBehindReader(t, e)
	recs, err := rd.Poll()
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]Record{}
	var order []bool
	for _, r := range recs {
		last[string(r.Key)] = r
		order = append(order, r.Deleted)
	}
	if len(last) != 4 || len(other) != 2 {
		t.Fatalf("records of %d entries (%d of the second flow in the map), want both flows' 2 each", len(last), len(other))
	}
	for k, r := range last {
		aged := bytes.Contains([]byte(k), []byte{0xa4, 0x10}) // source port 42000
		if aged != r.Deleted {
			t.Errorf("entry %x (of the aged flow: %v): its last record deleted %v (records deleted, in order: %v)", k, aged, r.Deleted, order)
		}
	}
}

// FuzzDecodeChange: a ring record of any bytes decodes to an event or an
// error, never a panic; an entry event carries its entry, decoded from
// the record's bytes alone, the same whether its memory is new or a
// slab's reused slot (what a read does after the first one).
func FuzzDecodeChange(f *testing.F) {
	var ev bpf.LbCtEntryEvent
	ev.Kind, ev.Found = bpf.CtEvEntry, bpf.CtEvfEntry|bpf.CtEvfPeer
	ev.Key = bpf.LbCtKey{Src: [16]byte{15: 1}, Sport: 42000, Dport: 53, Proto: 17}
	ev.Val.LastSeen, ev.PeerVal.FibNs = 7, 9 // the first and the last words set
	f.Add(slices.Clone(view(&ev)))
	f.Add(slices.Clone(view(&ev))[:len(view(&ev))-1])
	del := bpf.LbCtEvent{Kind: bpf.CtEvDeleted, Key: ev.Key}
	f.Add(slices.Clone(view(&del)))
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var slab, newSlab entrySlab
		// A used slot: what the reused memory held before must not leak
		// into this event.
		old := view(slab.next())
		for i := range old {
			old[i] = 0xff
		}
		slab.reset()
		fresh, err1 := decodeChangeInto(raw, &newSlab)
		reused, err2 := decodeChangeInto(raw, &slab)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("decoded %v with new memory, %v with a slab's", err1, err2)
		}
		if err1 != nil {
			return
		}
		if (fresh.entry == nil) != (reused.entry == nil) || fresh.LbCtEvent != reused.LbCtEvent {
			t.Fatalf("events differ: %+v and %+v", fresh.LbCtEvent, reused.LbCtEvent)
		}
		if fresh.entry == nil {
			if fresh.Kind == bpf.CtEvEntry {
				t.Fatal("an entry event without its entry")
			}
			return
		}
		for name, e := range map[string]*bpf.LbCtEntryEvent{"new memory": fresh.entry, "a reused slot": reused.entry} {
			got, want := view(e), raw[:len(view(e))]
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("the entry decoded into %s differs from the record at byte %d of %d", name, i, len(got))
				}
			}
		}
	})
}

// TestDecodeChangeRefusesShortRecords: a record too short for its kind
// is an error naming the sizes, never a partly read event.
func TestDecodeChangeRefusesShortRecords(t *testing.T) {
	var ev bpf.LbCtEntryEvent
	ev.Kind = bpf.CtEvEntry
	full := view(&ev)
	for _, tc := range []struct {
		raw  []byte
		want string
	}{
		{[]byte{1, 0}, "2 bytes, want at least 4"},
		{full[:len(full)-1], fmt.Sprintf("entry event of %d bytes, want %d", len(full)-1, len(full))},
		{[]byte{3, 0, 0, 0, 1}, "5 bytes, want"},
	} {
		var slab entrySlab
		if _, err := decodeChangeInto(tc.raw, &slab); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%d bytes: error %v, want %q", len(tc.raw), err, tc.want)
		}
	}
}
