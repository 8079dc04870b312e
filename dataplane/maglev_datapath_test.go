package dataplane

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/telcolb/telcolb/bpf"
)

// dstOf is the destination address of a forwarded IPv4 frame.
func dstOf(t *testing.T, ret uint32, out []byte) netip.Addr {
	t.Helper()
	if ret != actRedirect {
		t.Fatalf("verdict %d, want redirect", ret)
	}
	return netip.AddrFrom4([4]byte(out[30:34]))
}

// TestMaglevNodesAgreeOnNewFlows: two datapaths loaded independently (own
// maps, as on two LB nodes), given the same endpoints in a different
// order, send every new flow to the same endpoint, the one the table
// predicts from hash(5-tuple) mod LB_MAGLEV_M. When an endpoint is added,
// established flows stay where conntrack put them and new flows follow the
// new table.
func TestMaglevNodesAgreeOnNewFlows(t *testing.T) {
	e := newEnv(t)
	d2, err := Load(Config{PinPath: testPinPath(t), MaxConns: 4096, Logger: testLogger()})
	if err != nil {
		t.Fatalf("load the second datapath: %v", err)
	}
	t.Cleanup(func() { _ = d2.Destroy() })

	eps := testEndpoints(false, 3, 8080)
	rev := slices.Clone(eps)
	slices.Reverse(rev)
	svc := Service{ID: 7, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Select: SelectMaglev, Endpoints: eps}
	other := svc
	other.Endpoints = rev
	e.upsert(svc)
	if err := d2.UpsertService(other); err != nil {
		t.Fatal(err)
	}

	send := func(d *Datapath, sport uint16) netip.Addr {
		ret, out := e.runOn(d.objs.TcIngress, e.ifindex0, udpTo(clientV4, vipV4, sport, 53).frame())
		return dstOf(t, ret, out)
	}
	tables := map[int][]uint8{}
	predict := func(eps []Endpoint, sport uint16) netip.Addr {
		tab, ok := tables[len(eps)]
		if !ok {
			tab = maglevTable(eps, MaglevTableSize)
			tables[len(eps)] = tab
		}
		return eps[tab[hashTupleGo(clientV4, vipV4, sport, 53, 17)%uint32(MaglevTableSize)]].Addr
	}
	const flows = 150
	first := map[uint16]netip.Addr{}
	per := map[netip.Addr]int{}
	for sport := uint16(20000); sport < 20000+flows; sport++ {
		a, b := send(e.d, sport), send(d2, sport)
		if a != b {
			t.Fatalf("flow from port %d: node 1 chose %s, node 2 %s", sport, a, b)
		}
		if want := predict(eps, sport); a != want {
			t.Fatalf("flow from port %d went to %s, the table says %s", sport, a, want)
		}
		first[sport] = a
		per[a]++
	}
	if len(per) != len(eps) {
		t.Fatalf("%d flows reached %d of %d endpoints: %v", flows, len(per), len(eps), per)
	}

	// A fourth endpoint: about a quarter of the tuples now map to it.
	grown := testEndpoints(false, 4, 8080)
	svc.Endpoints = grown
	other.Endpoints = append([]Endpoint{grown[3]}, rev...)
	e.upsert(svc)
	if err := d2.UpsertService(other); err != nil {
		t.Fatal(err)
	}
	remapped := 0
	for sport := uint16(20000); sport < 20000+flows; sport++ {
		if got := send(e.d, sport); got != first[sport] {
			t.Fatalf("established flow from port %d moved from %s to %s", sport, first[sport], got)
		}
		if predict(grown, sport) != first[sport] {
			remapped++
		}
	}
	if remapped == 0 {
		t.Fatalf("no tuple maps elsewhere once an endpoint is added: the check above tests nothing")
	}
	for sport := uint16(30000); sport < 30000+flows; sport++ {
		a, b := send(e.d, sport), send(d2, sport)
		if a != b || a != predict(grown, sport) {
			t.Fatalf("new flow from port %d: node 1 %s, node 2 %s, table %s", sport, a, b, predict(grown, sport))
		}
	}
	t.Logf("%d of %d established flows would map elsewhere now and stayed", remapped, flows)
}

// TestMaglevTableFollowsTheService: the table is written with the service,
// removed when the service changes selection or is deleted, and the number
// of maglev services is bounded with an error naming the selection.
func TestMaglevTableFollowsTheService(t *testing.T) {
	e := newEnv(t)
	if got := int(e.d.objs.Maglev.MaxEntries()); got != MaxMaglevServices {
		t.Fatalf("maglev map holds %d services, MaxMaglevServices says %d", got, MaxMaglevServices)
	}
	has := func(id uint32) bool {
		var v []byte
		return e.d.objs.Maglev.Lookup(id, &v) == nil
	}
	s := Service{ID: 3, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Select: SelectMaglev, Endpoints: testEndpoints(false, 2, 80)}
	e.upsert(s)
	if !has(3) {
		t.Fatal("no maglev table after upsert")
	}
	s.Select = SelectHash
	e.upsert(s)
	if has(3) {
		t.Fatal("maglev table kept after switching to hash")
	}
	s.Select = SelectMaglev
	e.upsert(s)
	if err := e.d.DeleteService(3); err != nil {
		t.Fatal(err)
	}
	if has(3) {
		t.Fatal("maglev table kept after delete")
	}
	for i := 0; i < MaxMaglevServices; i++ {
		v := netip.AddrFrom4([4]byte{10, 9, byte(1 + i/200), byte(1 + i%200)})
		e.upsert(Service{ID: uint32(100 + i), VIP: v, PortStart: 80, Proto: ProtoTCP, Select: SelectMaglev, Endpoints: testEndpoints(false, 1, 80)})
	}
	err := e.d.UpsertService(Service{ID: 99, VIP: vipV4, PortStart: 81, Proto: ProtoTCP, Select: SelectMaglev, Endpoints: testEndpoints(false, 1, 80)})
	if !errors.Is(err, ErrMaglevCapacity) || !errors.Is(err, ErrCapacity) {
		t.Fatalf("service %d past the maglev limit: %v, want ErrMaglevCapacity", MaxMaglevServices+1, err)
	}
	if e.d.objs.Services.Lookup(&bpf.LbSvcKey{Vip: addr16(vipV4), Port: htons(81), Proto: uint8(ProtoTCP)}, new(uint32)) == nil {
		t.Fatal("the refused service was programmed")
	}
	// A maglev service already holding a table is updated at the limit.
	e.upsert(Service{ID: 100, VIP: netip.AddrFrom4([4]byte{10, 9, 1, 1}), PortStart: 80, Proto: ProtoTCP, Select: SelectMaglev, Endpoints: testEndpoints(false, 2, 80)})
	t.Logf("refused: %v", err)
}
