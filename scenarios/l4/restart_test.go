package l4

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

// openSession creates a TCP echo service on vip host n and opens one
// connection through it.
func openSession(t *testing.T, e *Env, name string, host int) (*TCPSession, Reply) {
	t.Helper()
	ctx := context.Background()
	vip := lab.VIP(0, host, false)
	svc := api.Service{Name: name, VIP: vip.String(), Port: EchoPort, Protocol: api.ProtocolTCP,
		Mode: api.ModeFullNAT, Endpoints: endpoints(e, EchoPort, false)}
	if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
		t.Fatal(err)
	}
	sess, err := DialTCPSession(ctx, e.Lab.Client, hostPort(vip, EchoPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	first, err := sess.Ask()
	if err != nil {
		t.Fatal(err)
	}
	return sess, first
}

func askSame(t *testing.T, sess *TCPSession, first Reply, when string) {
	t.Helper()
	for i := 0; i < 3; i++ {
		if r, err := sess.Ask(); err != nil || r.Server != first.Server {
			t.Fatalf("%s: %+v, %v (want answers from %s)", when, r, err, first.Server)
		}
	}
}

// A changed --max-conns recreates the conntrack map: its connections are
// migrated, not reset (this reset every connection before).
func TestMaxConnsChangeKeepsEstablishedConnections(t *testing.T) {
	e := up(t, 2)
	ctx := context.Background()
	sess, first := openSession(t, e, "maxconns", 30)
	if err := e.Daemon.RestartWith(ctx, "--max-conns=131072", "--max-conns-ipv6=4096"); err != nil {
		t.Fatal(err)
	}
	askSame(t, sess, first, "after a restart with --max-conns=131072")
	// Each family's map has its own size: the daemon passed both flags
	// down to the pinned maps.
	for m, want := range map[string]uint32{"conntrack4": 131072, "conntrack": 4096} {
		pinned, err := ebpf.LoadPinnedMap(filepath.Join(e.Daemon.PinPath(), m), nil)
		if err != nil {
			t.Fatal(err)
		}
		got := pinned.MaxEntries()
		pinned.Close()
		if got != want {
			t.Fatalf("pinned %s holds %d entries, want %d", m, got, want)
		}
	}
	h, err := e.Daemon.Client.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.ConntrackNotMigrated != 0 {
		t.Fatalf("health reports %d conntrack entries not migrated", h.ConntrackNotMigrated)
	}
	if !strings.Contains(e.Daemon.Log(), `"msg":"pinned map migrated"`) {
		t.Fatalf("no migration logged:\n%s", e.Daemon.Log())
	}
	// And back, after a crash this time.
	if err := e.Daemon.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := e.Daemon.RestartWith(ctx); err != nil {
		t.Fatal(err)
	}
	askSame(t, sess, first, "after kill -9 and a restart with the default --max-conns")
}

// A second daemon on the same state dir or pin path refuses before it
// touches the datapath: the first one's connections and API carry on.
func TestSecondInstanceRefusesBeforeTouchingTheDatapath(t *testing.T) {
	e := up(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sess, first := openSession(t, e, "single", 31)
	otherState := t.TempDir()
	freshPins := "/sys/fs/bpf/" + e.Lab.ID + "-second"
	t.Cleanup(func() { _ = os.RemoveAll(freshPins) })
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"same state dir and pin path", nil, "is in use by another telcolb"},
		{"same pin path, other state dir", []string{"--state-dir=" + otherState, "--api-address=127.0.0.1:8092"}, "pin path"},
		{"same state dir, other pin path", []string{"--bpf-pin-path=" + freshPins, "--api-address=127.0.0.1:8092"}, "state dir"},
	} {
		out, err := e.Daemon.RunAnother(ctx, tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Fatalf("%s: second daemon %v, output:\n%s\nwant a refusal naming the %q", tc.name, err, out, tc.want)
		}
		if strings.Contains(out, "attach") || strings.Contains(out, "pinned map") {
			t.Fatalf("%s: the second daemon touched the datapath:\n%s", tc.name, out)
		}
		askSame(t, sess, first, tc.name)
	}
	if _, err := os.Stat(freshPins); !os.IsNotExist(err) {
		t.Fatalf("a refused start left %s behind: %v", freshPins, err)
	}
	if _, err := e.Daemon.Client.Health(ctx); err != nil {
		t.Fatalf("first daemon's API after the refusals: %v", err)
	}
	// A refused start on a free lock (the API port is busy) leaves no pins
	// either.
	out, err := e.Daemon.RunAnother(ctx, "--state-dir="+otherState, "--bpf-pin-path="+freshPins)
	if err == nil || !strings.Contains(out, "listen on") {
		t.Fatalf("start on a busy API port: %v\n%s", err, out)
	}
	if _, err := os.Stat(freshPins); !os.IsNotExist(err) {
		t.Fatalf("a start refused on a busy port left %s behind: %v", freshPins, err)
	}
}

// The API on loopback needs the token too, and only root can read it.
func TestLoopbackAPIIsAuthenticated(t *testing.T) {
	e := up(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: HostDialer(e.Lab.LB), DisableKeepAlives: true}}
	for _, req := range []struct{ method, path, body string }{
		{http.MethodGet, "/v1/services", ""},
		{http.MethodPost, "/v1/services", `{"name":"evil","vip":"10.77.100.66","port":80,"protocol":"tcp","endpoints":[{"address":"10.77.2.11","port":80}]}`},
		{http.MethodDelete, "/v1/conntrack", ""},
		{http.MethodGet, "/metrics", ""},
	} {
		r, err := http.NewRequestWithContext(ctx, req.method, "http://"+APIAddress+req.path, strings.NewReader(req.body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s %s without a token: %d, want 401", req.method, req.path, resp.StatusCode)
		}
	}
	if _, err := e.Daemon.Client.GetService(ctx, "evil"); !api.IsNotFound(err) {
		t.Fatalf("unauthenticated create went through: %v", err)
	}
	st, err := os.Stat(e.Daemon.TokenFile)
	if err != nil || st.Mode().Perm()&0o077 != 0 {
		t.Fatalf("token file %s: mode %v, %v", e.Daemon.TokenFile, st.Mode(), err)
	}
	cat := exec.CommandContext(ctx, "cat", e.Daemon.TokenFile)
	cat.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cat.CombinedOutput(); err == nil {
		t.Fatalf("uid 65534 read the token: %q", out)
	}
	// telcolbctl as root finds it (here through --token-file, as the
	// harness's state dir is not the default one).
	if out, err := e.Daemon.Ctl(ctx, "health"); err != nil {
		t.Fatalf("telcolbctl: %v\n%s", err, out)
	}
	// A token file others can read is refused at start.
	if err := os.Chmod(e.Daemon.TokenFile, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(e.Daemon.TokenFile, 0o600)
	out, err := e.Daemon.RunAnother(ctx, "--state-dir="+t.TempDir(), "--bpf-pin-path=/sys/fs/bpf/"+e.Lab.ID+"-tok",
		"--api-address=127.0.0.1:8093", "--token-file="+e.Daemon.TokenFile)
	if err == nil || !strings.Contains(out, "chmod 600") {
		t.Fatalf("start with a 0644 token file: %v\n%s", err, out)
	}
	_ = os.RemoveAll("/sys/fs/bpf/" + e.Lab.ID + "-tok")
}

// A damaged or stray file in the store does not stop the daemon.
func TestDamagedServiceFileDoesNotStopTheDaemon(t *testing.T) {
	e := up(t, 2)
	ctx := context.Background()
	sess, first := openSession(t, e, "survivor", 32)
	svcDir := filepath.Join(e.Daemon.cfg.StateDir, "services")
	for name, content := range map[string]string{
		"broken.json":       `{"version":2,"ids":[7],"serv`,
		"survivor.json~":    "editor backup",
		"survivor.json.bak": "{}",
	} {
		if err := os.WriteFile(filepath.Join(svcDir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(svcDir, "subdir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := e.Daemon.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	askSame(t, sess, first, "after a restart over a damaged file")
	if _, err := e.Daemon.Client.GetService(ctx, "survivor"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.Daemon.cfg.StateDir, "damaged", "broken.json")); err != nil {
		t.Fatalf("damaged file not set aside: %v", err)
	}
	if !strings.Contains(e.Daemon.Log(), "broken.json") {
		t.Fatalf("damaged file not logged:\n%s", e.Daemon.Log())
	}
}

// Restart time is linear in services: the datapath's 16,383 services (its
// whole ID space) come back, and the API answers again, within a bound
// that only a quadratic start would miss (the figure is in the bench).
func TestRestartWithAFullServiceTable(t *testing.T) {
	e := up(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h, err := e.Daemon.Client.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := h.MaxServices
	if n < 1000 {
		t.Fatalf("datapath holds %d services", n)
	}
	svc := func(i int) api.Service {
		return api.Service{Name: fmt.Sprintf("s%05d", i), VIP: fmt.Sprintf("10.77.%d.%d", 150+i/250, 1+i%250), Port: EchoPort,
			Protocol: api.ProtocolTCP, Endpoints: endpoints(e, EchoPort, false)}
	}
	// All but the last go into the stopped daemon's store as it writes it
	// (16,383 creations through the API would take minutes); the daemon
	// programs them at start, and the last one comes through the API.
	if err := e.Daemon.Stop(); err != nil {
		t.Fatal(err)
	}
	services := filepath.Join(e.Daemon.cfg.StateDir, "services")
	if err := os.MkdirAll(services, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n-1; i++ {
		s := svc(i)
		api.SetDefaults(&s)
		raw, err := json.Marshal(map[string]any{"version": 2, "ids": []int{i + 1}, "service": s})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(services, s.Name+".json"), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Daemon.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if h, err = e.Daemon.Client.Health(ctx); err != nil || h.Services != n-1 {
		t.Fatalf("daemon started over %d stored services: %+v, %v", n-1, h, err)
	}
	if err := e.Daemon.Client.ApplyService(ctx, svc(n-1)); err != nil {
		t.Fatalf("service %d: %v", n, err)
	}
	// Service n+1 is a clear 507 naming the limit.
	err = e.Daemon.Client.ApplyService(ctx, api.Service{Name: "one-more", VIP: "10.78.0.1", Port: EchoPort,
		Protocol: api.ProtocolTCP, Endpoints: endpoints(e, EchoPort, false)})
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusInsufficientStorage || !strings.Contains(se.Body.Message, fmt.Sprint(n)) {
		t.Fatalf("service %d: %v, want 507 naming %d", n+1, err, n)
	}
	if err := e.Daemon.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	h, err = e.Daemon.Client.Health(ctx)
	if err != nil || h.Services != n {
		t.Fatalf("after restart: %+v, %v", h, err)
	}
	// The last service still forwards.
	last := fmt.Sprintf("10.77.%d.%d", 150+(n-1)/250, 1+(n-1)%250)
	sess, err := DialTCPSession(ctx, e.Lab.Client, last+":"+fmt.Sprint(EchoPort))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if _, err := sess.Ask(); err != nil {
		t.Fatalf("service %d after restart: %v", n, err)
	}
}

// TestKill9MidTransferKeepsFlows: TCP and UDP flows (default and fullnat)
// keep being answered by the same endpoint while the daemon is killed with
// SIGKILL and started again, every exchange in between included.
func TestKill9MidTransferKeepsFlows(t *testing.T) {
	e := up(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	type flow struct {
		name string
		ask  func() (Reply, error)
	}
	var flows []flow
	for i, mode := range []string{api.ModeDefault, api.ModeFullNAT} {
		for j, proto := range []string{api.ProtocolTCP, api.ProtocolUDP} {
			vip := lab.VIP(0, 40+2*i+j, false)
			port := EchoPort
			if proto == api.ProtocolUDP {
				port = UDPPort
			}
			svc := api.Service{Name: "kill-" + mode + "-" + proto, VIP: vip.String(), Port: uint16(port), Protocol: proto,
				Mode: mode, Endpoints: endpoints(e, port, false)}
			if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
				t.Fatal(err)
			}
			name := mode + "/" + proto
			if proto == api.ProtocolTCP {
				sess, err := DialTCPSession(ctx, e.Lab.Client, hostPort(vip, port))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { sess.Close() })
				flows = append(flows, flow{name, sess.Ask})
				continue
			}
			c, err := HostDialer(e.Lab.Client)(ctx, "udp", hostPort(vip, port))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			flows = append(flows, flow{name, func() (Reply, error) { return udpExchange(c) }})
		}
	}
	first := make([]string, len(flows))
	for i, f := range flows {
		r, err := f.ask()
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		first[i] = r.Server
	}
	done := make(chan struct{})
	errc := make(chan error, len(flows))
	for i, f := range flows {
		go func() {
			for n := 0; ; n++ {
				select {
				case <-done:
					errc <- nil
					return
				default:
				}
				r, err := f.ask()
				if err != nil || r.Server != first[i] {
					errc <- fmt.Errorf("%s: exchange %d around kill -9: %+v, %v (want %s)", f.name, n, r, err, first[i])
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	if err := e.Daemon.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := e.Daemon.Start(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	close(done)
	for range flows {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

// TestKill9MidTransferKeepsSCTPAssociations: a single-homed SCTP association
// (default and fullnat) carries a paced stream across kill -9 and restart of
// the daemon: every message echoed, one association, one endpoint.
func TestKill9MidTransferKeepsSCTPAssociations(t *testing.T) {
	e := up(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srvs := startSCTPServers(t, e, func(k int) netip.Addr { return e.BackendAddr(k, false) })
	defer stopAll(srvs)
	for i, mode := range []string{api.ModeDefault, api.ModeFullNAT} {
		t.Run(mode, func(t *testing.T) {
			vip := lab.VIP(0, 50+i, false)
			svc := api.Service{Name: "kill-sctp-" + mode, VIP: vip.String(), Port: sctpPort, Protocol: api.ProtocolSCTP,
				Mode: mode, Endpoints: endpoints(e, sctpPort, false)}
			if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
				t.Fatal(err)
			}
			const count = 60
			cl, err := sctppeer.StartClient(ctx, e.Lab.Client, sctppeer.ClientOptions{
				Bind: []netip.Addr{e.ClientAddr(false)}, Connect: []netip.Addr{vip}, Port: sctpPort,
				Count: count, Size: 200, Interval: 50 * time.Millisecond, Streams: 2, PPID: 60,
				Wait: 20 * time.Second, Timers: sctppeer.FastTimers})
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			if err := e.Daemon.Kill(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			if err := e.Daemon.Start(ctx); err != nil {
				t.Fatal(err)
			}
			res, err := cl.Wait(ctx)
			if err != nil || res.Echoed != count || res.Lost != 0 || res.Corrupt != 0 {
				t.Fatalf("client across kill -9: %v; %+v", err, res)
			}
			if len(res.ServerIDs) > 1 {
				t.Fatalf("association moved between endpoints: %v", res.ServerIDs)
			}
			t.Logf("%s: largest echo gap %d ms", mode, res.MaxGapMs)
		})
	}
}

// TestKill9MidTransferKeepsMultihomedSCTP: a multi-homed association keeps
// every message across kill -9 and restart of the daemon, and then still
// fails over to its secondary path through the restarted datapath.
func TestKill9MidTransferKeepsMultihomedSCTP(t *testing.T) {
	for _, c := range []mhCase{{n: 2, mode: api.ModeDefault, host: 60}, {n: 2, v6: true, mode: api.ModeFullNAT, host: 61}} {
		t.Run(c.name(), func(t *testing.T) {
			e := upLinks(t)
			srv := c.apply(t, e)
			kill := func() {
				if err := e.Daemon.Kill(); err != nil {
					t.Fatal(err)
				}
				time.Sleep(300 * time.Millisecond)
				if err := e.Daemon.Start(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			res := failover(t, e, srv, c.clientAddrs(e), c.vips()[0], kill, e.Lab.ClientIface(0))
			t.Logf("largest echo gap %d ms", res.MaxGapMs)
		})
	}
}
