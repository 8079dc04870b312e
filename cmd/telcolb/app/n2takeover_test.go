package app

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	stdsync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha"
	"github.com/telcolb/telcolb/ha/sync"
	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb"
	"github.com/telcolb/telcolb/sctplb/abort"
	"github.com/telcolb/telcolb/sctplb/steer"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/memory"
)

func tgt(gnb string, tag uint32) abort.Target {
	return abort.Target{Src: netip.MustParseAddrPort("10.0.0.100:38412"), Dst: netip.MustParseAddrPort(gnb), Tag: tag}
}

// gnbRecord is a peer's gNB record for name: version 2 with target when
// it is valid, else version 1; a steer machine must import it.
func gnbRecord(t *testing.T, name string, target abort.Target) (string, []byte) {
	t.Helper()
	m, err := steer.New(steer.Config{AMFs: []steer.AMF{{Name: "amf0"}}, Replicate: true, ProxyName: "p"})
	if err != nil {
		t.Fatal(err)
	}
	req, err := ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: [3]byte{0x02, 0xf8, 0x39}, GNBID: 7, GNBIDBits: 22, TACs: []uint32{1}, Slices: []ngapl.SNSSAI{{SST: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	// The record built by hand in the versions' layout: version, request,
	// no AMF result, then (version 2) tag and both ends.
	v := []byte{1, byte(len(req))}
	if len(req) > 127 {
		t.Fatal("request too long for a one-byte length")
	}
	v = append(v, req...)
	v = append(v, 0)
	if target.Valid() {
		v[0] = 2
		v = append(v, byte(target.Tag>>24), byte(target.Tag>>16), byte(target.Tag>>8), byte(target.Tag))
		for _, ap := range []netip.AddrPort{target.Src, target.Dst} {
			a := ap.Addr().AsSlice()
			v = append(v, byte(len(a)))
			v = append(v, a...)
			v = append(v, byte(ap.Port()>>8), byte(ap.Port()))
		}
	}
	key := "g" + name
	if err := m.Import([]steer.Record{{Key: []byte(key), Value: v}}); err != nil {
		t.Fatalf("record of %s: %v", name, err)
	}
	return key, v
}

// The decision: only the lost peer's gNB records with a target, of the
// services this node's proxy serves, minus those held here and those
// aborted already; UE records, version 1 records and other peers' records
// are never aborted; records that do not decode are reported.
func TestSelectAbortsOnlyTheLostPeersDeadAssociations(t *testing.T) {
	a, b, own, done := tgt("192.0.2.1:4001", 11), tgt("192.0.2.2:4002", 22), tgt("192.0.2.3:4003", 33), tgt("192.0.2.4:4004", 44)
	other := tgt("192.0.2.5:4005", 55)
	notServed := tgt("192.0.2.6:4006", 66)
	held := map[string]map[string]heldN2{"n2": {}, "n2b": {}, "off": {}}
	put := func(svc, from, name string, target abort.Target) {
		k, v := gnbRecord(t, name, target)
		held[svc][k] = heldN2{from: from, value: v}
	}
	put("n2", "lb1", "gnb-a", a)
	put("n2b", "lb1", "gnb-b", b)
	put("n2", "lb1", "gnb-own", own)
	put("n2", "lb1", "gnb-done", done)
	put("n2", "lb3", "gnb-other", other)
	put("off", "lb1", "gnb-off", notServed)
	put("n2", "lb1", "gnb-v1", abort.Target{})
	held["n2"]["u\x05gnb-a\x00\x00\x00\x01"] = heldN2{from: "lb1", value: []byte{1, 4, 'a', 'm', 'f', '0', 0, 0, 0, 0, 0, 0, 0, 1}}
	held["n2"]["gbroken"] = heldN2{from: "lb1", value: []byte{2, 1, 0x20, 0, 1, 2}}
	serves := func(svc string) (func(abort.Target) bool, bool) {
		if svc == "off" {
			return nil, false
		}
		return func(t abort.Target) bool { return t == own }, true
	}
	got, ownN, bad := selectAborts(held, "lb1", serves, map[abort.Target]bool{done: true})
	var targets []abort.Target
	for _, c := range got {
		targets = append(targets, c.target)
	}
	if want := []abort.Target{a, b}; !slices.Equal(targets, want) {
		t.Errorf("selected %v, want %v", targets, want)
	}
	if ownN != 1 {
		t.Errorf("own %d, want 1", ownN)
	}
	if len(bad) != 1 {
		t.Errorf("undecodable records reported: %v, want the broken one", bad)
	}
	if got, _, _ := selectAborts(held, "lb2", serves, nil); len(got) != 0 {
		t.Errorf("a peer with no records: %v", got)
	}
}

func TestPaceBurstThenRate(t *testing.T) {
	for i, want := range map[int]time.Duration{0: 0, 49: 0, 50: 2 * time.Millisecond, 51: 4 * time.Millisecond, 549: time.Second} {
		if got := pace(i, 50, 500); got != want {
			t.Errorf("pace(%d) = %v, want %v", i, got, want)
		}
	}
}

var takeoverListen = transport.Endpoint{Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.100")}, Port: 38412}

// runProxy runs an N2 proxy over tr on takeoverListen until the test ends.
func runProxy(t *testing.T, ctx context.Context, tr transport.Transport) *sctplb.Proxy {
	t.Helper()
	p, err := sctplb.New(sctplb.Config{Transport: tr, Listen: takeoverListen,
		AMFs: []sctplb.AMFEndpoint{{Name: "amf0", Address: transport.Endpoint{Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.21")}, Port: 38412}}}})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	t.Cleanup(func() { pcancel(); <-done })
	waitFor(t, "proxy running", func() bool { return p.Stats().Running })
	return p
}

// The daemon's wiring, on a VIP no advertisement elects an owner for
// (mode peer-lost): lb2's sync loses lb1 and, lb1 staying away for
// takeoverGrace, lb2 ABORTs the gNB associations lb1's records name; a
// loss after which lb1 is back within the grace (as after it closed our
// connection for reading too slowly: it dials again) aborts nothing.
func TestTakeoverOnlyWhenThePeerStaysLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pair := newHAPair(t)
	dp1 := newMemCT()
	lb1 := pair.start("lb1", dp1)
	lb2 := pair.startWith("lb2", newMemCT(), func(c *HAConfig) { c.TakeoverAbort = TakeoverAbortPeerLost })
	p := runProxy(t, ctx, memory.New(memory.Config{Queue: 64}))
	r := lb2.N2Replica()
	var mu stdsync.Mutex
	var sent []abort.Target
	r.takeover.mu.Lock()
	r.takeover.send = func(t abort.Target) error { mu.Lock(); sent = append(sent, t); mu.Unlock(); return nil }
	r.takeover.mu.Unlock()
	a, b := tgt("192.0.2.1:4001", 11), tgt("192.0.2.2:4002", 22)
	r.mu.Lock()
	r.held["n2"] = map[string]heldN2{}
	for name, tg := range map[string]abort.Target{"gnb-a": a, "gnb-b": b} {
		k, v := gnbRecord(t, name, tg)
		r.held["n2"][k] = heldN2{from: "lb1", value: v}
	}
	r.mu.Unlock()
	r.setRunning(func(svc string) (*sctplb.Proxy, bool) { return p, svc == "n2" })
	// No advertisement elects an owner for the VIP (a static route).
	r.setOwner(func(netip.Addr) vipOwner { return ownerNone })
	nsent := func() int { mu.Lock(); defer mu.Unlock(); return len(sent) }
	waitFor(t, "lb1 and lb2 connected", func() bool { return lb1.node.Up("lb2") && lb2.node.Up("lb1") })

	// lb1 goes and comes back at once (its new incarnation redials).
	if err := lb1.Close(); err != nil {
		t.Fatal(err)
	}
	lb1 = pair.start("lb1", dp1)
	waitFor(t, "lb1 back", func() bool { return lb2.node.Up("lb1") })
	time.Sleep(takeoverGrace + 500*time.Millisecond)
	if n := nsent(); n != 0 {
		t.Fatalf("%d ABORTs for a peer back within the grace", n)
	}
	// lb1 goes for good.
	if err := lb1.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the takeover's ABORTs", func() bool { return nsent() == 2 })
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(sent, []abort.Target{a, b}) {
		t.Errorf("sent %v, want %v", sent, []abort.Target{a, b})
	}
}

// taggedTransport gives the memory transport's accepted associations an
// ABORT target, as the userspace transport does.
type taggedTransport struct {
	*memory.Network
	target abort.Target
}

type taggedListener struct {
	transport.Listener
	target abort.Target
}

type taggedConn struct {
	transport.Conn
	target abort.Target
}

func (t taggedTransport) Listen(e transport.Endpoint) (transport.Listener, error) {
	ln, err := t.Network.Listen(e)
	return taggedListener{ln, t.target}, err
}

func (l taggedListener) Accept(ctx context.Context) (transport.Conn, error) {
	c, err := l.Listener.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return taggedConn{c, l.target}, nil
}

func (c taggedConn) AbortTarget() (abort.Target, error) { return c.target, nil }

// The shell: a lost peer's gNB associations get one ABORT each through
// the send hook, counted; the one this node's running proxy holds (a gNB
// connected here with the same address and tag) is skipped; a second
// verdict sends nothing again; nothing goes while the peer is up, or for
// a service whose proxy does not run here.
func TestAbortPeerSendsOncePerDeadAssociation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b, own := tgt("192.0.2.1:4001", 11), tgt("192.0.2.2:4002", 22), tgt("192.0.2.3:4003", 33)
	net := taggedTransport{memory.New(memory.Config{Queue: 64}), own}
	p := runProxy(t, ctx, net)
	gnb, err := net.Network.Dial(ctx, nil, takeoverListen)
	if err != nil {
		t.Fatal(err)
	}
	defer gnb.Close()
	waitFor(t, "gNB association held", func() bool { return p.HoldsAssociation(own) })

	r := newN2Replica(nil, slog.New(slog.DiscardHandler))
	var sent []abort.Target
	r.takeover.send = func(t abort.Target) error { sent = append(sent, t); return nil }
	r.held["n2"] = map[string]heldN2{}
	r.held["stopped"] = map[string]heldN2{}
	for name, tg := range map[string]abort.Target{"gnb-a": a, "gnb-b": b, "gnb-own": own} {
		k, v := gnbRecord(t, name, tg)
		r.held["n2"][k] = heldN2{from: "lb1", value: v}
	}
	k, v := gnbRecord(t, "gnb-s", tgt("192.0.2.9:4009", 99))
	r.held["stopped"][k] = heldN2{from: "lb1", value: v}
	r.setRunning(func(svc string) (*sctplb.Proxy, bool) { return p, svc == "n2" })
	r.setOwner(func(netip.Addr) vipOwner { return ownerSelf })
	verdict := func(up bool) {
		r.abortPeer(ctx, "lb1", takeoverGrace, TakeoverAbortOwner, map[netip.Addr]bool{}, func() bool { return up })
	}

	verdict(true)
	if len(sent) != 0 {
		t.Fatalf("ABORTs while the peer is up: %v", sent)
	}
	verdict(false)
	if want := []abort.Target{a, b}; !slices.Equal(sent, want) {
		t.Fatalf("sent %v, want %v", sent, want)
	}
	verdict(false)
	if len(sent) != 2 {
		t.Errorf("a second verdict sent again: %v", sent)
	}
	c := r.takeoverCounts()
	if c["sent"] != 2 || c["failed"] != 0 || c["own"] != 3 {
		t.Errorf("counts %v, want sent 2, own 3 (one per verdict), failed 0", c)
	}
}

// The gate's decision for one VIP of a lost peer: peer up/lost x time
// since the verdict (at once, within or past the grace, past the owner
// wait) x owner (self, other, none) x mode. Nothing while the peer is up;
// a VIP owned here by the L2 election is aborted at once, with no grace
// (the peer is dead or fenced, the segment was told); a VIP nobody owns
// only in mode peer-lost and only past the grace; a VIP owned elsewhere
// waits for its ownership until takeoverOwnerWait, then is left; mode off
// never aborts.
func TestTakeoverDecision(t *testing.T) {
	owner, peerLost, off := TakeoverAbortOwner, TakeoverAbortPeerLost, TakeoverAbortOff
	now, early, grace, late := time.Duration(0), takeoverGrace/2, takeoverGrace, takeoverOwnerWait
	for _, c := range []struct {
		mode    string
		up      bool
		lostFor time.Duration
		owner   vipOwner
		want    takeoverStep
	}{
		// Owned here: abort at once, in both modes, no grace.
		{owner, false, now, ownerSelf, stepAbort},
		{owner, false, early, ownerSelf, stepAbort},
		{peerLost, false, now, ownerSelf, stepAbort},
		{owner, false, grace, ownerSelf, stepAbort},
		{owner, false, late, ownerSelf, stepAbort},
		// The peer back: nothing, ever.
		{owner, true, now, ownerSelf, stepSkip},
		{owner, true, grace, ownerSelf, stepSkip},
		{peerLost, true, late, ownerNone, stepSkip},
		// No owner elected (BGP, static route): only in mode peer-lost,
		// and only past the grace (a slow-reader close, the route's move).
		{peerLost, false, now, ownerNone, stepWait},
		{peerLost, false, grace - time.Millisecond, ownerNone, stepWait},
		{peerLost, false, grace, ownerNone, stepAbort},
		{owner, false, now, ownerNone, stepSkip},
		{owner, false, grace, ownerNone, stepSkip},
		{owner, false, late, ownerNone, stepSkip},
		// Owned elsewhere (a live peer behind a cut sync link keeps it):
		// wait for the election, then leave it, in both modes.
		{owner, false, now, ownerOther, stepWait},
		{owner, false, grace, ownerOther, stepWait},
		{owner, false, late - time.Millisecond, ownerOther, stepWait},
		{owner, false, late, ownerOther, stepSkip},
		{peerLost, false, early, ownerOther, stepWait},
		{peerLost, false, late, ownerOther, stepSkip},
		// Off: never.
		{off, false, now, ownerSelf, stepSkip},
		{off, false, grace, ownerSelf, stepSkip},
		{off, false, late, ownerNone, stepSkip},
	} {
		got, why := takeoverDecision(c.mode, c.up, false, c.lostFor, c.owner, pathNone)
		if got != c.want || why == "" {
			t.Errorf("mode %s, peer up %v, lost for %v, owner %v: %v (%q), want %v", c.mode, c.up, c.lostFor, c.owner, got, why, c.want)
		}
	}
}

// One verdict's rounds in the shell: the associations on a VIP owned here
// are aborted at the first round; those on a VIP another node owns wait
// (the round says more), and are aborted if the ownership moves here
// within takeoverOwnerWait, else left for good and counted not_owner, once
// per association; a VIP without an owner is left in mode owner.
func TestAbortPeerOnlyForVIPsOwnedHere(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := runProxy(t, ctx, memory.New(memory.Config{Queue: 64}))
	vipSelf, vipMoves, vipOther, vipNone := netip.MustParseAddr("10.0.0.100"), netip.MustParseAddr("10.0.0.101"),
		netip.MustParseAddr("10.0.0.102"), netip.MustParseAddr("10.0.0.103")
	on := func(vip netip.Addr, gnb string, tag uint32) abort.Target {
		return abort.Target{Src: netip.AddrPortFrom(vip, 38412), Dst: netip.MustParseAddrPort(gnb), Tag: tag}
	}
	a, m, o1, o2, n := on(vipSelf, "192.0.2.1:4001", 11), on(vipMoves, "192.0.2.2:4002", 22), on(vipOther, "192.0.2.3:4003", 33),
		on(vipOther, "192.0.2.4:4004", 44), on(vipNone, "192.0.2.5:4005", 55)
	r := newN2Replica(nil, slog.New(slog.DiscardHandler))
	var sent []abort.Target
	r.takeover.send = func(t abort.Target) error { sent = append(sent, t); return nil }
	r.held["n2"] = map[string]heldN2{}
	for name, tg := range map[string]abort.Target{"gnb-a": a, "gnb-m": m, "gnb-o1": o1, "gnb-o2": o2, "gnb-n": n} {
		k, v := gnbRecord(t, name, tg)
		r.held["n2"][k] = heldN2{from: "lb1", value: v}
	}
	r.setRunning(func(svc string) (*sctplb.Proxy, bool) { return p, svc == "n2" })
	owners := map[netip.Addr]vipOwner{vipSelf: ownerSelf, vipMoves: ownerOther, vipOther: ownerOther, vipNone: ownerNone}
	r.setOwner(func(v netip.Addr) vipOwner { return owners[v] })
	settled := map[netip.Addr]bool{}
	lost := func() bool { return false }

	if more := r.abortPeer(ctx, "lb1", takeoverGrace, TakeoverAbortOwner, settled, lost); !more {
		t.Error("first round: VIPs owned elsewhere do not wait")
	}
	if !slices.Equal(sent, []abort.Target{a}) {
		t.Fatalf("first round sent %v, want only %v (VIP owned here)", sent, a)
	}
	// The election moves vipMoves here within the wait.
	owners[vipMoves] = ownerSelf
	if more := r.abortPeer(ctx, "lb1", takeoverGrace+takeoverOwnerWait/2, TakeoverAbortOwner, settled, lost); !more {
		t.Error("second round: vipOther no longer waits")
	}
	if !slices.Equal(sent, []abort.Target{a, m}) {
		t.Fatalf("second round: sent %v, want %v then %v (its VIP moved here)", sent, a, m)
	}
	if more := r.abortPeer(ctx, "lb1", takeoverGrace+takeoverOwnerWait, TakeoverAbortOwner, settled, lost); more {
		t.Error("past the owner wait, still waiting")
	}
	if more := r.abortPeer(ctx, "lb1", 2*(takeoverGrace+takeoverOwnerWait), TakeoverAbortOwner, settled, lost); more {
		t.Error("a settled verdict waits again")
	}
	if !slices.Equal(sent, []abort.Target{a, m}) {
		t.Errorf("sent %v: an association on a VIP not owned here was aborted", sent)
	}
	if c := r.takeoverCounts(); c["sent"] != 2 || c["not_owner"] != 3 {
		t.Errorf("counts %v, want sent 2, not_owner 3 (two on vipOther, one on vipNone)", c)
	}
	// Mode peer-lost, a new verdict: the VIP without an owner is aborted,
	// the one owned elsewhere still not.
	if more := r.abortPeer(ctx, "lb1", takeoverGrace+takeoverOwnerWait, TakeoverAbortPeerLost, map[netip.Addr]bool{}, lost); more {
		t.Error("peer-lost round past the wait still waits")
	}
	if !slices.Equal(sent, []abort.Target{a, m, n}) {
		t.Errorf("peer-lost: sent %v, want %v added", sent, n)
	}
}

// A cut sync link with the peer alive: lb1 and lb2 stop hearing each
// other (every sync message dropped both ways, the TCP connections open,
// as behind a partition), lb2's sync declares lb1 lost by its peer
// timeout, not by TCP; lb1 still owns its VIP (the L2 election on the
// clients' segment still hears it), so lb2 aborts none of lb1's
// associations on it (not_owner), while those on a VIP lb2 owns are
// aborted.
func TestCutSyncLinkAbortsNothingOnAVIPThePeerOwns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	peersVIP, oursVIP := netip.MustParseAddr("10.0.0.100"), netip.MustParseAddr("10.0.0.101")
	a := abort.Target{Src: netip.AddrPortFrom(peersVIP, 38412), Dst: netip.MustParseAddrPort("192.0.2.1:4001"), Tag: 11}
	b := abort.Target{Src: netip.AddrPortFrom(oursVIP, 38412), Dst: netip.MustParseAddrPort("192.0.2.2:4002"), Tag: 22}
	rig := newCutRig(t, ctx, time.Second, map[string]abort.Target{"gnb-a": a, "gnb-b": b})
	lb2, r := rig.lb2, rig.r
	r.setOwner(func(v netip.Addr) vipOwner {
		if v == oursVIP {
			return ownerSelf
		}
		return ownerOther // lb1 keeps answering for it
	})
	rig.cutLink(t)
	if st := lb2.node.Stats(); st.SilentPeers < 1 {
		t.Errorf("lb1 lost without a peer timeout (silent peers %d): not the liveness verdict", st.SilentPeers)
	}
	waitFor(t, "the takeover's verdict", func() bool {
		c := r.takeoverCounts()
		return c["not_owner"] >= 1 && c["sent"] >= 1
	})
	time.Sleep(takeoverOwnerPoll * 3)
	if sent := rig.sent(); !slices.Equal(sent, []abort.Target{b}) {
		t.Errorf("sent %v, want only %v: an ABORT on the VIP the live peer owns", sent, b)
	}
	if c := r.takeoverCounts(); c["not_owner"] != 1 {
		t.Errorf("counts %v, want not_owner 1", c)
	}
}

// cutRig is two HA nodes over a sync link the test can cut (every message
// dropped both ways, the TCP connections left open, as behind a
// partition), lb2 holding lb1's records of gNB associations (name ->
// ABORT target) for an N2 proxy, its ABORTs recorded instead of sent.
// lb2's sync declares lb1 lost after lb2Timeout; lb1's timeout is longer,
// so lb2's verdict is its own liveness, not lb1's close. mutate, if any,
// changes each node's configuration last.
type cutRig struct {
	lb1, lb2 *HA
	r        *N2Replica
	cut      atomic.Bool
	mu       stdsync.Mutex
	aborts   []abort.Target
}

func newCutRig(t *testing.T, ctx context.Context, lb2Timeout time.Duration, held map[string]abort.Target, mutate ...func(node string, c *HAConfig)) *cutRig {
	t.Helper()
	rig := &cutRig{}
	pair := newHAPair(t)
	liveness := func(c *HAConfig) {
		c.Node.Machine.KeepaliveInterval, c.Node.Machine.PeerTimeout = 200*time.Millisecond, lb2Timeout
		c.TakeoverAbort = TakeoverAbortOwner
		c.Node.Impair = func(string) sync.Fault { return sync.Fault{Drop: rig.cut.Load()} }
	}
	more := func(node string, c *HAConfig) {
		for _, m := range mutate {
			m(node, c)
		}
	}
	rig.lb1 = pair.startWith("lb1", newMemCT(), func(c *HAConfig) { liveness(c); c.Node.Machine.PeerTimeout = 30 * time.Second; more("lb1", c) })
	rig.lb2 = pair.startWith("lb2", newMemCT(), func(c *HAConfig) { liveness(c); more("lb2", c) })
	p := runProxy(t, ctx, memory.New(memory.Config{Queue: 64}))
	r := rig.lb2.N2Replica()
	rig.r = r
	r.takeover.mu.Lock()
	r.takeover.send = func(t abort.Target) error {
		rig.mu.Lock()
		rig.aborts = append(rig.aborts, t)
		rig.mu.Unlock()
		return nil
	}
	r.takeover.mu.Unlock()
	r.mu.Lock()
	r.held["n2"] = map[string]heldN2{}
	for name, tg := range held {
		k, v := gnbRecord(t, name, tg)
		r.held["n2"][k] = heldN2{from: "lb1", value: v}
	}
	r.mu.Unlock()
	r.setRunning(func(svc string) (*sctplb.Proxy, bool) { return p, svc == "n2" })
	return rig
}

// cutLink cuts the sync link once both nodes are connected and waits for
// lb2's sync to declare lb1 lost.
func (rig *cutRig) cutLink(t *testing.T) {
	t.Helper()
	waitFor(t, "lb1 and lb2 connected", func() bool { return rig.lb1.node.Up("lb2") && rig.lb2.node.Up("lb1") })
	rig.cut.Store(true)
	waitFor(t, "lb2's sync declaring lb1 lost", func() bool { return !rig.lb2.node.Up("lb1") })
}

// sent is the ABORTs lb2 sent so far.
func (rig *cutRig) sent() []abort.Target {
	rig.mu.Lock()
	defer rig.mu.Unlock()
	return slices.Clone(rig.aborts)
}

// fixedAnnouncer reports a fixed announcement.
type fixedAnnouncer map[netip.Addr]ha.Announcement

func (fixedAnnouncer) Set(context.Context, []ha.VIP) error         { return nil }
func (f fixedAnnouncer) Announced() map[netip.Addr]ha.Announcement { return f }
func (fixedAnnouncer) Close() error                                { return nil }

// The ownership the gate reads: L2's election only (a VIP this node
// answers for is its own, one in the L2 set it does not answer for is
// another member's); a VIP only BGP announces, or none, has no owner.
func TestVIPOwnerFromTheL2Election(t *testing.T) {
	mine, theirs, noOneYet, bgpOnly, unknown := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"),
		netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4"), netip.MustParseAddr("10.0.0.5")
	l2 := fixedAnnouncer{mine: {Via: []string{"l2/eth0"}, Owner: "lb2"}, theirs: {Owner: "lb1"}, noOneYet: {}}
	bgp := fixedAnnouncer{mine: {Via: []string{"bgp/r1"}}, theirs: {Via: []string{"bgp/r1"}}, bgpOnly: {Via: []string{"bgp/r1"}}}
	a := &advertiser{announcers: map[string]ha.Announcer{api.AdvertiseL2: l2, api.AdvertiseBGP: bgp}}
	for v, want := range map[netip.Addr]vipOwner{mine: ownerSelf, theirs: ownerOther, noOneYet: ownerOther, bgpOnly: ownerNone, unknown: ownerNone} {
		if got := a.vipOwner(v); got != want {
			t.Errorf("%v: owner %v, want %v", v, got, want)
		}
	}
	a = &advertiser{announcers: map[string]ha.Announcer{api.AdvertiseBGP: bgp}}
	if got := a.vipOwner(mine); got != ownerNone {
		t.Errorf("BGP only: owner %v, want none", got)
	}
}

// The daemon's wiring, on a VIP lb2 owns by the L2 election (mode owner,
// the default): lb1's end is answered with the ABORTs at once, well
// before takeoverGrace (which only owner-less VIPs in mode peer-lost
// wait for).
func TestTakeoverAtOnceOnAVIPOwnedHere(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pair := newHAPair(t)
	lb1 := pair.start("lb1", newMemCT())
	lb2 := pair.startWith("lb2", newMemCT(), func(c *HAConfig) { c.TakeoverAbort = TakeoverAbortOwner })
	_, sent := twoGNBTakeover(t, ctx, lb2, ownerSelf)
	waitFor(t, "lb1 and lb2 connected", func() bool { return lb1.node.Up("lb2") && lb2.node.Up("lb1") })
	closed := time.Now()
	if err := lb1.Close(); err != nil {
		t.Fatal(err)
	}
	var sentAt []time.Time
	waitFor(t, "the takeover's ABORTs", func() bool { sentAt = sent(); return len(sentAt) == 2 })
	if d := sentAt[1].Sub(closed); d >= takeoverGrace {
		t.Errorf("ABORTs on a VIP owned here went %v after lb1 closed: waited for the grace (%v)", d.Round(time.Millisecond), takeoverGrace)
	}
}

// twoGNBTakeover prepares lb2's N2 replica for a takeover test: it holds
// lb1's records of two gNB associations of service "n2", whose proxy runs
// here, on a VIP the advertisement reports as owner; sends are recorded,
// not sent. sent returns the times of the ABORTs so far.
func twoGNBTakeover(t *testing.T, ctx context.Context, lb2 *HA, owner vipOwner) (r *N2Replica, sent func() []time.Time) {
	t.Helper()
	p := runProxy(t, ctx, memory.New(memory.Config{Queue: 64}))
	r = lb2.N2Replica()
	var mu stdsync.Mutex
	var sentAt []time.Time
	r.takeover.mu.Lock()
	r.takeover.send = func(abort.Target) error { mu.Lock(); sentAt = append(sentAt, time.Now()); mu.Unlock(); return nil }
	r.takeover.mu.Unlock()
	r.mu.Lock()
	r.held["n2"] = map[string]heldN2{}
	for name, tg := range map[string]abort.Target{"gnb-a": tgt("192.0.2.1:4001", 11), "gnb-b": tgt("192.0.2.2:4002", 22)} {
		k, v := gnbRecord(t, name, tg)
		r.held["n2"][k] = heldN2{from: "lb1", value: v}
	}
	r.mu.Unlock()
	r.setRunning(func(svc string) (*sctplb.Proxy, bool) { return p, svc == "n2" })
	r.setOwner(func(netip.Addr) vipOwner { return owner })
	return r, func() []time.Time { mu.Lock(); defer mu.Unlock(); return slices.Clone(sentAt) }
}
