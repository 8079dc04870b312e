package sctplb

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/telcolb/telcolb/l7parse/diameter"
	lab "github.com/telcolb/telcolb/scenarios/diameter"
)

func freePort(t *testing.T) uint16 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// TestDiameterAgentOverTCPWithGoDiameterPeers runs the agent's TCP shell
// between a go-diameter client and three go-diameter servers: every
// request of a session lands on one server, the unknown vendor AVP
// arrives and comes back byte for byte, a server killed mid-run loses no
// answer (its sessions continue elsewhere), and the metrics count it.
func TestDiameterAgentOverTCPWithGoDiameterPeers(t *testing.T) {
	var servers []*lab.Server
	cfg := DiameterConfig{Listen: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(t)),
		Identity: diameter.Identity{Host: "agent.lab.example", Realm: "lab.example"}, Tw: 6 * time.Second, Tc: time.Second,
		RequestTimeout: 10 * time.Second, TickInterval: 50 * time.Millisecond, Name: "test"}
	for i := range 3 {
		s, err := lab.StartServer("127.0.0.1:0", fmt.Sprintf("ocs%d.lab.example", i), "ocs.lab.example")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Kill)
		servers = append(servers, s)
		cfg.Servers = append(cfg.Servers, DiameterServer{Name: s.Host, Addr: netip.MustParseAddrPort(s.Addr)})
	}
	reg := prometheus.NewPedanticRegistry()
	cfg.Registerer = reg
	a := startDiameterAgent(t, cfg)
	waitFor(t, 20*time.Second, func() bool {
		if len(a.Stats().Servers) != 3 {
			return false
		}
		for _, s := range a.Stats().Servers {
			if !s.Up {
				return false
			}
		}
		return true
	})
	c, err := lab.Dial(cfg.Listen.String(), "pcef.client.example", "client.example")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)

	const sessions, workers = 600, 8
	killAt := sessions / 2
	var killOnce sync.Once
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < sessions; i += workers {
				if i >= killAt {
					killOnce.Do(servers[0].Kill)
				}
				sid := fmt.Sprintf("pcef.client.example;%d;%d", time.Now().Unix(), i)
				for n, typ := range []uint32{diameter.CCInitial, diameter.CCUpdate, diameter.CCTermination} {
					rctx, rcancel := context.WithTimeout(t.Context(), 30*time.Second)
					ans, err := c.CCR(rctx, sid, "ocs.lab.example", typ, uint32(n))
					rcancel()
					if err != nil {
						errs <- err
						return
					}
					if ans.Result != diameter.Success {
						errs <- fmt.Errorf("%s: result %d from %s", sid, ans.Result, ans.Origin)
						return
					}
					if !bytes.Equal(ans.Opaque, lab.OpaqueAVP(sid)) {
						errs <- fmt.Errorf("%s: answer for session %q from %s: vendor AVP came back as %x", sid, ans.SessionID, ans.Origin, ans.Opaque)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Stickiness: a session's requests on one server, except the sessions
	// of the killed server, which continued on one other.
	where := map[string][]int{}
	for i, s := range servers {
		for sid, n := range s.Sessions() {
			where[sid] = append(where[sid], i)
			if i != 0 && n > 3 {
				t.Errorf("%s: %d requests on server %d", sid, n, i)
			}
			if got := s.Opaque(sid); !bytes.Equal(got, lab.OpaqueAVP(sid)) {
				t.Errorf("%s: server %d got vendor AVP %x", sid, i, got)
			}
		}
	}
	moved := 0
	for sid, ss := range where {
		if len(ss) > 2 || (len(ss) == 2 && ss[0] != 0 && ss[1] != 0) {
			t.Errorf("%s on servers %v", sid, ss)
		}
		if len(ss) == 2 {
			moved++
		}
	}
	if len(where) != sessions {
		t.Errorf("servers saw %d sessions, want %d", len(where), sessions)
	}
	if d := c.Duplicates(); d != 0 {
		t.Errorf("client got %d unexpected answers", d)
	}
	// The snapshot is refreshed every tick.
	time.Sleep(3 * cfg.TickInterval)
	for _, st := range a.Stats().Servers {
		if st.Sessions != 0 {
			t.Errorf("server %s holds %d bindings after every CCR-T", st.Name, st.Sessions)
		}
	}
	if n := testutil.ToFloat64(a.met.requests.WithLabelValues("client", "4", "CCR")); n != 3*sessions {
		t.Errorf("telcolb_diameter_requests_total{client,4,CCR} = %v, want %d", n, 3*sessions)
	}
	resent := 0
	for _, s := range servers {
		_, r := s.Counts()
		resent += r
	}
	if m := testutil.ToFloat64(a.met.resent.WithLabelValues(servers[1].Host)) + testutil.ToFloat64(a.met.resent.WithLabelValues(servers[2].Host)); int(m) != resent {
		t.Errorf("servers got %d requests with the T flag, the agent counted %v", resent, m)
	}
	t.Logf("%d sessions, %d moved off the killed server, %d pending requests re-sent with T", sessions, moved, resent)
	// Under the agent's lock: a reader may step the machine meanwhile.
	a.mu.Lock()
	clients := a.machine.Clients()
	a.mu.Unlock()
	if clients != 1 {
		t.Errorf("%d clients", clients)
	}
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in time")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startDiameterAgent opens an agent of cfg and serves it until the test
// ends.
func startDiameterAgent(t *testing.T, cfg DiameterConfig) *DiameterAgent {
	t.Helper()
	a, err := NewDiameter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return a
}
