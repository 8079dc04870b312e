package dataplane

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/telcolb/telcolb/bpf"
)

// HA conntrack sync between two independently loaded datapaths: A (the
// active node) and B (its peer) in one namespace, so their FIB lookups give
// the same MACs. Flows are opened on A; the records of A's change events
// (the ring buffer, never a dump) are imported into B; the next packets in
// both directions must leave B byte for byte as they leave A.

type haPair struct {
	a, b *env
	lb1  int
	rd   *ChangeReader
}

func newHAPair(t *testing.T) *haPair {
	a := newEnv(t)
	a.mhNeighbours()
	b := a.peer()
	rd, err := a.d.ConntrackChanges()
	if err != nil {
		t.Fatalf("change reader: %v", err)
	}
	t.Cleanup(func() { _ = rd.Close() })
	return &haPair{a: a, b: b, lb1: a.ifindex("lb1"), rd: rd}
}

// peer loads a second datapath (own pin path, not attached) in e's
// namespace.
func (e *env) peer() *env { return e.peerWith(Config{MaxConns: 4096}) }

func (e *env) peerWith(cfg Config) *env {
	e.t.Helper()
	pin := testPinPath(e.t)
	cfg.PinPath, cfg.Logger = pin, testLogger()
	d, err := Load(cfg)
	if err != nil {
		e.t.Fatalf("load peer datapath: %v", err)
	}
	p := &env{t: e.t, ns: e.ns, d: d, ifindex0: e.ifindex0, pinPath: pin}
	e.t.Cleanup(func() { _ = p.d.Destroy() })
	return p
}

func (h *haPair) sub(t *testing.T) *haPair {
	c := *h
	c.a = h.a.sub(t)
	b := *h.b
	b.t = t
	c.b = &b
	return &c
}

func (h *haPair) upsert(s Service) {
	h.a.upsert(s)
	h.b.upsert(s)
}

// sync takes A's pending change records and imports them into B.
func (h *haPair) sync(t *testing.T) []Record {
	t.Helper()
	recs, err := h.rd.Poll()
	if err != nil {
		t.Fatalf("read changes: %v", err)
	}
	if len(recs) == 0 {
		t.Fatal("no change records from A")
	}
	if err := h.b.d.ImportConntrack(recs); err != nil {
		t.Fatalf("import into B: %v", err)
	}
	return recs
}

// same runs frame on A and on B from interface ifindex: both must redirect
// it, with byte-identical output.
func (h *haPair) same(t *testing.T, what string, ifindex int, frame []byte) {
	t.Helper()
	ra, outA := h.a.runOn(h.a.d.objs.TcIngress, ifindex, frame)
	rb, outB := h.b.runOn(h.b.d.objs.TcIngress, ifindex, frame)
	if ra != actRedirect {
		t.Fatalf("%s: verdict on A %d, want redirect", what, ra)
	}
	if rb != ra {
		t.Fatalf("%s: verdict on B %d, on A %d", what, rb, ra)
	}
	diffHex(t, what+" (B against A)", outB, outA)
}

// normalized is a datapath's conntrack and association state without what
// is node-local (cached FIB results, times) and without the packet
// counters: a packet that changes no state sends no event, by design.
func normalized(t *testing.T, d *Datapath) (map[bpf.LbCtKey]bpf.LbCtVal, map[bpf.LbAssocKey]bpf.LbAssoc) {
	t.Helper()
	snap, err := d.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range snap {
		v.FibIfindex, v.FibMacs, v.FibNs, v.Created, v.LastSeen, v.Packets, v.Bytes = 0, [12]uint8{}, 0, 0, 0, 0, 0
		snap[k] = v
	}
	as := map[bpf.LbAssocKey]bpf.LbAssoc{}
	var (
		k bpf.LbAssocKey
		a bpf.LbAssoc
	)
	it := d.objs.Assocs.Iterate()
	for it.Next(&k, &a) {
		a.Cseen, a.Eask, a.Noroute, a.SteerSince = [4]uint64{}, [4]uint64{}, [4]uint64{}, 0
		as[k] = a
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return snap, as
}

// sameState: B holds exactly A's connections and associations.
func (h *haPair) sameState(t *testing.T, what string) {
	t.Helper()
	ca, aa := normalized(t, h.a.d)
	cb, ab := normalized(t, h.b.d)
	for k, v := range ca {
		if w, ok := cb[k]; !ok {
			t.Errorf("%s: entry %+v of A missing on B", what, k)
		} else if w != v {
			t.Errorf("%s: entry %+v differs\n A: %+v\n B: %+v", what, k, v, w)
		}
	}
	for k := range cb {
		if _, ok := ca[k]; !ok {
			t.Errorf("%s: entry %+v on B only", what, k)
		}
	}
	if !reflect.DeepEqual(aa, ab) {
		t.Errorf("%s: associations differ\n A: %+v\n B: %+v", what, aa, ab)
	}
	if t.Failed() {
		t.FailNow()
	}
}

func connFrom(t *testing.T, e *env, id uint32, cport uint16) Conn {
	t.Helper()
	for _, c := range e.conns() {
		if c.ServiceID == id && c.Client.Port() == cport {
			return c
		}
	}
	t.Fatalf("no connection of service %d from port %d", id, cport)
	return Conn{}
}

func TestImportedFlowsContinueByteExactOnThePeer(t *testing.T) {
	h := newHAPair(t)
	id := uint32(20)
	for _, proto := range []Proto{ProtoTCP, ProtoUDP} {
		for _, mode := range []Mode{ModeDefault, ModeFullNAT} {
			for _, v6 := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/v6=%v", protoNames[proto], modeNames[mode], v6), func(t *testing.T) {
					h := h.sub(t)
					id++
					client, vip := clientV4, vipV4
					if v6 {
						client, vip = clientV6, vipV6
					}
					vport := uint16(7000 + id)
					h.upsert(Service{ID: id, VIP: vip, PortStart: vport, Proto: proto, Mode: mode, Select: SelectRR,
						Endpoints: testEndpoints(v6, 2, 8080)})
					base := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: client, dst: vip, proto: uint8(proto), dport: vport, ttl: 64}
					// A flow only A has moves A's round robin on: the flow
					// under test goes to the endpoint B would not pick.
					other := base
					other.sport = 40000
					other, _, _ = openingPackets(proto, other, pkt{})
					if ret, _ := h.a.run(other.frame()); ret != actRedirect {
						t.Fatalf("other flow verdict %d", ret)
					}
					first := base
					first.sport = 41000
					first, _, _ = openingPackets(proto, first, pkt{})
					if ret, _ := h.a.run(first.frame()); ret != actRedirect {
						t.Fatalf("first packet verdict %d", ret)
					}
					// Synced after every packet: a record carries the entry
					// as it is when read, so a later sync would hide a
					// state change that sent no event.
					h.sync(t)
					h.sameState(t, "after the first packet")
					c := connFrom(t, h.a, id, 41000)
					if c.Endpoint != 1 {
						t.Fatalf("flow under test on endpoint %d, want 1", c.Endpoint)
					}
					reply := pkt{srcMAC: epMAC(c.Endpoint), dstMAC: lbMAC1, src: c.Backend.Addr(), dst: c.Source.Addr(),
						proto: uint8(proto), sport: c.Backend.Port(), dport: c.Source.Port(), ttl: 64}
					_, reply, second := openingPackets(proto, first, reply)
					if ret, _ := h.a.runOn(h.a.d.objs.TcIngress, h.lb1, reply.frame()); ret != actRedirect {
						t.Fatalf("reply verdict %d", ret)
					}
					h.sync(t)
					h.sameState(t, "after the reply")
					if ret, _ := h.a.run(second.frame()); ret != actRedirect {
						t.Fatalf("second packet verdict %d", ret)
					}
					if proto == ProtoTCP {
						// The handshake's last ACK made the flow ESTABLISHED.
						h.sync(t)
						h.sameState(t, "after the handshake")
					}

					// The next packets, both ways, then the close (TCP).
					up, down := second, reply
					up.payload, down.payload = []byte("more from the client"), []byte("more from the endpoint")
					if proto == ProtoTCP {
						up.tcpFlags, down.tcpFlags = tcpACK|tcpPSH, tcpACK|tcpPSH
					}
					h.same(t, "client to VIP", h.a.ifindex0, up.frame())
					h.same(t, "endpoint to client", h.lb1, down.frame())
					if proto == ProtoTCP {
						up.tcpFlags, down.tcpFlags = tcpACK|tcpFIN, tcpACK|tcpFIN
						up.payload, down.payload = nil, nil
						h.same(t, "client FIN", h.a.ifindex0, up.frame())
						h.same(t, "endpoint FIN", h.lb1, down.frame())
					}
					h.sameState(t, "after the next packets")
					if cb := connFrom(t, h.b, id, 41000); cb.Endpoint != c.Endpoint || cb.Source != c.Source || cb.Backend != c.Backend {
						t.Fatalf("B's connection %+v, A's %+v", cb, c)
					}
				})
			}
		}
	}
	for _, mode := range []Mode{ModeDefault, ModeFullNAT} {
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("sctp-multihomed/%s/v6=%v", modeNames[mode], v6), func(t *testing.T) {
				h := h.sub(t)
				id++
				testMultihomedImport(t, h, id, mode, v6)
			})
		}
	}
	// Removals by the daemon on A (here: everything idle past its
	// timeout) reach B the same way.
	t.Run("removal", func(t *testing.T) {
		h := h.sub(t)
		n, err := h.a.d.ageOnce(h.a.d.now() + uint64(24*time.Hour))
		if err != nil || n == 0 {
			t.Fatalf("ageing on A: %d removed, %v", n, err)
		}
		h.sync(t)
		h.sameState(t, "after ageing")
		if n := h.b.ctEntries(); n != 0 {
			t.Fatalf("B holds %d entries after A removed every connection", n)
		}
	})
}

// testMultihomedImport: a two-path-per-side association opened on A
// continues on B over every path, then a new association on a secondary
// path's tuple makes A's datapath purge the old one: B purges it too.
func testMultihomedImport(t *testing.T, h *haPair, id uint32, mode Mode, v6 bool) {
	a := mhFamily(v6)
	const eport = 38413
	vport := uint16(38000 + id)
	cport := uint16(50000 + id)
	e1 := epAddr(v6, 1)
	h.upsert(Service{ID: id, VIP: a.vip, SecondaryVIPs: []netip.Addr{a.vip2}, PortStart: vport, Proto: ProtoSCTP,
		Mode: mode, Select: SelectRR, Endpoints: []Endpoint{{Addr: epAddr(v6, 0), Port: eport, Weight: 1}, {Addr: e1, Port: eport, Weight: 1}}})
	client := func(src, dst netip.Addr, sport uint16, vtag uint32, chunk []byte) pkt {
		return pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: src, dst: dst, proto: 132, sport: sport, dport: vport, ttl: 64,
			sctpVtag: vtag, sctpChunks: chunk}
	}
	// Another association first: the one under test goes to endpoint 1.
	if ret, _ := h.a.run(client(a.c1, a.vip, cport+1000, 0, sctpInit(0x5555)).frame()); ret != actRedirect {
		t.Fatalf("other INIT verdict %d", ret)
	}
	if ret, _ := h.a.run(client(a.c1, a.vip, cport, 0, sctpInitWith(1, 0x1111, paramAddr(a.c1), paramAddr(a.c2))).frame()); ret != actRedirect {
		t.Fatalf("INIT verdict %d", ret)
	}
	h.sync(t)
	h.sameState(t, "after the INIT")
	c := connFrom(t, h.a, id, cport)
	if c.Endpoint != 1 {
		t.Fatalf("association on endpoint %d, want 1", c.Endpoint)
	}
	src, sport, src2 := a.c1, cport, a.c2
	if mode == ModeFullNAT {
		src, sport, src2 = a.vip, c.Source.Port(), a.vip2
	}
	ep := func(from, to netip.Addr, mac []byte, vtag uint32, chunk []byte) pkt {
		return pkt{srcMAC: mac, dstMAC: lbMAC1, src: from, dst: to, proto: 132, sport: eport, dport: sport, ttl: 64,
			sctpVtag: vtag, sctpChunks: chunk}
	}
	steps := []struct {
		name string
		ep   bool
		p    pkt
	}{
		{"INIT-ACK", true, ep(e1, src, epMAC(1), 0x1111, sctpInitWith(2, 0x2222, paramAddr(e1), paramAddr(a.e2)))},
		{"COOKIE-ECHO", false, client(a.c1, a.vip, cport, 0x2222, sctpSimple(10))},
		{"COOKIE-ACK", true, ep(e1, src, epMAC(1), 0x1111, sctpSimple(11))},
	}
	for _, s := range steps {
		ifi := h.a.ifindex0
		if s.ep {
			ifi = h.lb1
		}
		if ret, _ := h.a.runOn(h.a.d.objs.TcIngress, ifi, s.p.frame()); ret != actRedirect {
			t.Fatalf("%s verdict %d", s.name, ret)
		}
		if s.name != "COOKIE-ECHO" { // changes nothing
			h.sync(t)
			h.sameState(t, "after the "+s.name)
		}
	}
	if cb := connFrom(t, h.b, id, cport); cb.VTagClient != 0x1111 || cb.VTagEndpoint != 0x2222 || len(cb.Paths) != 3 {
		t.Fatalf("B's association: %+v", cb)
	}
	paths := []struct {
		name         string
		client, vip  netip.Addr
		lbSrc, epAdr netip.Addr
		mac          []byte
	}{
		{"c1 to vip", a.c1, a.vip, src, e1, epMAC(1)},
		{"c2 to vip2", a.c2, a.vip2, src2, a.e2, ep2MAC},
		{"c1 to vip2", a.c1, a.vip2, src, a.e2, ep2MAC},
		{"c2 to vip", a.c2, a.vip, src2, e1, epMAC(1)},
	}
	for _, p := range paths {
		h.same(t, p.name, h.a.ifindex0, client(p.client, p.vip, cport, 0x2222, sctpData(50)).frame())
		h.same(t, p.name+" reverse", h.lb1, ep(p.epAdr, p.lbSrc, p.mac, 0x1111, sctpSimple(4)).frame())
	}
	h.sameState(t, "after traffic on every path")

	// A new association on a secondary path's tuple: A's datapath purges
	// every entry of the old one, and B follows from the records.
	if ret, _ := h.a.run(client(a.c2, a.vip2, cport, 0, sctpInitWith(1, 0x3333)).frame()); ret != actRedirect {
		t.Fatalf("re-INIT verdict %d", ret)
	}
	h.sync(t)
	h.sameState(t, "after the re-INIT")
	for _, cb := range h.b.conns() {
		if cb.ServiceID == id && cb.VTagClient == 0x1111 {
			t.Fatalf("the replaced association is still on B: %+v", cb)
		}
	}
}

// snatFirstPort is the first source port snat_pick (bpf/lib/nat.h) tries
// for a tuple: hash_tuple (bpf/lib/helpers.h) over the packet as received.
func snatFirstPort(src, dst netip.Addr, sport, dport uint16, proto uint8) uint16 {
	fold := func(a netip.Addr) uint32 {
		b := addr16(a)
		le := binary.LittleEndian
		return le.Uint32(b[0:]) ^ le.Uint32(b[4:]) ^ le.Uint32(b[8:]) ^ le.Uint32(b[12:])
	}
	h := uint32(0x9e3779b9)
	h ^= fold(src)
	h *= 0x85ebca6b
	h ^= fold(dst)
	h *= 0xc2b2ae35
	h ^= uint32(htons(sport))<<16 | uint32(htons(dport))
	h *= 0x85ebca6b
	h ^= uint32(proto)
	h ^= h >> 16
	h *= 0x7feb352d
	h ^= h >> 15
	h *= 0x846ca68b
	h ^= h >> 16
	return uint16(1024 + h%(65536-1024))
}

// collidingClient is a client tuple (address in 10.0.0.0/24 above .2,
// source port) whose first SNAT port to vip:vport is port.
func collidingClient(t *testing.T, port, vport uint16, proto uint8) (netip.Addr, uint16) {
	t.Helper()
	for host := 3; host < 255; host++ {
		addr := netip.AddrFrom4([4]byte{10, 0, 0, byte(host)})
		for p := 1024; p < 65536; p++ {
			if snatFirstPort(addr, vipV4, uint16(p), vport, proto) == port {
				return addr, uint16(p)
			}
		}
	}
	t.Fatalf("no client tuple found whose first SNAT port is %d", port)
	return netip.Addr{}, 0
}

// An imported fullnat flow's SNAT port is never handed to a new flow on B,
// even one whose hash leads to that port first.
func TestImportedSNATPortIsReserved(t *testing.T) {
	h := newHAPair(t)
	const id, vport = 40, 9400
	h.upsert(Service{ID: id, VIP: vipV4, PortStart: vport, Proto: ProtoTCP, Mode: ModeFullNAT, Endpoints: testEndpoints(false, 1, 8080)})
	syn := func(src netip.Addr, sport uint16) pkt {
		return pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: src, dst: vipV4, proto: 6, sport: sport, dport: vport, ttl: 64, tcpFlags: tcpSYN}
	}
	const cport = 43210
	if ret, _ := h.a.run(syn(clientV4, cport).frame()); ret != actRedirect {
		t.Fatalf("SYN on A verdict %d", ret)
	}
	snat := connFrom(t, h.a, id, cport).Source
	// Another client tuple whose first SNAT port is the same.
	other, oport := collidingClient(t, snat.Port(), vport, 6)
	// B alone gives that tuple the port (the hash above is the datapath's).
	if ret, _ := h.b.run(syn(other, oport).frame()); ret != actRedirect {
		t.Fatalf("colliding SYN on B verdict %d", ret)
	}
	if got := connFrom(t, h.b, id, oport).Source; got != snat {
		t.Fatalf("B gave the colliding tuple %s, expected the hash to lead to %s", got, snat)
	}
	if err := h.b.d.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	h.sync(t)
	if ret, _ := h.b.run(syn(other, oport).frame()); ret != actRedirect {
		t.Fatalf("colliding SYN on B after the import: verdict %d", ret)
	}
	if got := connFrom(t, h.b, id, oport).Source; got == snat {
		t.Fatalf("B handed the imported flow's SNAT port %s to a new flow", got)
	}
	// The imported flow still gets its replies.
	c := connFrom(t, h.a, id, cport)
	synack := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: c.Backend.Addr(), dst: snat.Addr(), proto: 6,
		sport: c.Backend.Port(), dport: snat.Port(), ttl: 64, tcpFlags: tcpSYN | tcpACK}
	h.same(t, "SYN-ACK of the imported flow", h.lb1, synack.frame())
}

// Imported connections are ordinary conntrack: B's daemon restarting keeps
// them like any other.
func TestImportedFlowsSurviveARestart(t *testing.T) {
	h := newHAPair(t)
	const id, vport = 41, 9401
	h.upsert(Service{ID: id, VIP: vipV6, PortStart: vport, Proto: ProtoUDP, Mode: ModeFullNAT, Endpoints: testEndpoints(true, 1, 8080)})
	up := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV6, dst: vipV6, proto: 17, sport: 5555, dport: vport, ttl: 64, payload: []byte("ping")}
	if ret, _ := h.a.run(up.frame()); ret != actRedirect {
		t.Fatalf("first datagram verdict %d", ret)
	}
	h.sync(t)
	if err := h.b.d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err := Load(Config{PinPath: h.b.pinPath, MaxConns: 4096, Logger: testLogger()})
	if err != nil {
		t.Fatalf("restart B: %v", err)
	}
	h.b.d = d
	h.sameState(t, "after B restarted")
	c := connFrom(t, h.a, id, 5555)
	down := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: c.Backend.Addr(), dst: c.Source.Addr(), proto: 17,
		sport: c.Backend.Port(), dport: c.Source.Port(), ttl: 64, payload: []byte("pong")}
	h.same(t, "reply after B's restart", h.lb1, down.frame())
	h.same(t, "next datagram after B's restart", h.a.ifindex0, up.frame())
}

// Without HA the events can be left out of the program: the same flows
// then leave nothing in the ring buffer.
func TestConntrackEventsCanBeLeftOut(t *testing.T) {
	e := newEnv(t)
	off := e.peerWith(Config{MaxConns: 4096, DisableConntrackEvents: true})
	for _, x := range []*env{e, off} {
		rd, err := x.d.ConntrackChanges()
		if err != nil {
			t.Fatal(err)
		}
		x.upsert(Service{ID: 5, VIP: vipV4, PortStart: 80, Proto: ProtoUDP, Endpoints: testEndpoints(false, 1, 8080)})
		p := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 17, sport: 1234, dport: 80, ttl: 64, payload: []byte("x")}
		if ret, _ := x.run(p.frame()); ret != actRedirect {
			t.Fatalf("verdict %d", ret)
		}
		recs, err := rd.Poll()
		_ = rd.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := x == e; (len(recs) > 0) != want {
			t.Fatalf("events on=%v: %d records", want, len(recs))
		}
	}
}

// udpChangeReader is a datapath with one UDP service (ID 6, port 80) and
// a change reader on it, closed at the test's end.
func udpChangeReader(t *testing.T) (*env, *ChangeReader) {
	t.Helper()
	e := newEnv(t)
	e.upsert(Service{ID: 6, VIP: vipV4, PortStart: 80, Proto: ProtoUDP, Endpoints: testEndpoints(false, 1, 8080)})
	rd, err := e.d.ConntrackChanges()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return e, rd
}

// A reader blocked in Read wakes for the daemon's own deletions (a flush
// here), which the datapath never sees as events.
func TestChangeReaderWakesForDaemonDeletions(t *testing.T) {
	e, rd := udpChangeReader(t)
	p := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 17, sport: 1234, dport: 80, ttl: 64, payload: []byte("x")}
	if ret, _ := e.run(p.frame()); ret != actRedirect {
		t.Fatalf("verdict %d", ret)
	}
	if recs, err := rd.Read(); err != nil || len(recs) != 2 || recs[0].Deleted || recs[1].Deleted {
		t.Fatalf("new flow: %d records (want both directions), %v", len(recs), err)
	}
	got := make(chan []Record, 1)
	go func() {
		// The first deletion wakes Read; the second may come in the next.
		var all []Record
		for len(all) < 2 {
			recs, err := rd.Read()
			if err != nil {
				break // closed: the test has failed already
			}
			all = append(all, recs...)
		}
		got <- all
	}()
	time.Sleep(100 * time.Millisecond) // let Read block
	if err := e.d.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	select {
	case recs := <-got:
		if len(recs) != 2 || !recs[0].Deleted || !recs[1].Deleted || recs[0].Kind != RecordConntrack {
			t.Fatalf("after the flush: %+v", recs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Read did not wake for the flush's deletions")
	}
}

// The daemon's deletions wake a Read only while it waits: queued while
// nothing waits, they are taken by the next read without a flush of the
// reader (a system call and a wake-up each, for every entry an ageing
// round removes), and a waiting Read is woken once however many arrive.
func TestDaemonDeletionsWakeOnlyAWaitingRead(t *testing.T) {
	e, rd := udpChangeReader(t)
	const flows = 20
	open := func(base uint16) {
		for i := range uint16(flows) {
			p := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 17, sport: base + i, dport: 80, ttl: 64, payload: []byte("x")}
			if ret, _ := e.run(p.frame()); ret != actRedirect {
				t.Fatalf("flow %d: verdict %d", i, ret)
			}
		}
	}
	wakes := func() int {
		rd.mu.Lock()
		defer rd.mu.Unlock()
		return rd.wakes
	}
	// readAll reads until every key's last record is a deletion.
	readAll := func(want int) {
		t.Helper()
		last := map[string]bool{}
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			recs, err := rd.Poll()
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				last[string(r.Key)] = r.Deleted
			}
			n := 0
			for _, del := range last {
				if del {
					n++
				}
			}
			if n == want && len(last) == want {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("records of %d keys, want %d deleted: %v", len(last), want, last)
	}

	open(2000)
	if err := e.d.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	if n := wakes(); n != 0 {
		t.Fatalf("%d deletions with no Read waiting flushed the reader %d times, want 0", 2*flows, n)
	}
	readAll(2 * flows)

	got := make(chan []Record, 1)
	go func() {
		recs, err := rd.Read()
		if err != nil {
			t.Error(err)
		}
		got <- recs
	}()
	time.Sleep(100 * time.Millisecond) // let Read block
	open(3000)
	// The creations woke the Read; it may wait again by now, or not.
	recs := <-got
	if len(recs) == 0 || recs[0].Deleted {
		t.Fatalf("the flows' creation woke Read with %+v", recs)
	}
	before := wakes()
	go func() {
		var all []Record
		for {
			recs, err := rd.Read()
			if err != nil {
				break
			}
			all = append(all, recs...)
			if n := len(all); n > 0 && all[n-1].Deleted {
				break
			}
		}
		got <- all
	}()
	time.Sleep(100 * time.Millisecond) // let Read block (the creations were read)
	if err := e.d.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	select {
	case recs := <-got:
		if len(recs) == 0 || !recs[len(recs)-1].Deleted {
			t.Fatalf("after the flush: %+v", recs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Read did not wake for the flush's deletions")
	}
	if n := wakes() - before; n != 1 {
		t.Fatalf("%d deletions while Read waited flushed it %d times, want once", 2*flows, n)
	}
}

// Imported connections count as active for their endpoints (leastconn's
// input) as soon as they are imported, without the recount of an ageing
// round: the same record imported again (a refresh) does not count twice,
// and a deleted one gives its count back.
func TestImportKeepsActiveCounts(t *testing.T) {
	h := newHAPair(t)
	const id, vport, flows = 43, 9403, 7
	h.upsert(Service{ID: id, VIP: vipV4, PortStart: vport, Proto: ProtoUDP, Mode: ModeFullNAT, Select: SelectLeastConn, Endpoints: testEndpoints(false, 3, 8080)})
	for i := 0; i < flows; i++ {
		if ret, _ := h.a.run(udpTo(clientV4, vipV4, uint16(20000+i), vport).frame()); ret != actRedirect {
			t.Fatalf("flow %d on A: verdict %d", i, ret)
		}
	}
	perEndpoint := func(e *env) []uint64 {
		var out []uint64
		for _, ep := range e.stats(id, 3).Endpoints {
			out = append(out, ep.Active)
		}
		return out
	}
	want := perEndpoint(h.a)
	recs := h.sync(t)
	if got := perEndpoint(h.b); !reflect.DeepEqual(got, want) || h.b.sumActive(id) != flows {
		t.Fatalf("B's active counts after the import %v, A's %v (%d flows)", got, want, flows)
	}
	if err := h.b.d.ImportConntrack(recs); err != nil {
		t.Fatal(err)
	}
	if got := perEndpoint(h.b); !reflect.DeepEqual(got, want) {
		t.Fatalf("B's active counts after the same records again %v, want %v", got, want)
	}
	if err := h.a.d.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	h.sync(t)
	if got := h.b.sumActive(id); got != 0 {
		t.Fatalf("B counts %d active after the deletions were imported, want 0", got)
	}
}

// The ageing's deletions are marked Expired (every node holding a copy
// expires it by the same rule, so the HA sync does not send them); a
// flush's deletions are not: only this node knows of them.
func TestExpiriesAreMarkedFlushesAreNot(t *testing.T) {
	e, rd := udpChangeReader(t)
	flow := func(sport uint16) {
		t.Helper()
		p := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 17, sport: sport, dport: 80, ttl: 64, payload: []byte("x")}
		if ret, _ := e.run(p.frame()); ret != actRedirect {
			t.Fatalf("verdict %d", ret)
		}
		if recs, err := rd.Read(); err != nil || len(recs) != 2 || recs[0].Deleted || recs[1].Deleted {
			t.Fatalf("new flow: %d records (want both directions), %v", len(recs), err)
		}
	}
	deletions := func(what string) []Record {
		t.Helper()
		recs, err := rd.Poll()
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2 || !recs[0].Deleted || !recs[1].Deleted {
			t.Fatalf("after %s: %+v, want the flow's 2 deletions", what, recs)
		}
		return recs
	}

	flow(1234)
	if n, err := e.d.ageOnce(e.d.now() + uint64(time.Hour)); err != nil || n != 1 {
		t.Fatalf("ageing an hour later removed %d connections (%v), want 1", n, err)
	}
	for _, r := range deletions("the ageing") {
		if !r.Expired {
			t.Errorf("the ageing's deletion of %x is not marked Expired", r.Key)
		}
	}
	flow(1235)
	if err := e.d.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	for _, r := range deletions("a flush") {
		if r.Expired {
			t.Errorf("a flush's deletion of %x is marked Expired: the peers would keep their copies", r.Key)
		}
	}
}

// A fullnat flow expires on A (its deletion not sent: B expires its copy
// itself) and A gives its SNAT port to a new client's flow. The new
// flow's reply entry, imported, replaces the old one's on B, and the old
// flow's orig entry goes with it: kept, it would live on with the new
// flow's replies and send its client's next packets to the new flow's
// port.
func TestImportReplacingAReplyEntryDropsItsOldFlow(t *testing.T) {
	h := newHAPair(t)
	const id, vport = 41, 9401
	h.upsert(Service{ID: id, VIP: vipV4, PortStart: vport, Proto: ProtoUDP, Mode: ModeFullNAT, Endpoints: testEndpoints(false, 1, 8080)})
	udp := func(src netip.Addr, sport uint16) []byte {
		return pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: src, dst: vipV4, proto: 17, sport: sport, dport: vport, ttl: 64, payload: []byte("x")}.frame()
	}
	const cport = 43211
	if ret, _ := h.a.run(udp(clientV4, cport)); ret != actRedirect {
		t.Fatalf("first flow on A: verdict %d", ret)
	}
	snat := connFrom(t, h.a, id, cport).Source
	h.sync(t)
	connFrom(t, h.b, id, cport)
	// The flow expires on A; its deletions stay there.
	if n, err := h.a.d.ageOnce(h.a.d.now() + uint64(time.Hour)); err != nil || n != 1 {
		t.Fatalf("ageing on A removed %d connections (%v), want 1", n, err)
	}
	if recs, err := h.rd.Poll(); err != nil || len(recs) != 2 || !recs[0].Expired || !recs[1].Expired {
		t.Fatalf("A's expiry: %+v (%v), want the flow's 2 expired deletions", recs, err)
	}
	// Another client tuple whose first SNAT port is the one just freed.
	other, oport := collidingClient(t, snat.Port(), vport, 17)
	if ret, _ := h.a.run(udp(other, oport)); ret != actRedirect {
		t.Fatalf("second flow on A: verdict %d", ret)
	}
	if got := connFrom(t, h.a, id, oport).Source; got != snat {
		t.Fatalf("A gave the second flow %s, expected the freed %s", got, snat)
	}
	h.sync(t)
	if got := connFrom(t, h.b, id, oport).Source; got != snat {
		t.Fatalf("B's copy of the second flow has %s, want %s", got, snat)
	}
	for _, c := range h.b.conns() {
		if c.ServiceID == id && c.Client.Port() == cport {
			t.Fatalf("B still holds the expired flow from %v, whose SNAT port %v is the new flow's", c.Client, c.Source)
		}
	}
}
