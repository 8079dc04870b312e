package dataplane

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/telcolb/telcolb/bpf"
)

// lastRelease is the datapath object of the last released main (cec54c7),
// before maglev tables, fragments, packet types, conntrack events and the
// association record's ctraf/tmoved (carved out of pad2).
const lastRelease = "testdata/lb_bpfel_cec54c7.o"

// upgradeProbe is one packet sent through the old program before the
// upgrade and through the new one after it: the outputs must be the same
// bytes.
type upgradeProbe struct {
	what    string
	ifindex int
	frame   []byte
	ret     uint32
	out     []byte
}

// rawEntries reads the given keys of a map as raw bytes (absent keys are
// left out).
func rawEntries(t *testing.T, m *ebpf.Map, keys []uint32) map[uint32][]byte {
	t.Helper()
	out := map[uint32][]byte{}
	for _, k := range keys {
		var v []byte
		if err := m.Lookup(k, &v); err == nil {
			out[k] = v
		}
	}
	return out
}

// rawHash dumps a hash map as raw key -> value bytes.
func rawHash(t *testing.T, m *ebpf.Map) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	var k, v []byte
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[string(k)] = append([]byte(nil), v...)
	}
	if err := it.Err(); err != nil {
		t.Fatalf("dump %s: %v", m, err)
	}
	return out
}

// memberOffset is the byte offset and size of a top-level member of a
// struct type.
func memberOffset(t *testing.T, typ btf.Type, name string) (uint32, uint32) {
	t.Helper()
	s, ok := typ.(*btf.Struct)
	if !ok {
		t.Fatalf("%v is not a struct", typ)
	}
	for _, m := range s.Members {
		if m.Name == name {
			size, err := btf.Sizeof(m.Type)
			if err != nil {
				t.Fatal(err)
			}
			return m.Offset.Bytes(), uint32(size)
		}
	}
	t.Fatalf("%s has no member %q", s.Name, name)
	return 0, 0
}

// TestUpgradeFromLastReleaseIsByteExact loads today's datapath over the
// maps the last release (cec54c7) left pinned, with the same --max-conns so
// every map that kept its layout is reused as is, and the association
// records (whose pad2 became ctraf, tmoved and a smaller pad2) are
// converted by field name. Before the upgrade the old program carries
// TCP and UDP flows in default and fullnat mode and a multi-homed SCTP
// association over both its paths; the old record's pad2 is filled with
// ones, as a record written by anything but a zeroing writer could hold.
// After the upgrade: the service maps (slot tables included) read back byte
// for byte, no conntrack entry or association is lost, the record's old
// padding is zero (not a client address index and a "moved" bitmap that
// would shorten the hold-down), the counters are those the old program
// counted, every flow's next packet in both directions leaves exactly as
// the old program sent it, a fullnat flow's SNAT port is not handed to a
// new flow, and the maps the release did not have (maglev tables,
// fragments, the conntrack event ring) come up empty and work.
func TestUpgradeFromLastReleaseIsByteExact(t *testing.T) {
	// The association in default mode (the endpoint sees the client's
	// addresses) and in fullnat (it sees the LB's).
	for name, mode := range map[string]Mode{"sctp default": ModeDefault, "sctp fullnat": ModeFullNAT} {
		t.Run(name, func(t *testing.T) { testUpgradeFromLastRelease(t, mode) })
	}
}

func testUpgradeFromLastRelease(t *testing.T, sctpMode Mode) {
	e := newEnv(t)
	e.mhNeighbours()
	oldSpec, err := ebpf.LoadCollectionSpec(lastRelease)
	if err != nil {
		t.Fatal(err)
	}
	old, coll, oldEnv := onOldRelease(t, e, lastRelease)
	lb1 := e.ifindex("lb1")

	services := []Service{
		{ID: 3, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 4, 8080)},
		{ID: 4, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Mode: ModeFullNAT, Endpoints: testEndpoints(false, 4, 5353)},
		// One endpoint: the reply tuple of a new flow can only differ by its SNAT port.
		{ID: 5, VIP: vipV4, PortStart: 443, Proto: ProtoTCP, Mode: ModeFullNAT, Endpoints: testEndpoints(false, 1, 8443)},
		{ID: 6, VIP: vipV4, PortStart: 5000, Proto: ProtoUDP, Endpoints: testEndpoints(false, 1, 8080)},
		{ID: 8, VIP: vipV6, PortStart: 80, Proto: ProtoTCP, Mode: ModeFullNAT, Endpoints: testEndpoints(true, 2, 8080)},
	}
	for _, s := range services {
		if err := old.UpsertService(s); err != nil {
			t.Fatal(err)
		}
	}
	// The multi-homed association (service 60): INIT and INIT-ACK listing
	// two addresses each, so it has paths.
	sc := newSteerCase(t, oldEnv, 60, sctpMode, false)
	a := sc.a

	// Flows through the old program: each one's first packet, then its
	// next packets (both directions) recorded as probes.
	type flowSpec struct {
		first, next pkt
		svc         uint32
	}
	specs := []flowSpec{
		{tcpTo(clientV4, vipV4, 41000, 80, tcpSYN), tcpTo(clientV4, vipV4, 41000, 80, tcpACK), 3},
		{udpTo(clientV4, vipV4, 41001, 53), udpTo(clientV4, vipV4, 41001, 53), 4},
		{tcpTo(clientV4, vipV4, 41002, 443, tcpSYN), tcpTo(clientV4, vipV4, 41002, 443, tcpACK), 5},
		{udpTo(clientV4, vipV4, 41003, 5000), udpTo(clientV4, vipV4, 41003, 5000), 6},
		{udpTo(clientV4, vipV4, 41004, 53), udpTo(clientV4, vipV4, 41004, 53), 4},
		{tcpTo(clientV6, vipV6, 41005, 80, tcpSYN), tcpTo(clientV6, vipV6, 41005, 80, tcpACK), 8},
	}
	for _, f := range specs {
		if ret, _ := oldEnv.run(f.first.frame()); ret != actRedirect {
			t.Fatalf("first packet from port %d through the old program: verdict %d", f.first.sport, ret)
		}
	}
	var probes []*upgradeProbe
	conns := oldEnv.conns()
	for _, f := range specs {
		var c *Conn
		for i := range conns {
			if conns[i].Client.Port() == f.first.sport && conns[i].ServiceID == f.svc {
				c = &conns[i]
			}
		}
		if c == nil {
			t.Fatalf("no conntrack entry for client port %d", f.first.sport)
		}
		reply := pkt{srcMAC: epMAC(c.Endpoint), dstMAC: lbMAC1, src: c.Backend.Addr(), dst: c.Source.Addr(), proto: f.first.proto,
			sport: c.Backend.Port(), dport: c.Source.Port(), ttl: 64}
		if f.first.proto == 6 {
			reply.tcpFlags = tcpACK
		} else {
			reply.payload = []byte("pong")
		}
		probes = append(probes,
			&upgradeProbe{what: fmt.Sprintf("service %d client port %d, next packet", f.svc, f.first.sport), ifindex: e.ifindex0, frame: f.next.frame()},
			&upgradeProbe{what: fmt.Sprintf("service %d client port %d, reply", f.svc, f.first.sport), ifindex: lb1, frame: reply.frame()})
	}
	// The association over both paths: client DATA on each, the endpoint's
	// DATA from each of its addresses.
	sctpPkt := func(fromClient bool, src, dst netip.Addr) pkt {
		if fromClient {
			return pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: src, dst: dst, proto: 132, sport: sc.cport, dport: sc.vport, ttl: 64,
				sctpVtag: 0x2222, sctpChunks: sctpData(40)}
		}
		return pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: src, dst: dst, proto: 132, sport: sc.eprt, dport: sc.sport, ttl: 64,
			sctpVtag: 0x1111, sctpChunks: sctpData(41)}
	}
	probes = append(probes,
		&upgradeProbe{what: "SCTP client c1 -> vip", ifindex: e.ifindex0, frame: sctpPkt(true, a.c1, a.vip).frame()},
		&upgradeProbe{what: "SCTP client c2 -> vip2", ifindex: e.ifindex0, frame: sctpPkt(true, a.c2, a.vip2).frame()})
	if sctpMode == ModeDefault {
		probes = append(probes, &upgradeProbe{what: "SCTP endpoint e2 -> c2", ifindex: lb1, frame: sctpPkt(false, a.e2, a.c2).frame()})
	}
	probes = append(probes,
		// Last: the endpoint's packet to c1 answered by nothing from c1
		// since; the old program leaves it on c1's path.
		// (sc.src: c1 as the endpoint sees it, in fullnat the LB's source.)
		&upgradeProbe{what: "SCTP endpoint e1 -> c1", ifindex: lb1, frame: sctpPkt(false, a.e1, sc.src).frame()})
	for _, p := range probes {
		p.ret, p.out = oldEnv.runOn(old.objs.TcIngress, p.ifindex, p.frame)
		if p.ret != actRedirect {
			t.Fatalf("%s through the old program: verdict %d", p.what, p.ret)
		}
	}
	// The client's heartbeat from c2 makes c2 the live address while c1
	// stays unanswered: with the hold-down of a minute nothing is steered,
	// unless c1's "moved" bit were set (200 ms).
	time.Sleep(20 * time.Millisecond) // the datapath's clock is coarse
	hb := sctpPkt(true, a.c2, a.vip2)
	hb.sctpChunks = []byte{4, 0, 0, 12, 0, 1, 0, 8, 1, 2, 3, 4}
	if ret, _ := oldEnv.run(hb.frame()); ret != actRedirect {
		t.Fatalf("heartbeat through the old program: verdict %d", ret)
	}

	// Fill the old association record's pad2 with ones.
	oldAssocs := coll.Maps["assocs"]
	padOff, padSize := memberOffset(t, oldSpec.Maps["assocs"].Value, "pad2")
	if padSize != 4 {
		t.Fatalf("the old record's pad2 is %d bytes, this test expects cec54c7's 4", padSize)
	}
	oldRecs := rawHash(t, oldAssocs)
	if len(oldRecs) != 1 {
		t.Fatalf("%d association records before the upgrade, want 1", len(oldRecs))
	}
	for k, v := range oldRecs {
		for i := padOff; i < padOff+padSize; i++ {
			v[i] = 0xff
		}
		if err := oldAssocs.Put([]byte(k), v); err != nil {
			t.Fatal(err)
		}
	}

	// What must read back unchanged.
	ids := []uint32{3, 4, 5, 6, 8, 60}
	var epKeys []uint32
	for _, id := range ids {
		for ep := uint32(0); ep < MaxEndpoints; ep++ {
			epKeys = append(epKeys, id*MaxEndpoints+ep)
		}
	}
	type snapshot struct {
		services, vips            map[string][]byte
		infos, eps, sel, vipLists map[uint32][]byte
		svcStats                  map[uint32][]bpf.LbCounters
		steerStats                map[uint32][]uint64
		ct                        map[bpf.LbCtKey]bpf.LbCtVal
	}
	take := func(d *Datapath) snapshot {
		s := snapshot{
			services: rawHash(t, d.objs.Services), vips: rawHash(t, d.objs.Vips),
			infos: rawEntries(t, d.objs.SvcInfos, ids), eps: rawEntries(t, d.objs.Endpoints, epKeys),
			sel: rawEntries(t, d.objs.SelTables, ids), vipLists: rawEntries(t, d.objs.SvcVipList, ids),
			svcStats: map[uint32][]bpf.LbCounters{}, steerStats: map[uint32][]uint64{},
		}
		for _, id := range ids {
			s.svcStats[id] = perCPU(t, d.objs.SvcStats, id)
			var v []uint64
			if err := d.objs.SteerStats.Lookup(id, &v); err != nil {
				t.Fatal(err)
			}
			s.steerStats[id] = v
		}
		var err error
		if s.ct, err = d.snapshot(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := take(old)
	// The slot counters of every endpoint in use, by the slot the
	// endpoint entry names.
	epCounters := func(d *Datapath, m *ebpf.Map, eps map[uint32][]byte) map[uint32][]bpf.LbCounters {
		out := map[uint32][]bpf.LbCounters{}
		for k, v := range eps {
			var ep bpf.LbEndpoint
			if err := binary.Read(bytes.NewReader(v), binary.LittleEndian, &ep); err != nil {
				t.Fatal(err)
			}
			if ep.Family != 0 {
				out[k] = perCPU(t, m, uint32(ep.Stats))
			}
		}
		return out
	}
	slotsBefore := epCounters(old, coll.Maps["ep_slot_stats"], before.eps)
	if len(slotsBefore) == 0 {
		t.Fatal("no endpoint slot counters before the upgrade")
	}

	// The new daemon, same --max-conns as the release's.
	maxConns := int(oldSpec.Maps["conntrack"].MaxEntries)
	d, err := Load(Config{PinPath: e.pinPath, MaxConns: maxConns, Logger: testLogger()})
	if err != nil {
		t.Fatalf("load over the last release's maps: %v", err)
	}
	e.d = d
	coll.Close()
	attachAndMigrate(t, d)
	for _, m := range d.Migrations() {
		if m.Lost != 0 || m.CountersReset {
			t.Fatalf("migration of %s: %+v, want nothing lost or reset", m.Map, m)
		}
	}
	if m, ok := migrationOf(d, "assocs"); !ok || m.Migrated != 1 {
		t.Fatalf("assocs migration %+v (reported %v), want the record converted", m, ok)
	}

	// The association record: every old field where it was, the old
	// padding zero.
	newRecs := rawHash(t, d.objs.Assocs)
	if len(newRecs) != 1 {
		t.Fatalf("%d association records after the upgrade, want 1", len(newRecs))
	}
	for k, ov := range oldRecs {
		nv, ok := newRecs[k]
		if !ok {
			t.Fatalf("association %x lost", k)
		}
		want := append([]byte(nil), ov...)
		for i := padOff; i < padOff+padSize; i++ {
			want[i] = 0
		}
		if !bytes.Equal(nv, want) {
			t.Fatalf("association record after the upgrade\n got %x\nwant %x", nv, want)
		}
		var rec bpf.LbAssoc
		if err := binary.Read(bytes.NewReader(nv), binary.LittleEndian, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Ctraf != 0 || rec.Tmoved != 0 || rec.Pad2 != 0 {
			t.Fatalf("ctraf %d tmoved %#x pad2 %#x after the upgrade, want zero", rec.Ctraf, rec.Tmoved, rec.Pad2)
		}
	}

	check := func(when string) {
		t.Helper()
		after := take(d)
		for _, c := range []struct {
			name    string
			got, wt any
		}{
			{"services", after.services, before.services}, {"vips", after.vips, before.vips},
			{"svc_infos", after.infos, before.infos}, {"endpoints", after.eps, before.eps},
			{"sel_tables", after.sel, before.sel}, {"svc_vip_list", after.vipLists, before.vipLists},
			{"svc_stats", after.svcStats, before.svcStats}, {"steer_stats", after.steerStats, before.steerStats},
			{"conntrack", after.ct, before.ct},
		} {
			if !reflect.DeepEqual(c.got, c.wt) {
				t.Fatalf("%s: %s differs from what the last release left:\n got %v\nwant %v", when, c.name, c.got, c.wt)
			}
		}
		if got := epCounters(d, d.objs.EpSlotStats, after.eps); !reflect.DeepEqual(got, slotsBefore) {
			t.Fatalf("%s: endpoint slot counters %v, want %v", when, got, slotsBefore)
		}
	}
	check("after the upgrade")
	// The daemon programs its services again at start: same entries, same
	// slots.
	for _, s := range append(services, sc.svc) {
		e.upsert(s)
	}
	check("after programming the services again")
	// The new maps start empty.
	if n := e.fragEntries(); n != 0 {
		t.Fatalf("%d fragment entries after the upgrade", n)
	}
	if n := len(rawHash(t, d.objs.Maglev)); n != 0 {
		t.Fatalf("%d maglev tables after the upgrade, no maglev service yet", n)
	}
	rd, err := d.ConntrackChanges()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if recs, err := rd.Poll(); err != nil || len(recs) != 0 {
		t.Fatalf("conntrack events before any packet of the new program: %d, %v", len(recs), err)
	}

	// Wait past the 200 ms a "moved" bit would give, then every probe
	// through the new program: byte for byte the old program's output.
	// Backwards: the endpoint's packet to c1 first, before any client
	// packet from c1 could clear that bit.
	time.Sleep(300 * time.Millisecond)
	for i := len(probes) - 1; i >= 0; i-- {
		p := probes[i]
		ret, out := e.runOn(d.objs.TcIngress, p.ifindex, p.frame)
		if ret != p.ret {
			t.Fatalf("%s after the upgrade: verdict %d, the last release gave %d", p.what, ret, p.ret)
		}
		diffHex(t, p.what+" after the upgrade", out, p.out)
	}
	if got := e.conn(60).Steering; got != nil && got.Active {
		t.Fatalf("association steered after the upgrade: %+v", got)
	}
	for _, id := range ids {
		if st := e.stats(id, 1); st.Sessions != sumSessions(before.svcStats[id]) {
			t.Fatalf("service %d: %d sessions after the upgrade, %d before: a flow was taken for new", id, st.Sessions, sumSessions(before.svcStats[id]))
		}
	}

	// SNAT ports stay reserved: a new fullnat flow to the same (only)
	// endpoint whose first SNAT port is the one of the flow from port
	// 41002 gets another one.
	var taken netip.AddrPort
	for _, c := range e.conns() {
		if c.ServiceID == 5 && c.Client.Port() == 41002 {
			taken = c.Source
		}
	}
	other, oport := collidingClient(t, taken.Port(), 443, 6)
	syn := tcpTo(other, vipV4, oport, 443, tcpSYN)
	if ret, _ := e.run(syn.frame()); ret != actRedirect {
		t.Fatalf("colliding SYN after the upgrade: verdict %d", ret)
	}
	// The new flow is announced through the event ring (both directions).
	recs, err := rd.Poll()
	if err != nil {
		t.Fatal(err)
	}
	announced := false
	for _, r := range recs {
		announced = announced || (!r.Deleted && r.Kind == RecordConntrack)
	}
	if !announced {
		t.Fatalf("no conntrack event for a new flow after the upgrade: %+v", recs)
	}
	for _, c := range e.conns() {
		if c.ServiceID == 5 && c.Client == netip.AddrPortFrom(other, oport) && c.Source == taken {
			t.Fatalf("the upgraded flow's SNAT source %s was handed to a new flow", taken)
		}
	}

	// Fragments of a datagram to the upgraded UDP service follow the first.
	payload := make([]byte, 3000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	fp := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 17, sport: 40001, dport: 5000, payload: payload}
	fw := fp
	fw.dst, fw.dport, fw.ttl = epAddr(false, 0), 8080, 63
	sent, want := fragment(fp.ip(), 0x1111, 1232, clientMAC, lbMAC0), fragment(fw.ip(), 0x1111, 1232, lbMAC1, epMAC(0))
	for i := range sent {
		ret, out := e.run(sent[i])
		if ret != actRedirect {
			t.Fatalf("fragment %d after the upgrade: verdict %d", i, ret)
		}
		diffHex(t, fmt.Sprintf("fragment %d after the upgrade", i), out, want[i])
	}

	// A maglev service after the upgrade: new flows go where the table says.
	eps := testEndpoints(false, 3, 8080)
	e.upsert(Service{ID: 9, VIP: vipV4, PortStart: 6000, Proto: ProtoUDP, Select: SelectMaglev, Endpoints: eps})
	tab := maglevTable(eps, MaglevTableSize)
	reached := map[netip.Addr]bool{}
	for sport := uint16(20000); sport < 20060; sport++ {
		ret, out := e.run(udpTo(clientV4, vipV4, sport, 6000).frame())
		got := dstOf(t, ret, out)
		if want := eps[tab[hashTupleGo(clientV4, vipV4, sport, 6000, 17)%uint32(MaglevTableSize)]].Addr; got != want {
			t.Fatalf("maglev flow from port %d went to %s, the table says %s", sport, got, want)
		}
		reached[got] = true
	}
	if len(reached) != len(eps) {
		t.Fatalf("maglev flows reached %d of %d endpoints", len(reached), len(eps))
	}
}

func sumSessions(c []bpf.LbCounters) uint64 {
	var n uint64
	for _, x := range c {
		n += x.Sessions
	}
	return n
}
