package dataplane

import (
	"fmt"
	"slices"
	"testing"

	"github.com/telcolb/telcolb/bpf"
)

// TestLastEntryEvents specifies which change events of one read are
// answered: an entry event whose key comes again later is dropped (both
// would be answered with the entry's state at read time); association and
// deletion events are all kept, and so is the order of what is kept.
func TestLastEntryEvents(t *testing.T) {
	key := func(n byte) bpf.LbCtKey { return bpf.LbCtKey{Src: [16]byte{15: n}, Proto: 17} }
	entry := func(n byte) bpf.LbCtEvent { return bpf.LbCtEvent{Kind: bpf.CtEvEntry, Key: key(n)} }
	deleted := func(n byte) bpf.LbCtEvent { return bpf.LbCtEvent{Kind: bpf.CtEvDeleted, Key: key(n)} }
	assoc := func(n uint16) bpf.LbCtEvent {
		return bpf.LbCtEvent{Kind: bpf.CtEvAssoc, Assoc: bpf.LbAssocKey{Vport: n}}
	}
	for _, tc := range []struct {
		name     string
		in, want []bpf.LbCtEvent
	}{
		{"none", nil, nil},
		{"one", []bpf.LbCtEvent{entry(1)}, []bpf.LbCtEvent{entry(1)}},
		{"new flow and its reply's state change", []bpf.LbCtEvent{entry(1), entry(1)}, []bpf.LbCtEvent{entry(1)}},
		{"other keys keep their order", []bpf.LbCtEvent{entry(1), entry(2), entry(1), entry(3)}, []bpf.LbCtEvent{entry(2), entry(1), entry(3)}},
		{"made again after its deletion", []bpf.LbCtEvent{entry(1), deleted(1), entry(1)}, []bpf.LbCtEvent{deleted(1), entry(1)}},
		{"deleted last", []bpf.LbCtEvent{entry(1), entry(1), deleted(1)}, []bpf.LbCtEvent{entry(1), deleted(1)}},
		{"deletions and associations all kept", []bpf.LbCtEvent{assoc(1), deleted(2), assoc(1), deleted(2)}, []bpf.LbCtEvent{assoc(1), deleted(2), assoc(1), deleted(2)}},
		{"an entry after its association stays after it", []bpf.LbCtEvent{entry(1), assoc(1), entry(1)}, []bpf.LbCtEvent{assoc(1), entry(1)}},
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

func evNames(evs []bpf.LbCtEvent) string {
	var s []string
	for _, e := range evs {
		s = append(s, fmt.Sprintf("%d:%d/%d", e.Kind, e.Key.Src[15], e.Assoc.Vport))
	}
	return fmt.Sprint(s)
}

// TestAFlowAndItsReplyReadOnce: a new UDP flow's first packet and its
// endpoint's reply (a state change naming the same entry) read in one
// batch give each direction's record once.
func TestAFlowAndItsReplyReadOnce(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 9, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Endpoints: testEndpoints(false, 1, 5353)})
	rd, err := e.d.ConntrackChanges()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	epVia(t, e.run, udpTo(clientV4, vipV4, 42000, 53).frame())
	reply := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: epAddr(false, 0), dst: clientV4, proto: 17, sport: 5353, dport: 42000, payload: []byte("pong")}
	if ret, out := e.runOn(e.d.objs.TcIngress, e.ifindex("lb1"), reply.frame()); ret != actRedirect {
		t.Fatalf("reply: verdict %d, out %x", ret, out)
	}
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
