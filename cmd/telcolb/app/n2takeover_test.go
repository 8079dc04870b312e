package app

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	stdsync "sync"
	"testing"
	"time"

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

// The daemon's wiring: lb2's sync loses lb1 and, lb1 staying away for
// takeoverGrace, lb2 ABORTs the gNB associations lb1's records name; a
// loss after which lb1 is back within the grace (as after it closed our
// connection for reading too slowly: it dials again) aborts nothing.
func TestTakeoverOnlyWhenThePeerStaysLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pair := newHAPair(t)
	dp1 := newMemCT()
	lb1 := pair.start("lb1", dp1)
	lb2 := pair.start("lb2", newMemCT())
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

	r.abortPeer(ctx, "lb1", func() bool { return true })
	if len(sent) != 0 {
		t.Fatalf("ABORTs while the peer is up: %v", sent)
	}
	r.abortPeer(ctx, "lb1", func() bool { return false })
	if want := []abort.Target{a, b}; !slices.Equal(sent, want) {
		t.Fatalf("sent %v, want %v", sent, want)
	}
	r.abortPeer(ctx, "lb1", func() bool { return false })
	if len(sent) != 2 {
		t.Errorf("a second verdict sent again: %v", sent)
	}
	c := r.takeoverCounts()
	if c["sent"] != 2 || c["failed"] != 0 || c["own"] != 3 {
		t.Errorf("counts %v, want sent 2, own 3 (one per verdict), failed 0", c)
	}
}
