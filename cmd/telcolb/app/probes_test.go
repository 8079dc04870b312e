package app

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/telcolb/telcolb/api"
)

func TestProbeResultsFlipStateAfterRetriesConsecutiveResults(t *testing.T) {
	fail := errors.New("down")
	tests := []struct {
		name    string
		retries int
		results []error
		flips   []bool // whether result i flipped the state
		healthy bool
	}{
		{"successes keep it up", 2, []error{nil, nil, nil}, []bool{false, false, false}, true},
		{"one failure is not enough", 2, []error{fail, nil, fail}, []bool{false, false, false}, true},
		{"two consecutive failures flip", 2, []error{fail, fail}, []bool{false, true}, false},
		{"retries 1 flips at once", 1, []error{fail, nil}, []bool{true, true}, true},
		{"recovery needs consecutive successes", 3, []error{fail, fail, fail, nil, nil, fail, nil, nil, nil},
			[]bool{false, false, true, false, false, false, false, false, true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newProbeManager(&scriptedProber{}, time.Millisecond, testLogger(t), func(string) {})
			k := endpointKey{"svc", netip.MustParseAddrPort("10.0.0.1:80")}
			w := &probeWorker{retries: tt.retries, healthy: true}
			m.workers[k] = w
			for i, r := range tt.results {
				if got := m.record(k, w, r); got != tt.flips[i] {
					t.Errorf("result %d (%v): flipped = %v, want %v", i, r, got, tt.flips[i])
				}
			}
			if h, _ := m.health("svc", k.endpoint); h != tt.healthy {
				t.Errorf("healthy = %v, want %v", h, tt.healthy)
			}
			fails := 0
			for _, r := range tt.results {
				if r != nil {
					fails++
				}
			}
			if got := m.failureCounts()[k]; got != uint64(fails) {
				t.Errorf("failure count = %d, want %d", got, fails)
			}
		})
	}
}

func TestProbeFlipIsPushedToTheDatapath(t *testing.T) {
	prober := &scriptedProber{}
	env := newEnv(t, func(c *Config) { c.Prober = prober; c.ProbeTimeUnit = 5 * time.Millisecond })
	c := env.client(t, "")
	ctx := context.Background()
	s := webService()
	s.Probe = &api.Probe{Type: api.ProbeTCP, IntervalSeconds: 2, TimeoutSeconds: 1, Retries: 2}
	if err := c.ApplyService(ctx, s); err != nil {
		t.Fatal(err)
	}
	downFlag := func(i int) bool {
		r, _ := env.dp.service(1)
		return r.Endpoints[i].Down
	}
	prober.set("10.0.0.2:8080", true)
	eventually(t, "endpoint 1 down in the datapath", func() bool { return downFlag(1) })
	if downFlag(0) {
		t.Error("healthy endpoint 0 marked down")
	}
	st, err := c.GetService(ctx, "web")
	if err != nil || st.Endpoints[1].Healthy || st.Endpoints[1].LastProbeError != "scripted failure" || !st.Endpoints[0].Healthy {
		t.Errorf("status = %+v, %v", st.Endpoints, err)
	}
	// An unrelated edit keeps the probe's verdict.
	s.IdleTimeoutSeconds = 30
	if err := c.ApplyService(ctx, s); err != nil {
		t.Fatal(err)
	}
	if !downFlag(1) {
		t.Error("edit brought the down endpoint back")
	}
	prober.set("10.0.0.2:8080", false)
	eventually(t, "endpoint 1 up again", func() bool { return !downFlag(1) })
	if n := testutil.ToFloat64(mustGauge(t, env, "telcolb_probe_failures_total", `service="web",endpoint="10.0.0.2:8080"`)); n < 2 {
		t.Errorf("probe failures = %v, want >= 2", n)
	}
	// Removing the probe stops probing and marks everything up.
	s.Probe = nil
	if err := c.ApplyService(ctx, s); err != nil {
		t.Fatal(err)
	}
	env.srv.probes.mu.Lock()
	n := len(env.srv.probes.workers)
	env.srv.probes.mu.Unlock()
	if n != 0 {
		t.Errorf("%d probe workers left after removing the probe", n)
	}
}

// listenTCP returns a listener on a free loopback port that accepts and
// closes connections.
func listenTCP(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln
}

// loopbackProber runs the real probes against a loopback listener standing
// in for the endpoint (the API refuses loopback endpoints).
type loopbackProber struct{ NetProber }

func (p loopbackProber) Probe(ctx context.Context, t ProbeTarget) error {
	t.Addr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), t.Addr.Port())
	return p.NetProber.Probe(ctx, t)
}

func TestRealTCPProbeFollowsTheServer(t *testing.T) {
	ln := listenTCP(t, "127.0.0.1:0")
	addr := netip.MustParseAddrPort(ln.Addr().String())
	env := newEnv(t, func(c *Config) { c.Prober = loopbackProber{}; c.ProbeTimeUnit = 20 * time.Millisecond })
	c := env.client(t, "")
	s := webService()
	s.Endpoints = []api.Endpoint{{Address: "10.0.0.1", Port: addr.Port()}}
	s.Probe = &api.Probe{Type: api.ProbeTCP, IntervalSeconds: 2, TimeoutSeconds: 1, Retries: 1}
	if err := c.ApplyService(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	down := func() bool { r, _ := env.dp.service(1); return r.Endpoints[0].Down }
	ln.Close()
	eventually(t, "endpoint down after its server stopped", down)
	listenTCP(t, addr.String())
	eventually(t, "endpoint up after its server came back", func() bool { return !down() })
}

func TestNetProberVerdicts(t *testing.T) {
	httpSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			w.WriteHeader(500)
		case "/moved":
			http.Redirect(w, r, "http://192.0.2.1/", http.StatusFound)
		default:
			_, _ = io.WriteString(w, "status: healthy")
		}
	}))
	t.Cleanup(httpSrv.Close)
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "secure ok")
	}))
	t.Cleanup(tlsSrv.Close)
	udpEcho := udpServer(t, func(req []byte) []byte {
		if string(req) == "ping" {
			return []byte("pong!")
		}
		return []byte("what?")
	})
	udpSilent := udpServer(t, func([]byte) []byte { return nil })
	tcpLn := listenTCP(t, "127.0.0.1:0")
	closedTCP := closedPort(t, "tcp")
	closedUDP := closedPort(t, "udp")
	ap := func(s string) netip.AddrPort {
		s = strings.TrimPrefix(strings.TrimPrefix(s, "http://"), "https://")
		return netip.MustParseAddrPort(s)
	}
	tests := []struct {
		name    string
		target  ProbeTarget
		wantErr string // "" means up
	}{
		{"tcp open", ProbeTarget{Type: api.ProbeTCP, Addr: ap(tcpLn.Addr().String())}, ""},
		{"tcp closed", ProbeTarget{Type: api.ProbeTCP, Addr: closedTCP}, "connection refused"},
		{"http ok", ProbeTarget{Type: api.ProbeHTTP, Addr: ap(httpSrv.URL), Request: "/healthz"}, ""},
		{"http body match", ProbeTarget{Type: api.ProbeHTTP, Addr: ap(httpSrv.URL), Response: "healthy"}, ""},
		{"http body mismatch", ProbeTarget{Type: api.ProbeHTTP, Addr: ap(httpSrv.URL), Response: "ready"}, `does not contain "ready"`},
		{"http 500", ProbeTarget{Type: api.ProbeHTTP, Addr: ap(httpSrv.URL), Request: "/fail"}, "status 500"},
		{"http redirect is up and not followed", ProbeTarget{Type: api.ProbeHTTP, Addr: ap(httpSrv.URL), Request: "/moved"}, ""},
		{"http closed", ProbeTarget{Type: api.ProbeHTTP, Addr: closedTCP}, "connection refused"},
		{"https self-signed", ProbeTarget{Type: api.ProbeHTTPS, Addr: ap(tlsSrv.URL), Response: "secure"}, ""},
		{"udp reply matches", ProbeTarget{Type: api.ProbeUDP, Addr: udpEcho, Request: "ping", Response: "pong"}, ""},
		{"udp reply mismatch", ProbeTarget{Type: api.ProbeUDP, Addr: udpEcho, Request: "hello", Response: "pong"}, `does not contain "pong"`},
		{"udp port unreachable", ProbeTarget{Type: api.ProbeUDP, Addr: closedUDP, Request: "ping"}, "port unreachable"},
		{"udp silence without expected reply", ProbeTarget{Type: api.ProbeUDP, Addr: udpSilent, Request: "x"}, ""},
		{"udp silence with expected reply", ProbeTarget{Type: api.ProbeUDP, Addr: udpSilent, Request: "x", Response: "y"}, "udp receive"},
		{"unknown type", ProbeTarget{Type: "quic", Addr: udpSilent}, "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.target.Timeout == 0 {
				tt.target.Timeout = 300 * time.Millisecond
			}
			err := NetProber{}.Probe(context.Background(), tt.target)
			checkProbe(t, err, tt.wantErr)
		})
	}
}

func checkProbe(t *testing.T, err error, wantErr string) {
	t.Helper()
	switch {
	case wantErr == "" && err != nil:
		t.Errorf("probe = %v, want up", err)
	case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
		t.Errorf("probe = %v, want error containing %q", err, wantErr)
	}
}

// inFreshNetns runs fn on a thread moved into a new, empty network
// namespace; the thread (and so the namespace) dies with the goroutine, so
// nothing is left behind even if fn fails.
func inFreshNetns(t *testing.T, loUp bool, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with us
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- &skipError{err}
			return
		}
		if loUp {
			lo, err := netlink.LinkByName("lo")
			if err == nil {
				err = netlink.LinkSetUp(lo)
			}
			if err != nil {
				errc <- err
				return
			}
		}
		errc <- fn()
	}()
	err := <-errc
	var se *skipError
	if errors.As(err, &se) {
		t.Skipf("cannot create a network namespace: %v", se.err)
	}
	return err
}

type skipError struct{ err error }

func (e *skipError) Error() string { return e.err.Error() }

func TestPingProbe(t *testing.T) {
	tests := []struct {
		name    string
		addr    string
		loUp    bool
		wantErr string
	}{
		{"ipv4 answered", "127.0.0.1", true, ""},
		{"ipv6 answered", "::1", true, ""},
		{"ipv4 unreachable", "127.0.0.1", false, "ping"},
		{"ipv6 unreachable", "::1", false, "ping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := inFreshNetns(t, tt.loUp, func() error {
				return NetProber{}.Probe(context.Background(), ProbeTarget{
					Type: api.ProbePing, Addr: netip.AddrPortFrom(netip.MustParseAddr(tt.addr), 0), Timeout: 500 * time.Millisecond})
			})
			checkProbe(t, err, tt.wantErr)
		})
	}
}

func udpServer(t *testing.T, answer func([]byte) []byte) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := answer(buf[:n]); out != nil {
				_, _ = pc.WriteTo(out, from)
			}
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

// closedPort returns a loopback port that was just bound and released, so
// nothing listens on it.
func closedPort(t *testing.T, network string) netip.AddrPort {
	t.Helper()
	var addr string
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = pc.LocalAddr().String()
		pc.Close()
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
	}
	return netip.MustParseAddrPort(addr)
}
