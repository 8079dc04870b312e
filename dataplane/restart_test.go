package dataplane

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/telcolb/telcolb/bpf"
)

// Restarts, upgrades and ID reuse: what the datapath promises across them.

func (e *env) stats(id uint32, n int) ServiceStats {
	e.t.Helper()
	st, err := e.d.ServiceStats(id, n)
	if err != nil {
		e.t.Fatalf("stats: %v", err)
	}
	return st
}

func TestDeletedServiceCountersStartFromZero(t *testing.T) {
	e := newEnv(t)
	svc := Service{ID: 7, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Select: SelectLeastConn, Endpoints: testEndpoints(false, 2, 5353)}
	e.upsert(svc)
	for i := 0; i < 3; i++ {
		if ret, _ := e.run(udpTo(clientV4, vipV4, uint16(3000+i), 53).frame()); ret != actRedirect {
			t.Fatalf("verdict %d", ret)
		}
	}
	if st := e.stats(7, 2); st.Packets != 3 || st.Sessions != 3 || st.Active != 3 {
		t.Fatalf("before delete: %+v, want 3 packets, sessions and active", st)
	}
	if err := e.d.DeleteService(7); err != nil {
		t.Fatal(err)
	}
	// The next service given ID 7 is another service.
	e.upsert(Service{ID: 7, VIP: netip.MustParseAddr("10.9.0.77"), PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 2, 8080)})
	st := e.stats(7, 2)
	if st.Packets != 0 || st.Bytes != 0 || st.Sessions != 0 || st.Active != 0 {
		t.Fatalf("new service with a reused ID inherited counters: %+v", st)
	}
	for i, ep := range st.Endpoints {
		if ep != (EndpointStats{}) {
			t.Fatalf("endpoint %d inherited counters: %+v", i, ep)
		}
	}
}

// sumActive is the active count of every endpoint of a service.
func (e *env) sumActive(id uint32) uint64 {
	e.t.Helper()
	return e.stats(id, MaxEndpoints).Active
}

// origEntries counts the connections conntrack holds for a service.
func (e *env) origEntries(id uint32) uint64 {
	e.t.Helper()
	snap, err := e.d.snapshot()
	if err != nil {
		e.t.Fatal(err)
	}
	var n uint64
	for _, v := range snap {
		if v.Svc == id && v.Flags&(ctFReply|ctFPath|ctFReleased) == 0 {
			n++
		}
	}
	return n
}

func TestActiveCountsAreRecountedFromConntrack(t *testing.T) {
	// 64 entries: 32 connections; 300 flows evict most of them without
	// the datapath ever releasing their count.
	e := newEnvConns(t, 64)
	const id = 9
	e.upsert(Service{ID: id, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Select: SelectLeastConn, Endpoints: testEndpoints(false, 4, 5353)})
	for i := 0; i < 300; i++ {
		if ret, _ := e.run(udpTo(clientV4, vipV4, uint16(10000+i), 53).frame()); ret != actRedirect {
			t.Fatalf("flow %d: verdict %d", i, ret)
		}
	}
	live := e.origEntries(id)
	if live == 0 || live > 32 {
		t.Fatalf("%d live connections in a 64-entry table", live)
	}
	t.Logf("after 300 flows: %d live connections, %d counted active before the recount", live, e.sumActive(id))
	// One ageing round (nothing is idle yet) recounts.
	if _, err := e.d.ageOnce(e.d.now()); err != nil {
		t.Fatal(err)
	}
	if got := e.sumActive(id); got != live {
		t.Fatalf("after ageing: %d active, conntrack holds %d connections", got, live)
	}
	per := e.stats(id, 4)
	for i, ep := range per.Endpoints {
		if ep.Active > 8+1 {
			t.Errorf("endpoint %d: %d active of %d: leastconn spread lost", i, ep.Active, live)
		}
	}
	if err := e.d.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	if got := e.sumActive(id); got != 0 {
		t.Fatalf("after flush: %d active, want 0", got)
	}
}

// flow is one connection a test carries across a restart.
type flow struct {
	first, next pkt
	ep          int
	conn        Conn
}

// openFlows opens a TCP and a UDP connection through run and records where
// they went.
func openFlows(t *testing.T, run func([]byte) (uint32, []byte), conns func() []Conn) []*flow {
	t.Helper()
	return openFlowList(t, run, conns, []*flow{
		{first: tcpTo(clientV4, vipV4, 41000, 80, tcpSYN), next: tcpTo(clientV4, vipV4, 41000, 80, tcpACK)},
		{first: udpTo(clientV4, vipV4, 41001, 53), next: udpTo(clientV4, vipV4, 41001, 53)},
	})
}

// openFlowList sends each flow's first packet through run and records
// where it went; the flows' client ports must be distinct.
func openFlowList(t *testing.T, run func([]byte) (uint32, []byte), conns func() []Conn, fs []*flow) []*flow {
	t.Helper()
	for _, f := range fs {
		ret, out := run(f.first.frame())
		f.ep = epOf(t, ret, out)
	}
	for _, c := range conns() {
		for _, f := range fs {
			if c.Client.Port() == f.first.sport {
				f.conn = c
			}
		}
	}
	for _, f := range fs {
		if !f.conn.Client.IsValid() {
			t.Fatalf("no conntrack entry for client port %d", f.first.sport)
		}
	}
	return fs
}

// checkFlowsContinue sends each flow's next packet through the (new)
// datapath: it must reach the same endpoint from the same source, as an
// established connection (no new session).
func (e *env) checkFlowsContinue(fs []*flow, sessionsBefore map[uint32]uint64) {
	e.t.Helper()
	for _, f := range fs {
		var got *Conn
		for _, c := range e.conns() {
			if c.Client.Port() == f.first.sport {
				got = &c
			}
		}
		if got == nil {
			e.t.Fatalf("connection from port %d lost across the restart", f.first.sport)
		}
		if got.Backend != f.conn.Backend || got.Source != f.conn.Source || got.ServiceID != f.conn.ServiceID {
			e.t.Fatalf("connection from port %d changed: %+v, was %+v", f.first.sport, *got, f.conn)
		}
		ret, out := e.run(f.next.frame())
		if ep := epOf(e.t, ret, out); ep != f.ep {
			e.t.Fatalf("port %d: next packet went to endpoint %d, was %d", f.first.sport, ep, f.ep)
		}
	}
	for id, before := range sessionsBefore {
		if st := e.stats(id, 4); st.Sessions != before {
			e.t.Fatalf("service %d: %d sessions after the restart, %d before: a flow was taken for new", id, st.Sessions, before)
		}
	}
}

// The two conntrack maps are sized apart: an IPv4-mostly node gives the
// IPv6 map (IPv6 and NAT64 flows) a small size and keeps the IPv4 map's,
// and changing only the IPv6 size on restart keeps the flows of both.
func TestMaxConnsIPv6SizesOnlyTheIPv6Map(t *testing.T) {
	e := newEnvConns(t, 4096)
	if got := e.d.objs.Conntrack.MaxEntries(); got != 4096 {
		t.Fatalf("IPv6 conntrack holds %d entries without --max-conns-ipv6, want --max-conns' 4096", got)
	}
	e.upsert(Service{ID: 3, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 4, 8080)})
	e.upsert(Service{ID: 5, VIP: vipV6, PortStart: 53, Proto: ProtoUDP, Mode: ModeFullNAT, Endpoints: testEndpoints(true, 4, 5353)})
	fs := openFlowList(t, e.run, e.conns, []*flow{
		{first: tcpTo(clientV4, vipV4, 41000, 80, tcpSYN), next: tcpTo(clientV4, vipV4, 41000, 80, tcpACK)},
		{first: udpTo(clientV6, vipV6, 41002, 53), next: udpTo(clientV6, vipV6, 41002, 53)},
	})
	sessions := map[uint32]uint64{3: e.stats(3, 4).Sessions, 5: e.stats(5, 4).Sessions}

	e.reload(Config{MaxConns: 4096, MaxConnsIPv6: 512})
	if got := e.d.objs.Conntrack.MaxEntries(); got != 512 {
		t.Fatalf("IPv6 conntrack holds %d entries, want --max-conns-ipv6's 512", got)
	}
	if got := e.d.objs.Conntrack4.MaxEntries(); got != 4096 {
		t.Fatalf("IPv4 conntrack holds %d entries, want --max-conns' 4096", got)
	}
	m, ok := migrationOf(e.d, "conntrack")
	if !ok || m.Lost != 0 || m.Migrated != 2 {
		t.Fatalf("IPv6 conntrack migration %+v (reported %v), want the flow's 2 entries migrated, none lost", m, ok)
	}
	if m, ok := migrationOf(e.d, "conntrack4"); ok && m.Lost != 0 {
		t.Fatalf("IPv4 conntrack lost entries when only the IPv6 size changed: %+v", m)
	}
	e.checkFlowsContinue(fs, sessions)
	if e.sumActive(3) != 1 || e.sumActive(5) != 1 {
		t.Fatalf("active counts %d/%d after the resize, want 1/1", e.sumActive(3), e.sumActive(5))
	}
}

func migrationOf(d *Datapath, name string) (MapMigration, bool) {
	for _, m := range d.Migrations() {
		if m.Map == name {
			return m, true
		}
	}
	return MapMigration{}, false
}

func TestMaxConnsChangeKeepsConnections(t *testing.T) {
	e := newEnvConns(t, 4096)
	e.upsert(Service{ID: 3, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 4, 8080)})
	e.upsert(Service{ID: 4, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Mode: ModeFullNAT, Endpoints: testEndpoints(false, 4, 5353)})
	fs := openFlows(t, e.run, e.conns)
	sessions := map[uint32]uint64{3: e.stats(3, 4).Sessions, 4: e.stats(4, 4).Sessions}

	e.reload(Config{MaxConns: 8192})
	// IPv4 flows: their entries are conntrack4's.
	m, ok := migrationOf(e.d, "conntrack4")
	if !ok || m.Lost != 0 || m.Migrated != 4 {
		t.Fatalf("conntrack4 migration %+v (reported %v), want 4 entries migrated, none lost", m, ok)
	}
	if got := e.d.objs.Conntrack4.MaxEntries(); got != 8192 {
		t.Fatalf("conntrack4 holds %d entries, want the new 8192", got)
	}
	e.checkFlowsContinue(fs, sessions)
	if e.sumActive(3) != 1 || e.sumActive(4) != 1 {
		t.Fatalf("active counts %d/%d after migration, want 1/1", e.sumActive(3), e.sumActive(4))
	}

	// Shrinking below what is live: the newest connections stay, the rest
	// is counted and reported, never silently gone.
	for i := 0; i < 99; i++ {
		e.run(udpTo(clientV4, vipV4, uint16(20000+i), 53).frame())
	}
	// The datapath's clock is coarse (jiffies): make the newest distinct.
	time.Sleep(30 * time.Millisecond)
	newest := uint16(20099)
	e.run(udpTo(clientV4, vipV4, newest, 53).frame())
	e.reload(Config{MaxConns: 64})
	m, _ = migrationOf(e.d, "conntrack4")
	if m.Lost == 0 || m.Migrated == 0 || m.Entries != m.Lost+m.Migrated {
		t.Fatalf("shrinking migration %+v: want some lost, some migrated, all accounted for", m)
	}
	if e.d.ConntrackNotMigrated() != uint64(m.Lost) {
		t.Fatalf("ConntrackNotMigrated %d, report %+v", e.d.ConntrackNotMigrated(), m)
	}
	found := false
	for _, c := range e.conns() {
		found = found || c.Client.Port() == newest
	}
	if !found {
		snap, _ := e.d.snapshot()
		for k, v := range snap {
			t.Logf("%d/%d flags %x last %d", htons(k.Sport), htons(k.Dport), v.Flags, v.LastSeen)
		}
		t.Fatalf("the newest connection did not survive the shrink: %+v", m)
	}
	if got, live := e.sumActive(4), e.origEntries(4); got != live {
		t.Fatalf("after shrinking: %d active, %d connections", got, live)
	}
}

// onOldRelease destroys e's datapath and loads object (an earlier
// release) on the same pin path, as that release's daemon would have left
// it: where every upgrade test starts. oldEnv is e driving the old
// datapath.
func onOldRelease(t *testing.T, e *env, object string) (old *Datapath, coll *ebpf.Collection, oldEnv *env) {
	t.Helper()
	if err := e.d.Destroy(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(e.pinPath, 0o755); err != nil {
		t.Fatal(err)
	}
	old, coll = oldDatapath(t, object, e.pinPath)
	o := *e
	o.d = old
	return old, coll, &o
}

// oldDatapath loads the datapath object of an earlier release with its maps
// pinned at pinPath, as that release's daemon would have left them, and
// programs services through it.
func oldDatapath(t *testing.T, object, pinPath string) (*Datapath, *ebpf.Collection) {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(object)
	if err != nil {
		t.Fatalf("old object: %v", err)
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinPath}})
	if err != nil {
		t.Fatalf("load old object: %v", err)
	}
	t.Cleanup(func() { coll.Close() })
	// The service maps of this release have today's layout (checked by
	// the BTF comparison in Load), so today's writer can program them.
	d := &Datapath{log: testLogger(), maxServices: spec.Maps["svc_infos"].MaxEntries, now: monotonicNow,
		keysByID: map[uint32][]bpf.LbSvcKey{}, vipRefs: map[bpf.LbAddr16]int{}, slots: map[uint32][]uint16{}}
	d.objs.Services, d.objs.Vips, d.objs.SvcInfos = coll.Maps["services"], coll.Maps["vips"], coll.Maps["svc_infos"]
	d.objs.Endpoints, d.objs.SelTables, d.objs.SvcVipList = coll.Maps["endpoints"], coll.Maps["sel_tables"], coll.Maps["svc_vip_list"]
	d.objs.Conntrack, d.objs.SvcStats = coll.Maps["conntrack"], coll.Maps["svc_stats"]
	d.objs.EpActive = coll.Maps["ep_active"]
	// Releases with SCTP association records (nil before them).
	d.objs.Assocs = coll.Maps["assocs"]
	// Maps those releases did not have (the address filter, endpoint
	// counters by slot): today's writer gets throwaway ones, so the new
	// datapath must rebuild its own (the filter from conntrack, the slots
	// from the services, their counts from ep_stats). The slots it writes
	// into struct endpoint were padding to those releases' programs.
	cur, err := bpf.LoadLb()
	if err != nil {
		t.Fatal(err)
	}
	throwaway := func(name string) *ebpf.Map {
		s := cur.Maps[name].Copy()
		s.Pinning = ebpf.PinNone
		m, err := ebpf.NewMap(s)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	d.objs.AddrFilter = coll.Maps["addr_filter"]
	if d.objs.AddrFilter == nil {
		d.objs.AddrFilter = throwaway(bpf.LbMapAddrFilter)
	}
	d.objs.EpSlotStats = throwaway(bpf.LbMapEpSlotStats)
	d.pool = newSlotPool(d.objs.EpSlotStats.MaxEntries())
	// Nor had they path steering counters: a throwaway map reads as zero.
	if d.objs.SteerStats == nil {
		d.objs.SteerStats = throwaway(bpf.LbMapSteerStats)
	}
	// Nor slow path counters.
	if d.objs.SlowStats == nil {
		d.objs.SlowStats = throwaway(bpf.LbMapSlowStats)
	}
	// Nor maglev tables (their services did not exist then).
	if d.objs.Maglev == nil {
		d.objs.Maglev = throwaway(bpf.LbMapMaglev)
	}
	d.objs.TcIngress = coll.Programs["tc_ingress"]
	if d.objs.TcIngress == nil {
		t.Fatalf("old object has no tc_ingress program: %v", coll.Programs)
	}
	return d, coll
}

// TestUpgradeFromPreviousReleaseKeepsConnections loads today's datapath over
// the maps of earlier releases: 57d5762, and 74f64fb (the last one with
// 1,024 services and endpoint counters indexed service x 64). Connections
// carry on, and every per-CPU counter is carried CPU by CPU, including what
// the old program counts between the new one's load and its attach.
func TestUpgradeFromPreviousReleaseKeepsConnections(t *testing.T) {
	for _, rel := range []string{"57d5762", "74f64fb"} {
		t.Run(rel, func(t *testing.T) { testUpgradeFrom(t, "testdata/lb_bpfel_"+rel+".o") })
	}
}

// perCPU reads one per-CPU counter entry.
func perCPU(t *testing.T, m *ebpf.Map, key uint32) []bpf.LbCounters {
	t.Helper()
	var v []bpf.LbCounters
	if err := m.Lookup(key, &v); err != nil {
		t.Fatalf("%s[%d]: %v", m, key, err)
	}
	return v
}

func addCounters(a, b []bpf.LbCounters) []bpf.LbCounters {
	out := make([]bpf.LbCounters, len(a))
	for i := range a {
		out[i] = bpf.LbCounters{Packets: a[i].Packets + b[i].Packets, Bytes: a[i].Bytes + b[i].Bytes, Sessions: a[i].Sessions + b[i].Sessions}
	}
	return out
}

func subCounters(a, b []bpf.LbCounters) []bpf.LbCounters {
	out := make([]bpf.LbCounters, len(a))
	for i := range a {
		out[i] = bpf.LbCounters{Packets: a[i].Packets - b[i].Packets, Bytes: a[i].Bytes - b[i].Bytes, Sessions: a[i].Sessions - b[i].Sessions}
	}
	return out
}

func testUpgradeFrom(t *testing.T, object string) {
	e := newEnv(t)
	// Start from what the previous release left behind: its maps pinned,
	// its program having handled the connections.
	old, coll, oldEnv := onOldRelease(t, e, object)
	for _, s := range []Service{
		{ID: 3, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 4, 8080)},
		{ID: 4, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Mode: ModeFullNAT, Endpoints: testEndpoints(false, 4, 5353)},
	} {
		if err := old.UpsertService(s); err != nil {
			t.Fatal(err)
		}
	}
	runOld := func(f []byte) (uint32, []byte) { return oldEnv.runOn(old.objs.TcIngress, e.ifindex0, f) }
	fs := openFlows(t, runOld, oldEnv.conns)
	for i := 0; i < 5; i++ {
		runOld(udpTo(clientV4, vipV4, uint16(42000+i), 53).frame())
	}
	sessions := map[uint32]uint64{3: oldEnv.stats(3, 4).Sessions, 4: oldEnv.stats(4, 4).Sessions}
	oldSvc, oldEp := coll.Maps["svc_stats"], coll.Maps["ep_stats"]
	type counted struct{ svc, ep uint32 }
	before := map[counted][]bpf.LbCounters{}
	for _, id := range []uint32{3, 4} {
		before[counted{id, 99}] = perCPU(t, oldSvc, id)
		for ep := uint32(0); ep < 4; ep++ {
			before[counted{id, ep}] = perCPU(t, oldEp, id*MaxEndpoints+ep)
		}
	}

	// The new daemon, with another --max-conns on top. The old program
	// stays attached (here: runnable) until the new one replaces it.
	d, err := Load(Config{PinPath: e.pinPath, MaxConns: 8192, Logger: testLogger()})
	if err != nil {
		t.Fatalf("load over the previous release's maps: %v", err)
	}
	e.d = d
	// Counted by the old program after the first pass: the second one
	// carries it.
	if ret, _ := runOld(fs[1].next.frame()); ret != actRedirect {
		t.Fatalf("old program after the new load: verdict %d", ret)
	}
	late := map[counted][]bpf.LbCounters{}
	for k, v := range before {
		if k.ep == 99 {
			late[k] = subCounters(perCPU(t, oldSvc, k.svc), v)
		} else {
			late[k] = subCounters(perCPU(t, oldEp, k.svc*MaxEndpoints+k.ep), v)
		}
	}
	coll.Close()
	attachAndMigrate(t, d)
	// Both directions of 2 + 5 connections.
	if m, _ := migrationOf(d, "conntrack"); m.Lost != 0 || m.Migrated != 14 {
		t.Fatalf("conntrack migration %+v, want 14 entries migrated, none lost", m)
	}
	for _, name := range []string{"svc_stats", "ep_stats"} {
		m, ok := migrationOf(d, name)
		if !ok || m.Lost != 0 || m.CountersReset || m.Migrated == 0 {
			t.Fatalf("%s migration %+v (reported %v), want its counters carried, none lost", name, m, ok)
		}
	}
	if _, err := os.Stat(e.pinPath + "/ep_stats"); !os.IsNotExist(err) {
		t.Fatalf("the retired ep_stats is still pinned: %v", err)
	}
	used, _ := d.EndpointSlots()
	if used != 8 {
		t.Fatalf("%d endpoint counter slots in use, want 8 (2 services x 4 endpoints)", used)
	}
	// Per CPU, every counter is what the old program counted in all.
	for k, v := range before {
		want := addCounters(v, late[k])
		var got []bpf.LbCounters
		if k.ep == 99 {
			got = perCPU(t, d.objs.SvcStats, k.svc)
		} else {
			got = perCPU(t, d.objs.EpSlotStats, uint32(d.slotOf(k.svc, k.ep)))
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("service %d endpoint %d (99: the service): per-CPU counters %+v, want %+v", k.svc, k.ep, got, want)
		}
	}
	e.checkFlowsContinue(fs, sessions)
}

// TestLayoutChangeIsConverted replaces the pinned conntrack with one in the
// layout of release 51d1522, whose ct_val had the same size as today's but
// three bytes of padding where cport now is: the kernel's compatibility
// check passes it, so without the BTF comparison every entry would be read
// with shifted fields. Its IPv4 entries, converted, then move into
// conntrack4.
func TestLayoutChangeIsConverted(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 3, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 4, 8080)})
	e.upsert(Service{ID: 4, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Mode: ModeFullNAT, Endpoints: testEndpoints(false, 4, 5353)})
	fs := openFlows(t, e.run, e.conns)
	sessions := map[uint32]uint64{3: e.stats(3, 4).Sessions, 4: e.stats(4, 4).Sessions}
	before, err := e.d.snapshot()
	if err != nil {
		t.Fatal(err)
	}

	oldSpec, err := ebpf.LoadCollectionSpec("testdata/lb_bpfel_51d1522.o")
	if err != nil {
		t.Fatal(err)
	}
	newSpec, err := bpf.LoadLb()
	if err != nil {
		t.Fatal(err)
	}
	ms := oldSpec.Maps["conntrack"].Copy()
	ms.MaxEntries = 4096
	if ms.ValueSize != newSpec.Maps["conntrack"].ValueSize {
		t.Fatalf("the old ct_val is %d bytes, today's %d: this test wants a same-size layout change", ms.ValueSize, newSpec.Maps["conntrack"].ValueSize)
	}
	if same, _ := sameLayout(ms.Value, newSpec.Maps["conntrack"].Value); same {
		t.Fatal("the old ct_val has today's layout")
	}
	toOld, err := newConverter(newSpec.Maps["conntrack"].Value, ms.Value, false)
	if err != nil {
		t.Fatal(err)
	}
	ms.Pinning = ebpf.PinNone
	om, err := ebpf.NewMap(ms)
	if err != nil {
		t.Fatalf("create old-layout conntrack: %v", err)
	}
	defer om.Close()
	// That release kept every entry in conntrack (40-byte keys, IPv4
	// ones too) and had no conntrack4.
	if len(before) == 0 {
		t.Fatal("no entries")
	}
	for k, v := range before {
		ov, err := toOld.convert(rawOf(&v))
		if err != nil {
			t.Fatal(err)
		}
		if err := om.Put(rawOf(&k), ov); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"conntrack", "conntrack4"} {
		cur, err := ebpf.LoadPinnedMap(e.pinPath+"/"+name, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = cur.Unpin()
		cur.Close()
	}
	if err := om.Pin(e.pinPath + "/conntrack"); err != nil {
		t.Fatal(err)
	}

	d, err := Load(Config{PinPath: e.pinPath, MaxConns: 4096, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	attachAndMigrate(t, d)
	m, _ := migrationOf(d, "conntrack")
	if m.Lost != 0 || m.Migrated != len(before) {
		t.Fatalf("migration %+v, want %d migrated", m, len(before))
	}
	// Then moved: the entries are IPv4 connections'.
	if m, _ := migrationOf(d, "conntrack4"); m.Lost != 0 || m.Migrated != len(before) {
		t.Fatalf("move into conntrack4 %+v, want %d moved", m, len(before))
	}
	after, err := d.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sortedKeys(before), sortedKeys(after)) {
		t.Fatalf("keys differ after conversion")
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("entry %x converted to %+v, was %+v", k.Src, after[k], v)
		}
	}
	e.checkFlowsContinue(fs, sessions)
}

func sortedKeys(m map[bpf.LbCtKey]bpf.LbCtVal) []string {
	var out []string
	for k := range m {
		out = append(out, fmt.Sprintf("%x", k))
	}
	sort.Strings(out)
	return out
}

func TestConverterMapsFieldsByName(t *testing.T) {
	u8, u16, u32 := &btf.Int{Name: "u8", Size: 1}, &btf.Int{Name: "u16", Size: 2}, &btf.Int{Name: "u32", Size: 4}
	oldT := &btf.Struct{Name: "v", Size: 8, Members: []btf.Member{
		{Name: "a", Type: u16, Offset: 0}, {Name: "pad", Type: &btf.Array{Type: u8, Index: u32, Nelems: 2}, Offset: 16}, {Name: "b", Type: u32, Offset: 32},
	}}
	newT := &btf.Struct{Name: "v", Size: 12, Members: []btf.Member{
		{Name: "b", Type: u32, Offset: 0}, {Name: "a", Type: u32, Offset: 32}, {Name: "c", Type: u32, Offset: 64},
	}}
	c, err := newConverter(oldT, newT, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.convert([]byte{0x34, 0x12, 9, 9, 0x78, 0x56, 0, 0})
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x78, 0x56, 0, 0, 0x34, 0x12, 0, 0, 0, 0, 0, 0}; !bytes.Equal(got, want) {
		t.Fatalf("converted %x, want %x", got, want)
	}
	// Narrowing keeps values that fit and refuses the others.
	back, err := newConverter(newT, oldT, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := back.convert([]byte{1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0}); err == nil {
		t.Fatal("a value wider than its new field was truncated")
	}
	// A key may not gain a field (it would change the entry's identity).
	if _, err := newConverter(oldT, newT, true); err == nil {
		t.Fatal("key converter accepted a new field")
	}
}

func TestUpsertRefusesIDsBeyondTheDatapath(t *testing.T) {
	e := newEnv(t)
	max := e.d.MaxServiceID()
	if max != MaxServices-1 {
		t.Fatalf("MaxServiceID %d, the object's arrays hold %d", max, MaxServices)
	}
	err := e.d.UpsertService(Service{ID: max + 1, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 1, 80)})
	if err == nil {
		t.Fatal("ID beyond the arrays accepted")
	}
	e.upsert(Service{ID: max, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 1, 80)})
}
