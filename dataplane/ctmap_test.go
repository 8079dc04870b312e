package dataplane

import (
	"testing"

	"github.com/telcolb/telcolb/bpf"
)

// oneMapRelease is the datapath object of f3df3b5, the last one keeping
// every family's conntrack entries in conntrack (40-byte keys).
const oneMapRelease = "testdata/lb_bpfel_f3df3b5.o"

// epVia runs a frame and names the endpoint it was sent to.
func epVia(t *testing.T, run func([]byte) (uint32, []byte), frame []byte) int {
	t.Helper()
	ret, out := run(frame)
	return epOf(t, ret, out)
}

// ctDump reads both conntrack maps as they are in the kernel: conntrack4 by
// its 16-byte keys, conntrack by its 40-byte ones.
func ctDump(t *testing.T, d *Datapath) (map[bpf.LbCtKey4]bpf.LbCtVal, map[bpf.LbCtKey]bpf.LbCtVal) {
	t.Helper()
	v4 := map[bpf.LbCtKey4]bpf.LbCtVal{}
	all := map[bpf.LbCtKey]bpf.LbCtVal{}
	var (
		k4 bpf.LbCtKey4
		k  bpf.LbCtKey
		v  bpf.LbCtVal
	)
	it := d.objs.Conntrack4.Iterate()
	for it.Next(&k4, &v) {
		v4[k4] = v
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	it = d.objs.Conntrack.Iterate()
	for it.Next(&k, &v) {
		all[k] = v
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return v4, all
}

func ctKeyOfPkt(p pkt) bpf.LbCtKey {
	return bpf.LbCtKey{Src: addr16(p.src), Dst: addr16(p.dst), Sport: htons(p.sport), Dport: htons(p.dport), Proto: p.proto}
}

// An IPv4 connection's two entries are in conntrack4 under the 16-byte
// key, and its established packets are found there; an IPv6 connection's
// stay in conntrack.
func TestIPv4EntriesLiveInTheCompactMap(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 3, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 4, 8080)})
	e.upsert(Service{ID: 5, VIP: vipV6, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(true, 4, 8080)})
	syn4 := tcpTo(clientV4, vipV4, 41000, 80, tcpSYN)
	syn6 := tcpTo(clientV6, vipV6, 41000, 80, tcpSYN)
	ep4 := epVia(t, e.run, syn4.frame())
	epVia(t, e.run, syn6.frame())

	v4, all := ctDump(t, e.d)
	if len(v4) != 2 {
		t.Fatalf("conntrack4 holds %d entries, want the IPv4 connection's 2: %+v", len(v4), v4)
	}
	k := ctKeyOfPkt(syn4)
	orig, ok := v4[ctKey4Of(&k)]
	if !ok {
		t.Fatalf("no conntrack4 entry under the 16-byte key of %+v: %+v", k, v4)
	}
	if orig.NatDst != addr16(epAddr(false, ep4)) {
		t.Fatalf("IPv4 entry toward %v, the packet went to endpoint %d", orig.NatDst, ep4)
	}
	if _, ok := v4[ctKey4Of(&bpf.LbCtKey{Src: orig.NatDst, Dst: orig.NatSrc, Sport: orig.NatDport, Dport: orig.NatSport, Proto: k.Proto})]; !ok {
		t.Fatalf("no reply entry in conntrack4: %+v", v4)
	}
	if len(all) != 2 {
		t.Fatalf("conntrack holds %d entries, want the IPv6 connection's 2: %+v", len(all), all)
	}
	for k := range all {
		if ctKeyIs4(&k) {
			t.Fatalf("an IPv4 key in conntrack: %+v", k)
		}
	}
	if _, ok := all[ctKeyOfPkt(syn6)]; !ok {
		t.Fatalf("no conntrack entry for the IPv6 connection: %+v", all)
	}

	// Established: found in conntrack4 (same endpoint, its counters move).
	if ep := epVia(t, e.run, tcpTo(clientV4, vipV4, 41000, 80, tcpACK).frame()); ep != ep4 {
		t.Fatalf("next IPv4 packet to endpoint %d, was %d", ep, ep4)
	}
	v4, _ = ctDump(t, e.d)
	if got := v4[ctKey4Of(&k)].Packets; got != 2 {
		t.Fatalf("IPv4 entry counted %d packets, want 2", got)
	}
	if st := e.stats(3, 4); st.Sessions != 1 {
		t.Fatalf("%d sessions, want 1: the established packet was taken for new", st.Sessions)
	}
}

// What the daemon reads of conntrack sees the IPv4 entries: the listing,
// the change events and the dump HA peers get, ageing and the flush.
func TestDaemonReadersSeeIPv4Entries(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 4, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Endpoints: testEndpoints(false, 4, 5353)})
	rd, err := e.d.ConntrackChanges()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	p := udpTo(clientV4, vipV4, 42000, 53)
	ep := epVia(t, e.run, p.frame())

	if c := e.conn(4); c.Client.Port() != 42000 || c.Backend.Addr() != epAddr(false, ep) {
		t.Fatalf("listed connection %+v, want client port 42000 to endpoint %d", c, ep)
	}
	live := func(recs []Record) int {
		n := 0
		for _, r := range recs {
			if r.Kind == RecordConntrack && !r.Deleted {
				n++
			}
		}
		return n
	}
	recs, err := rd.Poll()
	if err != nil {
		t.Fatal(err)
	}
	if n := live(recs); n != 2 {
		t.Fatalf("change records carry %d live conntrack entries, want both directions: %+v", n, recs)
	}
	dump, err := e.d.DumpConntrack()
	if err != nil {
		t.Fatal(err)
	}
	if n := live(dump); n != 2 {
		t.Fatalf("the HA dump has %d conntrack entries, want 2", n)
	}

	// Idle past the UDP timeout: aged out of conntrack4.
	n, err := e.d.ageOnce(monotonicNow() + 3600e9)
	if err != nil || n != 1 {
		t.Fatalf("ageing removed %d connections (%v), want 1", n, err)
	}
	if v4, _ := ctDump(t, e.d); len(v4) != 0 {
		t.Fatalf("conntrack4 after ageing: %+v", v4)
	}
	if recs, err = rd.Poll(); err != nil {
		t.Fatal(err)
	}
	deleted := 0
	for _, r := range recs {
		if r.Kind == RecordConntrack && r.Deleted {
			deleted++
		}
	}
	if deleted != 2 {
		t.Fatalf("ageing sent %d deletions to the HA reader, want 2", deleted)
	}

	epVia(t, e.run, p.frame())
	if err := e.d.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	if v4, _ := ctDump(t, e.d); len(v4) != 0 {
		t.Fatalf("conntrack4 after a flush: %+v", v4)
	}
}

// TestUpgradeFromOneConntrackMapKeepsFlows loads today's datapath over the
// maps f3df3b5 left pinned (same --max-conns, so conntrack is reused as it
// is, with its IPv4 entries in it). The old program keeps finding its
// flows until the new one is attached; a flow it opens in between is
// carried too; afterwards every IPv4 entry is in conntrack4 and none is
// left in conntrack, the IPv6 ones stay, and every flow continues to the
// same endpoint as an established one.
func TestUpgradeFromOneConntrackMapKeepsFlows(t *testing.T) {
	e := newEnv(t)
	old, coll, oldEnv := onOldRelease(t, e, oneMapRelease)
	for _, s := range []Service{
		{ID: 3, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 4, 8080)},
		{ID: 4, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Mode: ModeFullNAT, Endpoints: testEndpoints(false, 4, 5353)},
		{ID: 5, VIP: vipV6, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(true, 4, 8080)},
	} {
		if err := old.UpsertService(s); err != nil {
			t.Fatal(err)
		}
	}
	runOld := func(f []byte) (uint32, []byte) { return oldEnv.runOn(old.objs.TcIngress, e.ifindex0, f) }
	fs := openFlows(t, runOld, oldEnv.conns)
	v6 := &flow{first: tcpTo(clientV6, vipV6, 41002, 80, tcpSYN), next: tcpTo(clientV6, vipV6, 41002, 80, tcpACK)}
	v6.ep = epVia(t, runOld, v6.first.frame())

	d, err := Load(Config{PinPath: e.pinPath, MaxConns: 4096, Logger: testLogger()})
	if err != nil {
		t.Fatalf("load over the one-map conntrack: %v", err)
	}
	e.d = d
	// Until the new program is attached the old one forwards, from
	// conntrack: its flows are still there.
	if ret, _ := runOld(fs[0].next.frame()); ret != actRedirect {
		t.Fatalf("old program after the new load: verdict %d", ret)
	}
	late := &flow{first: udpTo(clientV4, vipV4, 41003, 53), next: udpTo(clientV4, vipV4, 41003, 53)}
	late.ep = epVia(t, runOld, late.first.frame())
	for _, c := range oldEnv.conns() {
		for _, f := range append(fs, v6, late) {
			if c.Client.Port() == f.first.sport {
				f.conn = c
			}
		}
	}
	sessions := map[uint32]uint64{3: oldEnv.stats(3, 4).Sessions, 4: oldEnv.stats(4, 4).Sessions, 5: oldEnv.stats(5, 4).Sessions}
	coll.Close()
	attachAndMigrate(t, d)

	// Both directions of the three IPv4 connections.
	if m, ok := migrationOf(d, bpf.LbMapConntrack4); !ok || m.Entries != 6 || m.Migrated != 6 || m.Lost != 0 {
		t.Fatalf("conntrack4 migration %+v (reported %v), want 6 entries moved, none lost", m, ok)
	}
	if n := d.ConntrackNotMigrated(); n != 0 {
		t.Fatalf("%d conntrack entries not migrated", n)
	}
	v4, all := ctDump(t, d)
	if len(v4) != 6 {
		t.Fatalf("conntrack4 holds %d entries, want 6", len(v4))
	}
	if len(all) != 2 {
		t.Fatalf("conntrack holds %d entries, want the IPv6 connection's 2: %+v", len(all), all)
	}
	for k := range all {
		if ctKeyIs4(&k) {
			t.Fatalf("an IPv4 key left in conntrack: %+v", k)
		}
	}
	e.checkFlowsContinue(append(fs, v6, late), sessions)
}
