package dataplane

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func udpTo(client, vip netip.Addr, sport, dport uint16) pkt {
	return pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: client, dst: vip, proto: 17, sport: sport, dport: dport, payload: []byte("ping")}
}

func tcpTo(client, vip netip.Addr, sport, dport uint16, flags uint8) pkt {
	return pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: client, dst: vip, proto: 6, sport: sport, dport: dport, tcpFlags: flags}
}

// epOf returns which test endpoint a forwarded frame was sent to (by MAC).
func epOf(t testing.TB, ret uint32, out []byte) int {
	t.Helper()
	if ret != actRedirect {
		t.Fatalf("verdict %d, want redirect", ret)
	}
	return int(out[5]) - 0x10
}

func TestICMPEchoToVIPIsAnswered(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 1, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 1, 80)})
	e.upsert(Service{ID: 2, VIP: vipV6, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(true, 1, 80)})
	for _, tc := range []struct {
		name         string
		client, vip  netip.Addr
		proto        uint8
		req, rep     uint8
		wantAnswered bool
	}{
		{"v4", clientV4, vipV4, 1, 8, 0, true},
		{"v6", clientV6, vipV6, 58, 128, 129, true},
		{"v4 not a vip", clientV4, netip.MustParseAddr("10.9.9.9"), 1, 8, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.sub(t)
			req := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: tc.client, dst: tc.vip, proto: tc.proto,
				icmpType: tc.req, icmpRest: 0x12340001, payload: []byte("0123456789abcdef")}
			ret, out := e.run(req.frame())
			if !tc.wantAnswered {
				if ret != actOK {
					t.Fatalf("verdict %d, want pass", ret)
				}
				diffHex(t, "untouched", out, req.frame())
				return
			}
			if ret != actRedirect {
				t.Fatalf("verdict %d, want redirect", ret)
			}
			want := req
			want.srcMAC, want.dstMAC, want.src, want.dst, want.icmpType = lbMAC0, clientMAC, tc.vip, tc.client, tc.rep
			diffHex(t, "echo reply", out, want.frame())
		})
	}
}

// An ICMP error about a NATed flow goes back to the client with outer and
// embedded headers translated, whoever reported it (the endpoint itself or a
// router on the way).
func TestICMPErrorsAreTranslatedBack(t *testing.T) {
	e := newEnv(t)
	lb1 := e.ifindex("lb1")
	for i, tc := range []struct {
		name     string
		v6       bool
		mode     Mode
		reporter netip.Addr // zero: the endpoint
		typ      uint8
		code     uint8
		rest     uint32
	}{
		{name: "v4 port unreachable from endpoint", typ: 3, code: 3},
		{name: "v4 frag needed from router", reporter: netip.MustParseAddr("10.1.0.254"), typ: 3, code: 4, rest: 1400},
		{name: "v4 fullnat port unreachable", mode: ModeFullNAT, typ: 3, code: 3},
		{name: "v6 port unreachable from endpoint", v6: true, typ: 1, code: 4},
		{name: "v6 packet too big from router", v6: true, reporter: netip.MustParseAddr("fd01::fe"), typ: 2, rest: 1280},
		{name: "v6 fullnat time exceeded", v6: true, mode: ModeFullNAT, typ: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.sub(t)
			id := uint32(10 + i)
			vip, client := vipV4, clientV4
			proto := uint8(1)
			if tc.v6 {
				vip, client, proto = vipV6, clientV6, 58
			}
			vport, cport := uint16(1000+i), uint16(5000+i)
			e.upsert(Service{ID: id, VIP: vip, PortStart: vport, Proto: ProtoUDP, Mode: tc.mode, Endpoints: testEndpoints(tc.v6, 1, 53)})
			if ret, _ := e.run(udpTo(client, vip, cport, vport).frame()); ret != actRedirect {
				t.Fatalf("flow setup verdict %d", ret)
			}
			src := e.conn(id).Source
			ep := epAddr(tc.v6, 0)
			// What the endpoint received, embedded in its error.
			inner := pkt{src: src.Addr(), dst: ep, proto: 17, sport: src.Port(), dport: 53, ttl: 63, payload: []byte("ping")}
			innerBytes := inner.ip()
			reporter := tc.reporter
			if !reporter.IsValid() {
				reporter = ep
			}
			icmpErr := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: reporter, dst: src.Addr(), proto: proto,
				icmpType: tc.typ, icmpCode: tc.code, icmpRest: tc.rest, payload: innerBytes}
			ret, out := e.runOn(e.d.objs.TcIngress, lb1, icmpErr.frame())
			if ret != actRedirect {
				t.Fatalf("verdict %d, want redirect", ret)
			}
			// Expected: embedded header as the client sent it; its UDP
			// checksum is left as the endpoint saw it.
			wantInner := pkt{src: client, dst: vip, proto: 17, sport: cport, dport: vport, ttl: 63, payload: []byte("ping")}
			wib := wantInner.ip()
			l3 := 20
			if tc.v6 {
				l3 = 40
			}
			copy(wib[l3+6:l3+8], innerBytes[l3+6:l3+8])
			wantSrc := reporter
			if !tc.reporter.IsValid() {
				wantSrc = vip
			}
			want := pkt{srcMAC: lbMAC0, dstMAC: clientMAC, src: wantSrc, dst: client, proto: proto, ttl: 63,
				icmpType: tc.typ, icmpCode: tc.code, icmpRest: tc.rest, payload: wib}
			diffHex(t, "translated icmp error", out, want.frame())
		})
	}
}

func TestSCTPAssociationLifecycle(t *testing.T) {
	e := newEnv(t)
	lb1 := e.ifindex("lb1")
	e.upsert(Service{ID: 3, VIP: vipV4, PortStart: 38412, Proto: ProtoSCTP, Select: SelectRR, Endpoints: testEndpoints(false, 2, 38412)})
	state := func() Conn {
		t.Helper()
		cs := e.conns()
		if len(cs) != 1 {
			t.Fatalf("%d connections, want 1: %+v", len(cs), cs)
		}
		return cs[0]
	}
	c2s := func(vtag uint32, chunk []byte) uint32 {
		p := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 132, sport: 5000, dport: 38412, sctpVtag: vtag, sctpChunks: chunk}
		ret, _ := e.run(p.frame())
		return ret
	}
	s2c := func(ep int, vtag uint32, chunk []byte) uint32 {
		p := pkt{srcMAC: epMAC(ep), dstMAC: lbMAC1, src: epAddr(false, ep), dst: clientV4, proto: 132, sport: 38412, dport: 5000, sctpVtag: vtag, sctpChunks: chunk}
		ret, _ := e.runOn(e.d.objs.TcIngress, lb1, p.frame())
		return ret
	}
	steps := []struct {
		name      string
		send      func() uint32
		wantState string
	}{
		{"INIT", func() uint32 { return c2s(0, sctpInit(0xaaaa)) }, "INIT"},
		{"INIT-ACK", func() uint32 { return s2c(0, 0xaaaa, sctpInitAck(0xbbbb)) }, "COOKIE_WAIT"},
		{"COOKIE-ECHO", func() uint32 { return c2s(0xbbbb, sctpSimple(10)) }, "COOKIE_WAIT"},
		{"COOKIE-ACK", func() uint32 { return s2c(0, 0xaaaa, sctpSimple(11)) }, "ESTABLISHED"},
		{"DATA", func() uint32 { return c2s(0xbbbb, sctpData(40)) }, "ESTABLISHED"},
		{"SHUTDOWN", func() uint32 { return c2s(0xbbbb, sctpSimple(7)) }, "SHUTDOWN"},
		{"SHUTDOWN-ACK", func() uint32 { return s2c(0, 0xaaaa, sctpSimple(8)) }, "SHUTDOWN"},
		{"SHUTDOWN-COMPLETE", func() uint32 { return c2s(0xbbbb, sctpSimple(14)) }, "CLOSED"},
	}
	for _, s := range steps {
		if ret := s.send(); ret != actRedirect {
			t.Fatalf("%s: verdict %d", s.name, ret)
		}
		if c := state(); c.State != s.wantState {
			t.Fatalf("after %s: state %s, want %s", s.name, c.State, s.wantState)
		}
	}
	c := state()
	if c.VTagClient != 0xaaaa || c.VTagEndpoint != 0xbbbb || c.Endpoint != 0 {
		t.Fatalf("vtags %#x/%#x endpoint %d", c.VTagClient, c.VTagEndpoint, c.Endpoint)
	}
	st, err := e.d.ServiceStats(3, 2)
	if err != nil {
		t.Fatal(err)
	}
	if st.Endpoints[0].Active != 0 {
		t.Fatalf("closed association still active: %+v", st)
	}
	// A new INIT on the same 5-tuple starts a new association with a fresh
	// endpoint choice; the old reply entry is gone.
	if ret := c2s(0, sctpInit(0xcccc)); ret != actRedirect {
		t.Fatalf("re-INIT verdict %d", ret)
	}
	c = state()
	if c.State != "INIT" || c.Endpoint != 1 || c.VTagClient != 0xcccc || c.VTagEndpoint != 0 {
		t.Fatalf("re-INIT conn %+v", c)
	}
	if n := e.ctEntries(); n != 2 {
		t.Fatalf("%d conntrack entries after re-INIT, want 2", n)
	}
	if ret := s2c(1, 0xcccc, sctpSimple(6)); ret != actRedirect {
		t.Fatalf("ABORT verdict %d", ret)
	}
	if c = state(); c.State != "CLOSED" {
		t.Fatalf("after ABORT: %s", c.State)
	}
}

func TestTCPStateAndLeastConnRelease(t *testing.T) {
	e := newEnv(t)
	lb1 := e.ifindex("lb1")
	e.upsert(Service{ID: 4, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Select: SelectLeastConn, Endpoints: testEndpoints(false, 3, 8080)})
	var flows [9]int
	for i := range flows {
		ret, out := e.run(tcpTo(clientV4, vipV4, uint16(2000+i), 80, tcpSYN).frame())
		flows[i] = epOf(t, ret, out)
	}
	per := map[int]int{}
	for _, ep := range flows {
		per[ep]++
	}
	if per[0] != 3 || per[1] != 3 || per[2] != 3 {
		t.Fatalf("leastconn spread %v, want 3 each", per)
	}
	// Close two flows of endpoint 1 (FIN both ways, and RST).
	var closed []int
	for i, ep := range flows {
		if ep == 1 && len(closed) < 2 {
			closed = append(closed, i)
		}
	}
	sport := uint16(2000 + closed[0])
	e.run(tcpTo(clientV4, vipV4, sport, 80, tcpFIN|tcpACK).frame())
	for _, c := range e.conns() {
		if c.Client.Port() == sport && c.State != "FIN_WAIT" {
			t.Fatalf("after client FIN: %s", c.State)
		}
	}
	back := pkt{srcMAC: epMAC(1), dstMAC: lbMAC1, src: epAddr(false, 1), dst: clientV4, proto: 6, sport: 8080, dport: sport, tcpFlags: tcpFIN | tcpACK}
	if ret, _ := e.runOn(e.d.objs.TcIngress, lb1, back.frame()); ret != actRedirect {
		t.Fatalf("endpoint FIN verdict %d", ret)
	}
	e.run(tcpTo(clientV4, vipV4, uint16(2000+closed[1]), 80, tcpRST).frame())
	for _, c := range e.conns() {
		p := c.Client.Port()
		if (p == sport || p == uint16(2000+closed[1])) && c.State != "CLOSED" {
			t.Fatalf("flow %d: %s, want CLOSED", p, c.State)
		}
	}
	st, err := e.d.ServiceStats(4, 3)
	if err != nil {
		t.Fatal(err)
	}
	if st.Endpoints[1].Active != 1 || st.Active != 7 || st.Sessions != 9 {
		t.Fatalf("after closing two: %+v", st)
	}
	// The two freed slots make endpoint 1 the least loaded.
	for i := 0; i < 2; i++ {
		ret, out := e.run(tcpTo(clientV4, vipV4, uint16(3000+i), 80, tcpSYN).frame())
		if ep := epOf(t, ret, out); ep != 1 {
			t.Fatalf("new flow %d went to endpoint %d, want 1", i, ep)
		}
	}
	// A SYN on a CLOSED tuple is a new connection.
	ret, _ := e.run(tcpTo(clientV4, vipV4, sport, 80, tcpSYN).frame())
	if ret != actRedirect {
		t.Fatalf("SYN on closed tuple: verdict %d", ret)
	}
	for _, c := range e.conns() {
		if c.Client.Port() == sport && c.State != "SYN_SENT" {
			t.Fatalf("reopened tuple state %s", c.State)
		}
	}
}

func TestIdleConnectionsExpire(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 5, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Endpoints: testEndpoints(false, 1, 53)})
	e.upsert(Service{ID: 6, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, IdleTimeout: 5 * time.Second, Endpoints: testEndpoints(false, 1, 80)})
	e.run(udpTo(clientV4, vipV4, 7000, 53).frame())
	e.run(tcpTo(clientV4, vipV4, 7001, 80, tcpACK).frame()) // mid-stream pickup: ESTABLISHED
	now := e.d.now()
	for _, tc := range []struct {
		after     time.Duration
		wantConns int
	}{
		{0, 2},
		{4 * time.Second, 2},
		{6 * time.Second, 1},  // TCP idle timeout 5s
		{29 * time.Second, 1}, // UDP unreplied: 30s
		{31 * time.Second, 0},
	} {
		if _, err := e.d.ageOnce(now + uint64(tc.after)); err != nil {
			t.Fatal(err)
		}
		if n := len(e.conns()); n != tc.wantConns {
			t.Fatalf("after %s: %d conns, want %d", tc.after, n, tc.wantConns)
		}
	}
	if n := e.ctEntries(); n != 0 {
		t.Fatalf("%d conntrack entries left", n)
	}
	st, err := e.d.ServiceStats(6, 1)
	if err != nil {
		t.Fatal(err)
	}
	if st.Active != 0 || st.Sessions != 1 {
		t.Fatalf("stats after expiry %+v", st)
	}
}

func TestDownEndpointsGetNoNewFlows(t *testing.T) {
	e := newEnv(t)
	eps := testEndpoints(false, 3, 80)
	e.upsert(Service{ID: 7, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: eps})
	ret, out := e.run(tcpTo(clientV4, vipV4, 100, 80, tcpSYN).frame())
	established := epOf(t, ret, out)

	eps[established].Down = true
	eps[(established+1)%3].Down = true
	e.upsert(Service{ID: 7, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: eps})
	up := (established + 2) % 3
	for i := 0; i < 30; i++ {
		for _, sel := range []Select{SelectRR, SelectHash, SelectPersist, SelectLeastConn} {
			e.upsert(Service{ID: 7, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Select: sel, Endpoints: eps})
			ret, out := e.run(tcpTo(clientV4, vipV4, uint16(1000+i*4+int(sel)), 80, tcpSYN).frame())
			if ep := epOf(t, ret, out); ep != up {
				t.Fatalf("%v flow %d went to down endpoint %d", sel, i, ep)
			}
		}
	}
	// The existing flow continues to its (now down) endpoint.
	ret, out = e.run(tcpTo(clientV4, vipV4, 100, 80, tcpACK).frame())
	if ep := epOf(t, ret, out); ep != established {
		t.Fatalf("existing flow moved to %d", ep)
	}
	for i := range eps {
		eps[i].Down = true
	}
	e.upsert(Service{ID: 7, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: eps})
	before, _ := e.d.DropStats()
	if ret, _ := e.run(tcpTo(clientV4, vipV4, 9999, 80, tcpSYN).frame()); ret != actShot {
		t.Fatalf("all down: verdict %d, want drop", ret)
	}
	after, _ := e.d.DropStats()
	if after[DropNoEndpoint] != before[DropNoEndpoint]+1 {
		t.Fatalf("no_endpoint drops %d -> %d", before[DropNoEndpoint], after[DropNoEndpoint])
	}
}

func TestSelectionDistribution(t *testing.T) {
	e := newEnv(t)
	count := func(id uint32, n int, client func(i int) netip.Addr) map[int]int {
		t.Helper()
		per := map[int]int{}
		for i := 0; i < n; i++ {
			ret, out := e.run(tcpTo(client(i), vipV4, uint16(10000+i), uint16(id), tcpSYN).frame())
			per[epOf(t, ret, out)]++
		}
		return per
	}
	oneClient := func(int) netip.Addr { return clientV4 }
	within := func(got, want, tol int) bool { return got >= want-tol && got <= want+tol }

	t.Run("rr honours weights", func(t *testing.T) {
		e := e.sub(t)
		eps := testEndpoints(false, 3, 80)
		eps[2].Weight = 2
		e.upsert(Service{ID: 21, VIP: vipV4, PortStart: 21, Proto: ProtoTCP, Select: SelectRR, Endpoints: eps})
		per := count(21, 512, oneClient)
		if !within(per[0], 128, 16) || !within(per[1], 128, 16) || !within(per[2], 256, 16) {
			t.Fatalf("rr spread %v, want ~128/128/256", per)
		}
	})
	t.Run("hash spreads and is deterministic", func(t *testing.T) {
		e := e.sub(t)
		e.upsert(Service{ID: 22, VIP: vipV4, PortStart: 22, Proto: ProtoTCP, Select: SelectHash, Endpoints: testEndpoints(false, 3, 80)})
		per := count(22, 600, oneClient)
		for ep := 0; ep < 3; ep++ {
			if !within(per[ep], 200, 80) {
				t.Fatalf("hash spread %v", per)
			}
		}
		ret, out := e.run(tcpTo(clientV4, vipV4, 10005, 22, tcpSYN).frame())
		first := epOf(t, ret, out)
		if err := e.d.FlushConntrack(); err != nil {
			t.Fatal(err)
		}
		ret, out = e.run(tcpTo(clientV4, vipV4, 10005, 22, tcpSYN).frame())
		if again := epOf(t, ret, out); again != first {
			t.Fatalf("same tuple hashed to %d then %d", first, again)
		}
	})
	t.Run("persist keeps a client on one endpoint", func(t *testing.T) {
		e := e.sub(t)
		e.upsert(Service{ID: 23, VIP: vipV4, PortStart: 23, Proto: ProtoTCP, Select: SelectPersist, Endpoints: testEndpoints(false, 3, 80)})
		if per := count(23, 50, oneClient); len(per) != 1 {
			t.Fatalf("one client spread over %v", per)
		}
		per := count(23, 60, func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, byte(100 + i)}) })
		if len(per) < 2 {
			t.Fatalf("60 clients all on one endpoint: %v", per)
		}
	})
}

func TestMalformedPacketsCreateNoState(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 8, VIP: vipV4, PortStart: 80, Proto: ProtoUDP, Endpoints: testEndpoints(false, 1, 80)})
	e.upsert(Service{ID: 9, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 1, 80)})
	e.upsert(Service{ID: 10, VIP: vipV4, PortStart: 80, Proto: ProtoSCTP, Endpoints: testEndpoints(false, 1, 80)})
	e.upsert(Service{ID: 11, VIP: vipV6, PortStart: 80, Proto: ProtoUDP, Endpoints: testEndpoints(true, 1, 80)})
	udp4 := udpTo(clientV4, vipV4, 1, 80).frame()
	tcp4 := tcpTo(clientV4, vipV4, 1, 80, tcpSYN).frame()
	sctp4 := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 132, sport: 1, dport: 80, sctpChunks: sctpInit(1)}.frame()
	udp6 := udpTo(clientV6, vipV6, 1, 80).frame()
	icmp4 := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 1, icmpType: 8}.frame()
	mut := func(f []byte, fn func(b []byte) []byte) []byte { return fn(append([]byte(nil), f...)) }
	setTot := func(b []byte, n int) []byte { binary.BigEndian.PutUint16(b[16:], uint16(n)); return b }
	for _, tc := range []struct {
		name  string
		frame []byte
		want  uint32
	}{
		{"ipv4 header truncated behind vlan", append(append(append([]byte(nil), udp4[:12]...), 0x81, 0x00, 0, 1), udp4[12:26]...), actOK},
		{"ipv4 bad version", mut(udp4, func(b []byte) []byte { b[14] = 0x55; return b }), actOK},
		{"ipv4 ihl below 5", mut(udp4, func(b []byte) []byte { b[14] = 0x44; return b }), actOK},
		{"ipv4 total length beyond frame", mut(udp4, func(b []byte) []byte { return setTot(b, 200) }), actOK},
		{"ipv4 total length below ihl", mut(udp4, func(b []byte) []byte { return setTot(b, 10) }), actOK},
		{"ipv4 ihl beyond total length", mut(udp4, func(b []byte) []byte { b[14] = 0x4f; return b }), actOK},
		{"udp truncated", mut(udp4, func(b []byte) []byte { return setTot(b, 24)[:38] }), actShot},
		{"udp length beyond datagram", mut(udp4, func(b []byte) []byte { b[38] = 0xff; return b }), actShot},
		{"tcp data offset below 5", mut(tcp4, func(b []byte) []byte { b[46] = 0x40; return b }), actShot},
		{"tcp data offset beyond datagram", mut(tcp4, func(b []byte) []byte { b[46] = 0xf0; return b }), actShot},
		{"tcp truncated", mut(tcp4, func(b []byte) []byte { return setTot(b, 30)[:44] }), actShot},
		{"sctp shorter than common header and chunk", mut(sctp4, func(b []byte) []byte { return setTot(b, 34)[:48] }), actShot},
		{"sctp chunk length beyond packet", mut(sctp4, func(b []byte) []byte { b[48] = 0xff; return b }), actShot},
		{"sctp chunk length below 4", mut(sctp4, func(b []byte) []byte { b[48], b[49] = 0, 2; return b }), actShot},
		{"sctp init without initiate tag", mut(sctp4, func(b []byte) []byte { b[49] = 16; return setTot(b, 50)[:64] }), actShot},
		{"icmp truncated", mut(icmp4, func(b []byte) []byte { return setTot(b, 24)[:38] }), actShot},
		{"ipv4 non-first fragment", mut(udp4, func(b []byte) []byte { b[20] = 0x00; b[21] = 0x10; return b }), actOK},
		{"ipv6 header truncated behind vlan", append(append(append([]byte(nil), udp6[:12]...), 0x81, 0x00, 0, 1), udp6[12:40]...), actOK},
		{"ipv6 payload length beyond frame", mut(udp6, func(b []byte) []byte { b[18] = 0x10; return b }), actOK},
		{"ipv6 hop-by-hop truncated", mut(udp6, func(b []byte) []byte { b[20] = 0; b[18], b[19] = 0, 1; return b[:55] }), actShot},
		{"ipv6 extension beyond datagram", mut(udp6, func(b []byte) []byte { b[20] = 0; b[54], b[55] = 17, 200; return b }), actShot},
		{"ipv6 non-first fragment", mut(udp6, func(b []byte) []byte { b[20] = 44; b[54], b[56], b[57] = 17, 0, 0x10; return b }), actOK},
		{"vlan tag then nothing", append(append([]byte(nil), udp4[:12]...), 0x81, 0x00, 0, 1), actOK},
		{"unknown ethertype", mut(udp4, func(b []byte) []byte { b[12], b[13] = 0x88, 0xb5; return b }), actOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.sub(t)
			before, _ := e.d.DropStats()
			ret, _ := e.run(tc.frame)
			if ret != tc.want {
				t.Fatalf("verdict %d, want %d", ret, tc.want)
			}
			if n := e.ctEntries(); n != 0 {
				t.Fatalf("%d conntrack entries created", n)
			}
			after, _ := e.d.DropStats()
			wantDrops := before[DropMalformed]
			if tc.want == actShot {
				wantDrops++
			}
			if after[DropMalformed] != wantDrops {
				t.Fatalf("malformed drops %d, want %d", after[DropMalformed], wantDrops)
			}
		})
	}
}

// The incremental CRC32c update must equal a full software CRC for any
// length and any port change (fullnat rewrites both ports).
func TestSCTPChecksumAfterPortRewrite(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 12, VIP: vipV4, PortStart: 38412, PortEnd: 38420, Proto: ProtoSCTP, Mode: ModeFullNAT, Endpoints: testEndpoints(false, 1, 9)})
	for i, n := range []int{1, 3, 100, 257, 500, 1400, 1449} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			e := e.sub(t)
			p := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 132, sport: uint16(40000 + i*77), dport: uint16(38412 + i), sctpVtag: 0xdeadbeef, sctpChunks: sctpData(n)}
			ret, out := e.run(p.frame())
			if ret != actRedirect {
				t.Fatalf("verdict %d", ret)
			}
			var src netip.AddrPort
			for _, c := range e.conns() {
				if c.Client.Port() == p.sport {
					src = c.Source
				}
			}
			want := p
			want.srcMAC, want.dstMAC, want.ttl = lbMAC1, epMAC(0), 63
			want.src, want.sport, want.dst, want.dport = src.Addr(), src.Port(), epAddr(false, 0), 9
			diffHex(t, "rewritten sctp", out, want.frame())
		})
	}
}

func TestVLANTaggedFramesAreForwarded(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 13, VIP: vipV4, PortStart: 80, Proto: ProtoUDP, Endpoints: testEndpoints(false, 1, 8080)})
	p := udpTo(clientV4, vipV4, 4444, 80)
	p.vlans = []uint16{100, 200}
	ret, out := e.run(p.frame())
	if ret != actRedirect {
		t.Fatalf("verdict %d", ret)
	}
	want := p
	want.srcMAC, want.dstMAC, want.ttl, want.dst, want.dport = lbMAC1, epMAC(0), 63, epAddr(false, 0), 8080
	diffHex(t, "vlan frame", out, want.frame())
}

func TestNonServiceTrafficPassesUntouched(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 14, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 1, 80)})
	for _, f := range [][]byte{
		tcpTo(clientV4, vipV4, 1, 81, tcpSYN).frame(),            // other port
		udpTo(clientV4, vipV4, 1, 80).frame(),                    // other protocol
		tcpTo(clientV4, epAddr(false, 3), 1, 80, tcpSYN).frame(), // not a VIP
		tcpTo(clientV4, vipV4, 1, 80, tcpRST).frame(),            // stray RST
	} {
		ret, out := e.run(f)
		if ret != actOK {
			t.Fatalf("verdict %d, want pass", ret)
		}
		diffHex(t, "passed frame", out, f)
	}
	if n := e.ctEntries(); n != 0 {
		t.Fatalf("%d conntrack entries", n)
	}
}

func TestRunAgesUntilCancelled(t *testing.T) {
	e := newEnv(t)
	e.d.cfg.AgeInterval = 5 * time.Millisecond
	e.upsert(Service{ID: 15, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Endpoints: testEndpoints(false, 1, 53)})
	e.run(udpTo(clientV4, vipV4, 7000, 53).frame())
	if n := len(e.conns()); n != 1 {
		t.Fatalf("%d conns", n)
	}
	real := e.d.now
	e.d.mu.Lock()
	e.d.now = func() uint64 { return real() + uint64(time.Hour) }
	e.d.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.d.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(e.conns()) != 0 {
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("Run did not expire the idle connection")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// Without the precomputed tables (a foreign loader) the datapath assembles
// x^(8N) from squares; the result must be the same CRC.
func TestSCTPChecksumWithoutShiftTable(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 16, VIP: vipV4, PortStart: 38412, Proto: ProtoSCTP, Mode: ModeFullNAT, Endpoints: testEndpoints(false, 1, 9)})
	p := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 132, sport: 40001, dport: 38412, sctpVtag: 1, sctpChunks: sctpData(333)}
	sctpLen := uint32(12 + len(p.sctpChunks))
	if err := e.d.objs.CrcShift.Put(sctpLen, uint32(0)); err != nil {
		t.Fatal(err)
	}
	if err := e.d.objs.CrcNib.Put(sctpLen, [16]uint32{}); err != nil {
		t.Fatal(err)
	}
	checkFullNATSCTP(t, e, p)
}

// Without crc_nib's rows (a foreign loader; SCTP packets longer than a
// jumbo frame) every byte of the port change takes the 8-step multiply by
// crc_shift's entry: the same CRC, on the first packet (the slow path's
// crc32c_delta) and the later ones (the fast path's inline steps fall back
// to it).
func TestSCTPChecksumWithoutNibbleRows(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 16, VIP: vipV4, PortStart: 38412, Proto: ProtoSCTP, Mode: ModeFullNAT, Endpoints: testEndpoints(false, 1, 9)})
	p := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 132, sport: 40001, dport: 38412, sctpVtag: 1, sctpChunks: sctpData(333)}
	sctpLen := uint32(12 + len(p.sctpChunks))
	for i := sctpLen; i < sctpLen+4; i++ {
		if err := e.d.objs.CrcNib.Put(i, [16]uint32{}); err != nil {
			t.Fatal(err)
		}
	}
	checkFullNATSCTP(t, e, p)
}

// checkFullNATSCTP runs p, the first packet of a fullnat SCTP flow to
// service 16's one endpoint (port 9), and compares the result with the
// frame built from scratch (both ports changed: all four bytes of the CRC
// delta's port word); then twice more, on the established fast path.
func checkFullNATSCTP(t *testing.T, e *env, p pkt) {
	t.Helper()
	for i := 0; i < 3; i++ {
		ret, out := e.run(p.frame())
		if ret != actRedirect {
			t.Fatalf("packet %d: verdict %d", i, ret)
		}
		src := e.conns()[0].Source
		want := p
		want.srcMAC, want.dstMAC, want.ttl = lbMAC1, epMAC(0), 63
		want.src, want.sport, want.dst, want.dport = src.Addr(), src.Port(), epAddr(false, 0), 9
		diffHex(t, fmt.Sprintf("rewritten sctp, packet %d", i), out, want.frame())
	}
}

// ASCONF (RFC 5061) is masked out of the handshake's Supported Extensions,
// so peers never negotiate it through the LB; an ASCONF or ASCONF-ACK sent
// anyway would carry addresses the LB never rewrote, so it is dropped and
// counted, alone or behind an AUTH chunk, in both directions. Everything
// else, AUTH-protected DATA included, passes.
func TestSCTPAddressReconfigurationIsRefused(t *testing.T) {
	e := newEnv(t)
	lb1 := e.ifindex("lb1")
	e.upsert(Service{ID: 4, VIP: vipV4, PortStart: 3868, Proto: ProtoSCTP, Mode: ModeFullNAT, Endpoints: testEndpoints(false, 1, 3868)})
	first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 132, sport: 6000, dport: 3868}
	reply := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: epAddr(false, 0), dst: vipV4, proto: 132, sport: 3868, dport: 6000}
	first, reply, _ = openingPackets(ProtoSCTP, first, reply)
	if ret, _ := e.run(first.frame()); ret != actRedirect {
		t.Fatalf("INIT verdict %d", ret)
	}
	src := e.conn(4).Source
	reply.dst, reply.dport = src.Addr(), src.Port()
	if ret, _ := e.runOn(e.d.objs.TcIngress, lb1, reply.frame()); ret != actRedirect {
		t.Fatalf("INIT-ACK verdict %d", ret)
	}
	addIP := func(typ uint8) []byte {
		// ASCONF / ASCONF-ACK: serial number, then an Add IP Address
		// parameter (0xc001) wrapping an IPv4 address parameter.
		c := []byte{typ, 0, 0, 24, 0, 0, 0, 1, 0xc0, 0x01, 0, 16, 0, 0, 0, 1, 0, 5, 0, 8, 192, 0, 2, 99}
		return c
	}
	auth := []byte{0x0f, 0, 0, 24, 0, 1, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	fromClient := func(e *env, chunks []byte) (uint32, []byte) {
		p := first
		p.sctpVtag, p.sctpChunks = 0x22222222, chunks
		return e.run(p.frame())
	}
	fromEndpoint := func(e *env, chunks []byte) (uint32, []byte) {
		p := reply
		p.sctpVtag, p.sctpChunks = 0x11111111, chunks
		return e.runOn(e.d.objs.TcIngress, lb1, p.frame())
	}
	cases := []struct {
		name    string
		send    func(*env, []byte) (uint32, []byte)
		chunks  []byte
		dropped bool
	}{
		{"asconf from the client", fromClient, addIP(0xc1), true},
		{"asconf behind auth from the client", fromClient, append(append([]byte{}, auth...), addIP(0xc1)...), true},
		{"asconf-ack from the endpoint", fromEndpoint, addIP(0x80), true},
		{"asconf behind auth from the endpoint", fromEndpoint, append(append([]byte{}, auth...), addIP(0xc1)...), true},
		{"data behind auth passes", fromClient, append(append([]byte{}, auth...), sctpData(20)...), false},
		{"forward-tsn passes", fromClient, []byte{0xc0, 0, 0, 8, 0, 0, 0, 5}, false},
		{"data passes", fromEndpoint, sctpData(20), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := e.sub(t)
			before := e.dropCount(t, DropSCTPASCONF)
			ret, out := tc.send(e, tc.chunks)
			after := e.dropCount(t, DropSCTPASCONF)
			if tc.dropped {
				if ret != actShot || after != before+1 {
					t.Fatalf("verdict %d, asconf drops %d -> %d; want drop and one more", ret, before, after)
				}
				return
			}
			if ret != actRedirect || after != before {
				t.Fatalf("verdict %d (out %x), asconf drops %d -> %d; want redirect, none", ret, out, before, after)
			}
		})
	}
	if c := e.conns(); len(c) != 1 || c[0].State == "CLOSED" {
		t.Fatalf("association after refused reconfigurations: %+v, want it still open", c)
	}
}

// An INIT retransmitted from the client's other address (same tag) reaches
// the same endpoint and becomes the association's primary entry; the
// association still counts once for leastconn, and not at all once closed.
func TestSCTPInitFromSecondAddressCountsOnce(t *testing.T) {
	e := newEnv(t)
	lb1 := e.ifindex("lb1")
	const id, port = 5, 38412
	e.upsert(Service{ID: id, VIP: vipV4, PortStart: port, Proto: ProtoSCTP, Select: SelectLeastConn,
		Endpoints: testEndpoints(false, 2, port)})
	active := func() []uint64 {
		t.Helper()
		st, err := e.d.ServiceStats(id, 2)
		if err != nil {
			t.Fatal(err)
		}
		return []uint64{st.Endpoints[0].Active, st.Endpoints[1].Active}
	}
	init := func(src netip.Addr) pkt {
		return pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: src, dst: vipV4, proto: 132, sport: 5000, dport: port,
			sctpChunks: sctpInitWith(1, 0xabc, param(5, clientV4.AsSlice()), param(5, client2V4.AsSlice()))}
	}
	steps := []struct {
		name       string
		send       func() uint32
		wantActive []uint64
	}{
		{"INIT from the first address", func() uint32 { r, _ := e.run(init(clientV4).frame()); return r }, []uint64{1, 0}},
		{"same INIT from the second address", func() uint32 { r, _ := e.run(init(client2V4).frame()); return r }, []uint64{1, 0}},
		{"INIT-ACK to the second address", func() uint32 {
			p := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: epAddr(false, 0), dst: client2V4, proto: 132, sport: port,
				dport: 5000, sctpVtag: 0xabc, sctpChunks: sctpInitAck(0xdef)}
			r, _ := e.runOn(e.d.objs.TcIngress, lb1, p.frame())
			return r
		}, []uint64{1, 0}},
		{"ABORT on the first address's path", func() uint32 {
			p := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: clientV4, dst: vipV4, proto: 132, sport: 5000, dport: port,
				sctpVtag: 0xdef, sctpChunks: sctpSimple(6)}
			r, _ := e.run(p.frame())
			return r
		}, []uint64{0, 0}},
	}
	for _, s := range steps {
		if ret := s.send(); ret != actRedirect {
			t.Fatalf("%s: verdict %d", s.name, ret)
		}
		if got := active(); !slices.Equal(got, s.wantActive) {
			t.Fatalf("after %s: active associations per endpoint %v, want %v", s.name, got, s.wantActive)
		}
	}
}
