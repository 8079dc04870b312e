package dataplane

import (
	"errors"
	"testing"

	"github.com/telcolb/telcolb/bpf"
)

// endpointSlots reads the counter slot of each of a service's endpoint
// entries, as the datapath does.
func (e *env) endpointSlots(id uint32, n int) []uint16 {
	e.t.Helper()
	out := make([]uint16, n)
	for i := range out {
		var ep bpf.LbEndpoint
		if err := e.d.objs.Endpoints.Lookup(id*MaxEndpoints+uint32(i), &ep); err != nil {
			e.t.Fatal(err)
		}
		out[i] = ep.Stats
	}
	return out
}

// TestEndpointCountersLiveInSharedSlots: each endpoint has its own counter
// slot, a removed endpoint gives its slot back, a slot handed out again
// starts from zero, and a restart keeps every slot and count.
func TestEndpointCountersLiveInSharedSlots(t *testing.T) {
	e := newEnv(t)
	a := Service{ID: 5, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Endpoints: testEndpoints(false, 4, 5353)}
	b := Service{ID: 6, VIP: vipV4, PortStart: 54, Proto: ProtoUDP, Endpoints: testEndpoints(false, 2, 5353)}
	e.upsert(a)
	e.upsert(b)
	slots := map[uint16]bool{}
	for _, s := range append(e.endpointSlots(5, 4), e.endpointSlots(6, 2)...) {
		if s == 0 || slots[s] {
			t.Fatalf("slots %v/%v: want 6 distinct non-zero slots", e.endpointSlots(5, 4), e.endpointSlots(6, 2))
		}
		slots[s] = true
	}
	if used, total := e.d.EndpointSlots(); used != 6 || total != 65535 {
		t.Fatalf("slots in use %d of %d, want 6 of 65535", used, total)
	}
	// Round robin: 8 flows, 2 to each endpoint of service 5; 3 to service 6.
	for i := 0; i < 8; i++ {
		e.run(udpTo(clientV4, vipV4, uint16(30000+i), 53).frame())
	}
	for i := 0; i < 3; i++ {
		e.run(udpTo(clientV4, vipV4, uint16(31000+i), 54).frame())
	}
	st := e.stats(5, 4)
	for i, ep := range st.Endpoints {
		if ep.Packets != 2 || ep.Sessions != 2 {
			t.Fatalf("service 5 endpoint %d: %+v, want 2 packets and sessions", i, ep)
		}
	}
	if st6 := e.stats(6, 2); st6.Endpoints[0].Packets+st6.Endpoints[1].Packets != 3 {
		t.Fatalf("service 6 endpoints %+v, want 3 packets between them", st6.Endpoints)
	}

	// Shrink to 2: two slots back; grow to 3: the new endpoint starts at 0
	// whichever slot it gets.
	removed := e.endpointSlots(5, 4)[2:]
	a.Endpoints = testEndpoints(false, 2, 5353)
	e.upsert(a)
	if used, _ := e.d.EndpointSlots(); used != 4 {
		t.Fatalf("after shrinking: %d slots in use, want 4", used)
	}
	if got := e.endpointSlots(5, 4)[2:]; got[0] != 0 || got[1] != 0 {
		t.Fatalf("removed endpoints still hold slots %v (were %v)", got, removed)
	}
	a.Endpoints = testEndpoints(false, 3, 5353)
	e.upsert(a)
	// (Its active count is conntrack's: the connections of the removed
	// endpoint are still there, under the same index.)
	if ep := e.stats(5, 3).Endpoints[2]; ep.Packets != 0 || ep.Bytes != 0 || ep.Sessions != 0 {
		t.Fatalf("a re-added endpoint inherited counters: %+v", ep)
	}
	kept := e.stats(5, 3)

	// A restart: same slots, same counts.
	wantSlots := e.endpointSlots(5, 3)
	e.reload(Config{})
	if got := e.endpointSlots(5, 3); got[0] != wantSlots[0] || got[1] != wantSlots[1] || got[2] != wantSlots[2] {
		t.Fatalf("slots after restart %v, were %v", got, wantSlots)
	}
	if used, _ := e.d.EndpointSlots(); used != 5 {
		t.Fatalf("after restart: %d slots in use, want 5", used)
	}
	if got := e.stats(5, 3); got.Packets != kept.Packets || got.Endpoints[0] != kept.Endpoints[0] || got.Endpoints[1] != kept.Endpoints[1] {
		t.Fatalf("counters after restart %+v, were %+v", got, kept)
	}

	// Delete: every slot back, and the next service reusing them starts
	// from zero.
	if err := e.d.DeleteService(6); err != nil {
		t.Fatal(err)
	}
	if used, _ := e.d.EndpointSlots(); used != 3 {
		t.Fatalf("after delete: %d slots in use, want 3", used)
	}
	e.upsert(Service{ID: 7, VIP: vipV4, PortStart: 55, Proto: ProtoUDP, Endpoints: testEndpoints(false, 2, 5353)})
	for i, ep := range e.stats(7, 2).Endpoints {
		if ep != (EndpointStats{}) {
			t.Fatalf("new service endpoint %d inherited counters: %+v", i, ep)
		}
	}
}

// TestEndpointSlotsRunningOutIsACapacityError: a service that needs more
// slots than are free is refused as a whole (ErrCapacity, nothing taken),
// the services already programmed keep theirs.
func TestEndpointSlotsRunningOutIsACapacityError(t *testing.T) {
	e := newEnv(t)
	// A pool of 4 usable slots stands for the 65,535 (filling those takes
	// 1,024 services of 64 endpoints).
	e.d.pool = newSlotPool(5)
	e.upsert(Service{ID: 1, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 3, 80)})
	err := e.d.UpsertService(Service{ID: 2, VIP: vipV4, PortStart: 81, Proto: ProtoTCP, Endpoints: testEndpoints(false, 2, 80)})
	if !errors.Is(err, ErrCapacity) {
		t.Fatalf("service needing 2 of 1 free slots: %v, want ErrCapacity", err)
	}
	if used, _ := e.d.EndpointSlots(); used != 3 {
		t.Fatalf("%d slots in use after the refusal, want 3", used)
	}
	if _, ok := e.d.slots[2]; ok {
		t.Fatal("the refused service holds slots")
	}
	// Growing service 1 by one still fits; by two more does not.
	e.upsert(Service{ID: 1, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 4, 80)})
	err = e.d.UpsertService(Service{ID: 1, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 5, 80)})
	if !errors.Is(err, ErrCapacity) {
		t.Fatalf("growing past the pool: %v, want ErrCapacity", err)
	}
	if got := e.endpointSlots(1, 4); got[3] == 0 {
		t.Fatalf("service 1 lost a slot after a refused change: %v", got)
	}
	if ret, _ := e.run(tcpTo(clientV4, vipV4, 40000, 80, tcpSYN).frame()); ret != actRedirect {
		t.Fatalf("service 1 after a refused change: verdict %d", ret)
	}
}
