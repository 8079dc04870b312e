package sctplb

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/free5gc/ngap/ngapType"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb/steer"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/memory"
)

var (
	tPLMN = [3]byte{0x02, 0xf8, 0x39}
	tLoc  = ngapl.Location{PLMN: tPLMN, TAC: 1, CellID: 1}
)

func ep(addr string, port uint16) transport.Endpoint {
	return transport.Endpoint{Addrs: []netip.Addr{netip.MustParseAddr(addr)}, Port: port}
}

// amfServer is a minimal AMF on the in-memory network: it answers NG Setup,
// allocates AMF-UE-NGAP-IDs (from 1, so AMFs collide on purpose) and records
// every uplink NAS it gets per UE.
type amfServer struct {
	t     *testing.T
	idx   int
	ln    transport.Listener
	mu    sync.Mutex
	next  uint64
	ues   map[uint64]uint32 // AMF UE ID -> RAN UE ID
	nas   map[uint32]int    // RAN UE ID -> uplink NAS count
	bad   int
	conns []transport.Conn
}

func startAMF(t *testing.T, ctx context.Context, n *memory.Network, idx int, at transport.Endpoint) *amfServer {
	t.Helper()
	ln, err := n.Listen(at)
	if err != nil {
		t.Fatal(err)
	}
	a := &amfServer{t: t, idx: idx, ln: ln, next: 1, ues: map[uint64]uint32{}, nas: map[uint32]int{}}
	go func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			a.mu.Lock()
			a.conns = append(a.conns, c)
			a.mu.Unlock()
			go a.serve(ctx, c)
		}
	}()
	return a
}

func (a *amfServer) kill() {
	_ = a.ln.Close()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.conns {
		_ = c.Close()
	}
}

func (a *amfServer) serve(ctx context.Context, c transport.Conn) {
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			return
		}
		k, _, err := ngapl.Decode(m.Data)
		if err != nil || m.PPID != ngapl.PPID {
			a.mu.Lock()
			a.bad++
			a.mu.Unlock()
			continue
		}
		var reply []byte
		a.mu.Lock()
		switch {
		case k.Procedure == ngapType.ProcedureCodeNGSetup:
			g := ngapl.GUAMI{PLMN: tPLMN, Region: 0xca, SetID: 1016, Pointer: uint8(a.idx + 1)}
			reply, err = ngapl.NGSetupResponse(ngapl.SetupResponse{AMFName: fmt.Sprintf("amf%d", a.idx), Served: []ngapType.ServedGUAMIItem{ngapl.ServedGUAMI(g)}, Capacity: 50,
				PLMNSupport: []ngapType.PLMNSupportItem{ngapl.PLMNSupport(tPLMN, ngapl.SNSSAI{SST: 1})}})
		case k.Procedure == ngapType.ProcedureCodeInitialUEMessage:
			id := a.next
			a.next++
			a.ues[id] = k.RANUEID
			reply, err = ngapl.DownlinkNASTransport(id, k.RANUEID, nil)
		case k.Procedure == ngapType.ProcedureCodeUplinkNASTransport:
			if ran, ok := a.ues[k.AMFUEID]; !ok || ran != k.RANUEID {
				a.bad++
			} else {
				a.nas[ran]++
			}
		}
		a.mu.Unlock()
		if err != nil {
			a.t.Errorf("AMF %d: build reply: %v", a.idx, err)
			return
		}
		if reply != nil {
			if err := c.Send(ctx, transport.Message{Stream: m.Stream, PPID: ngapl.PPID, Data: reply}); err != nil {
				return
			}
		}
	}
}

func (a *amfServer) nasCount(ran uint32) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nas[ran]
}

// gnbClient drives one gNB association.
type gnbClient struct {
	t testing.TB
	c transport.Conn
}

// send returns a sink for a builder's (PDU, error) result.
func (g *gnbClient) send(stream uint16) func([]byte, error) {
	return func(b []byte, err error) {
		g.t.Helper()
		if err != nil {
			g.t.Fatal(err)
		}
		if err := g.c.Send(context.Background(), transport.Message{Stream: stream, PPID: ngapl.PPID, Data: b}); err != nil {
			g.t.Fatal(err)
		}
	}
}

// expect reads until a message of proc/type arrives (others are returned in skipped).
func (g *gnbClient) expect(proc int64, typ ngapl.MessageType) (ngapl.Key, uint16) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		m, err := g.c.Recv(ctx)
		if err != nil {
			g.t.Fatalf("waiting for %s %s: %v", ngapl.ProcedureName(proc), typ, err)
		}
		k, _, err := ngapl.Decode(m.Data)
		if err != nil {
			g.t.Fatalf("proxy sent undecodable PDU: %v", err)
		}
		if m.PPID != ngapl.PPID {
			g.t.Fatalf("proxy sent PPID %d", m.PPID)
		}
		if k.Procedure == proc && k.Type == typ {
			return k, m.Stream
		}
	}
}

// startProxy runs a proxy "lb" on 10.0.0.1 over n with amfs AMF servers;
// each of opts may change its Config (another transport, a logger) first.
func startProxy(t *testing.T, n *memory.Network, amfs int, reg prometheus.Registerer, opts ...func(*Config)) (context.Context, []*amfServer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{Transport: n, Listen: ep("10.0.0.1", 38412), Name: "lb", Registerer: reg,
		TickInterval: 10 * time.Millisecond, SetupWait: 200 * time.Millisecond, RedialMin: 50 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	var servers []*amfServer
	for i := 0; i < amfs; i++ {
		at := ep(fmt.Sprintf("10.1.0.%d", i+1), 38412)
		servers = append(servers, startAMF(t, ctx, n, i, at))
		cfg.AMFs = append(cfg.AMFs, AMFEndpoint{Name: fmt.Sprintf("amf%d", i), Address: at})
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return ctx, servers
}

func dialGNB(t testing.TB, n *memory.Network, id uint32) *gnbClient {
	t.Helper()
	var c transport.Conn
	var err error
	for i := 0; i < 100; i++ { // the proxy may not be listening yet
		if c, err = n.Dial(context.Background(), nil, ep("10.0.0.1", 38412)); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	g := &gnbClient{t: t, c: c}
	g.send(0)(ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: tPLMN, GNBID: id, GNBIDBits: 22, TACs: []uint32{1}, Slices: []ngapl.SNSSAI{{SST: 1}}}))
	g.expect(ngapType.ProcedureCodeNGSetup, ngapl.Successful)
	return g
}

func TestProxyRelaysRealNGAPEndToEnd(t *testing.T) {
	n := memory.New(memory.Config{})
	reg := prometheus.NewRegistry()
	_, amfs := startProxy(t, n, 3, reg)
	g := dialGNB(t, n, 1)
	// Round robin spreads evenly only over AMFs that are up: NG Setup is
	// answered as soon as the first AMF is, so wait for all three.
	waitMetric(t, func() bool { return metricValue(t, reg, "telcolb_n2_associations_up", "side", "amf") == 3 })

	const ues = 60
	for ran := uint32(1); ran <= ues; ran++ {
		g.send(uint16(1 + ran%15))(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: ran, Location: tLoc}))
		k, stream := g.expect(ngapType.ProcedureCodeDownlinkNASTransport, ngapl.Initiating)
		if k.RANUEID != ran || stream == 0 {
			t.Fatalf("downlink for UE %d on stream %d named RAN ID %d", ran, stream, k.RANUEID)
		}
		g.send(uint16(1 + ran%15))(ngapl.UplinkNASTransport(k.AMFUEID, ran, nil, tLoc))
	}
	// Every uplink reached the AMF that allocated the UE's ID.
	deadline := time.Now().Add(10 * time.Second)
	for ran := uint32(1); ran <= ues; ran++ {
		for {
			got := 0
			for _, a := range amfs {
				got += a.nasCount(ran)
			}
			if got == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("UE %d: %d uplinks arrived at its AMF", ran, got)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, a := range amfs {
		a.mu.Lock()
		if a.bad != 0 {
			t.Errorf("AMF %d got %d misrouted or bad messages", a.idx, a.bad)
		}
		a.mu.Unlock()
	}
	for i := 0; i < 3; i++ {
		amf := fmt.Sprintf("amf%d", i)
		waitMetric(t, func() bool { return metricValue(t, reg, "telcolb_n2_ue_contexts", "amf", amf) == ues/3 })
	}
	if c, err := testutil.GatherAndCount(reg, "telcolb_n2_messages_total"); err != nil || c == 0 {
		t.Errorf("messages_total series = %d, %v", c, err)
	}
}

func TestProxyAMFLossReleasesOnlyItsUEs(t *testing.T) {
	n := memory.New(memory.Config{})
	reg := prometheus.NewRegistry()
	_, amfs := startProxy(t, n, 2, reg)
	g := dialGNB(t, n, 1)
	owner := map[uint32]uint64{}
	for ran := uint32(1); ran <= 10; ran++ {
		g.send(1)(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: ran, Location: tLoc}))
		k, _ := g.expect(ngapType.ProcedureCodeDownlinkNASTransport, ngapl.Initiating)
		owner[ran] = k.AMFUEID
	}
	amfs[1].kill()
	// Round robin put UEs 1,3,5,7,9 (first pick is index 1) on AMF 1: each
	// gets a release command, and an AMF Status Indication announces its GUAMI.
	released := map[uint32]bool{}
	for len(released) < 5 {
		k, stream := g.expect(ngapType.ProcedureCodeUEContextRelease, ngapl.Initiating)
		if stream == 0 {
			t.Error("release command on stream 0")
		}
		released[k.RANUEID] = true
		g.send(stream)(ngapl.UEContextReleaseComplete(k.AMFUEID, k.RANUEID))
	}
	amfs[1].mu.Lock()
	defer amfs[1].mu.Unlock()
	for ran := range released {
		if amfs[1].ues[owner[ran]] != ran {
			t.Errorf("UE %d released but it belonged to AMF 0", ran)
		}
	}
	// The survivors keep working.
	for ran := uint32(1); ran <= 10; ran++ {
		if !released[ran] {
			g.send(1)(ngapl.UplinkNASTransport(owner[ran], ran, nil, tLoc))
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for ran := uint32(1); ran <= 10; ran++ {
		for !released[ran] && amfs[0].nasCount(ran) != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("surviving UE %d not served after AMF loss", ran)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitMetric(t, func() bool { return metricValue(t, reg, "telcolb_n2_ue_contexts", "amf", "amf1") == 0 })
}

func TestProxyAnswersGarbageWithErrorIndication(t *testing.T) {
	n := memory.New(memory.Config{})
	reg := prometheus.NewRegistry()
	startProxy(t, n, 1, reg)
	g := dialGNB(t, n, 1)
	if err := g.c.Send(context.Background(), transport.Message{Stream: 0, PPID: ngapl.PPID, Data: []byte{0xde, 0xad}}); err != nil {
		t.Fatal(err)
	}
	g.expect(ngapType.ProcedureCodeErrorIndication, ngapl.Initiating)
	waitMetric(t, func() bool { return metricValue(t, reg, "telcolb_n2_malformed_total", "direction", "uplink") == 1 })
}

func TestNewValidatesConfig(t *testing.T) {
	n := memory.New(memory.Config{})
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no transport", Config{Listen: ep("10.0.0.1", 1)}, "no transport"},
		{"no port", Config{Transport: n}, "port"},
		{"AMF without address", Config{Transport: n, Listen: ep("10.0.0.1", 1), AMFs: []AMFEndpoint{{Name: "a"}}}, "address"},
		{"no AMF", Config{Transport: n, Listen: ep("10.0.0.1", 1)}, "no AMF"},
		{"bad policy", Config{Transport: n, Listen: ep("10.0.0.1", 1), AMFs: []AMFEndpoint{{Name: "a", Address: ep("10.1.0.1", 1)}}, Policy: steer.Policy(7)}, "policy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func waitMetric(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("metric never reached the expected value")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// metricValue reads one labelled series through the registry, as a scraper
// would see it.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					if m.Gauge != nil {
						return m.Gauge.GetValue()
					}
					return m.Counter.GetValue()
				}
			}
		}
	}
	return -1
}
