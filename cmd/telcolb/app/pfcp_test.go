package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/l7parse/pfcp"
	sims "github.com/telcolb/telcolb/scenarios/pfcp"
	"github.com/telcolb/telcolb/sctplb"
)

// pfcpLoop is a loopback address per test process (port 8805 is fixed).
func pfcpLoop(host byte) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 87, byte(os.Getpid() % 250), host})
}

func TestPFCPServiceRunsAnN4ProxyWithSessionsPerUPF(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := newEnv(t, func(c *Config) { c.PFCP = PFCPConfig{T1: 300 * time.Millisecond, HeartbeatInterval: time.Second} })
	c := env.client(t, "")
	svc := api.Service{Name: "n4", VIP: pfcpLoop(1).String(), Port: pfcp.Port, Protocol: api.ProtocolUDP, PFCP: true}
	for i := range 2 {
		a := netip.AddrPortFrom(pfcpLoop(byte(10+i)), pfcp.Port)
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
		if err != nil {
			t.Fatal(err)
		}
		u := sims.NewUPFSim(a.Addr(), time.Now(), 0x100)
		go func() { _ = sims.ServeUPF(ctx, conn, u, false, time.Second) }()
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: a.Addr().String(), Port: pfcp.Port})
	}
	if err := c.ApplyService(ctx, svc); err != nil {
		t.Fatalf("create PFCP service: %v", err)
	}
	if n := env.dp.upsertCount(); n != 0 {
		t.Errorf("a PFCP service programmed %d datapath rules", n)
	}
	eventually(t, "both UPFs associated", func() bool {
		st, err := c.GetService(ctx, "n4")
		return err == nil && st.Endpoints[0].Healthy && st.Endpoints[1].Healthy
	})
	smfConn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(pfcpLoop(2), pfcp.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer smfConn.Close()
	smf := sims.NewSMFSim(pfcpLoop(2), time.Now())
	// Establish 20 sessions and keep them (Load deletes; run the phases by hand).
	done := make(chan error, 1)
	go func() {
		_, err := sims.RunSMF(ctx, smfConn, netip.AddrPortFrom(pfcpLoop(1), pfcp.Port), smf, sims.Load{Sessions: 20, Window: 4,
			Pause: func() {
				eventually(t, "sessions per UPF in the status", func() bool {
					st, err := c.GetService(ctx, "n4")
					return err == nil && st.ActiveConnections == 20 && st.Endpoints[0].ActiveConnections == 10 && st.Endpoints[1].ActiveConnections == 10
				})
				m := scrape(t, env)
				for _, want := range []string{
					fmt.Sprintf(`telcolb_pfcp_sessions{proxy="n4",upf="%v:8805"} 10`, pfcpLoop(10)),
					`telcolb_pfcp_messages_total{proxy="n4",side="smf",type="session-establishment-request"} 20`,
					`telcolb_pfcp_smf_associations{proxy="n4"} 1`,
				} {
					if !strings.Contains(m, want) {
						t.Errorf("/metrics lacks %s", want)
					}
				}
			}})
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := smf.Snapshot(); st.Deleted != 20 || st.Rejected != 0 {
		t.Fatalf("SMF %+v", st)
	}
	// Deleting the service stops the proxy and frees the port.
	if err := c.DeleteService(ctx, "n4"); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(pfcpLoop(1), pfcp.Port)))
	if err != nil {
		t.Fatalf("port still held after delete: %v", err)
	}
	l.Close()
}

func TestPFCPServiceOnANonLocalVIPFailsNamingTheVIP(t *testing.T) {
	env := newEnv(t, nil)
	c := env.client(t, "")
	svc := api.Service{Name: "n4", VIP: "192.0.2.77", Port: pfcp.Port, Protocol: api.ProtocolUDP, PFCP: true,
		Endpoints: []api.Endpoint{{Address: "192.0.2.10", Port: pfcp.Port}}}
	err := c.ApplyService(context.Background(), svc)
	var ae *api.StatusError
	if !errors.As(err, &ae) || ae.Code != 400 || ae.Body.Field != "vip" {
		t.Fatalf("apply = %v, want an error naming vip", err)
	}
	svc.VIP, svc.Select = pfcpLoop(3).String(), api.SelectHash
	err = c.ApplyService(context.Background(), svc)
	if !errors.As(err, &ae) || ae.Code != 400 || ae.Body.Field != "select" {
		t.Fatalf("apply with hash = %v, want an error naming select", err)
	}
}

// TestPFCPSessionsSurviveAServiceChangeAndADaemonRestart: an SMF holds 30
// sessions through a PFCP service; a third UPF is added (the proxy is
// rebuilt), then the daemon restarts on the same state dir; then the SMF
// modifies and deletes every session. It must see one UPF throughout: no
// rejection, no Recovery Time Stamp change. Deleting the service deletes
// its state.
func TestPFCPSessionsSurviveAServiceChangeAndADaemonRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	cfg := func(c *Config) {
		c.StateDir = dir
		c.PFCP = PFCPConfig{T1: 300 * time.Millisecond, HeartbeatInterval: time.Second}
	}
	env := newEnv(t, cfg)
	svc := api.Service{Name: "n4", VIP: pfcpLoop(21).String(), Port: pfcp.Port, Protocol: api.ProtocolUDP, PFCP: true}
	var upfs []*sims.UPFSim
	for i := range 3 {
		a := netip.AddrPortFrom(pfcpLoop(byte(22+i)), pfcp.Port)
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		u := sims.NewUPFSim(a.Addr(), time.Now(), 0x100)
		upfs = append(upfs, u)
		go func() { _ = sims.ServeUPF(ctx, conn, u, false, time.Second) }()
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: a.Addr().String(), Port: pfcp.Port})
	}
	two := svc
	two.Endpoints = svc.Endpoints[:2]
	if err := env.client(t, "").ApplyService(ctx, two); err != nil {
		t.Fatalf("create PFCP service: %v", err)
	}
	smfConn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(pfcpLoop(26), pfcp.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer smfConn.Close()
	smf := sims.NewSMFSim(pfcpLoop(26), time.Now())
	st, err := sims.RunSMF(ctx, smfConn, netip.AddrPortFrom(pfcpLoop(21), pfcp.Port), smf, sims.Load{Sessions: 30, Window: 4, T1: 300 * time.Millisecond, N1: 5,
		Pause: func() {
			if err := env.client(t, "").ApplyService(ctx, svc); err != nil {
				t.Errorf("add a UPF: %v", err)
			}
			env.stop()
			env = startEnv(t, Config{Datapath: newFakeDatapath(), StateDir: dir, Prober: &scriptedProber{}, Logger: testLogger(t),
				PFCP: PFCPConfig{T1: 300 * time.Millisecond, HeartbeatInterval: time.Second}})
			eventually(t, "the restarted daemon's proxy holds the 30 sessions", func() bool {
				st, err := env.client(t, "").GetService(ctx, "n4")
				return err == nil && st.ActiveConnections == 30 && len(st.Endpoints) == 3
			})
		}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Established != 30 || st.Modified != 60 || st.Deleted != 30 || st.Rejected != 0 || st.RecoveryChanges != 0 || st.WrongSEID != 0 {
		t.Fatalf("SMF across a service change and a daemon restart: %+v", st)
	}
	est := 0
	for _, u := range upfs {
		s := u.Snapshot()
		est += s.Established
		if s.Unknown != 0 || s.Duplicates != 0 {
			t.Errorf("UPF: %+v", s)
		}
	}
	if est != 30 {
		t.Errorf("UPFs established %d sessions for 30: something was replayed or re-established", est)
	}
	if err := env.client(t, "").DeleteService(ctx, "n4"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pfcp", "n4")); !os.IsNotExist(err) {
		t.Errorf("deleted service's PFCP state still there: %v", err)
	}
}

// TestPFCPSteeringRulesReachTheProxy: rules name endpoints the way the API
// does; the proxy gets them as its UPF names, in order.
func TestPFCPSteeringRulesReachTheProxy(t *testing.T) {
	m := newPFCPManager(PFCPConfig{}, "", nil, testLogger(t))
	svc := api.Service{Name: "n4", VIP: "10.9.0.1", Port: pfcp.Port, Protocol: api.ProtocolUDP, PFCP: true,
		Endpoints: []api.Endpoint{{Address: "10.9.1.1", Port: 8805}, {Address: "10.9.1.2", Port: 8806}},
		PFCPSteering: []api.PFCPSteeringRule{{DNN: "ims", Endpoints: []string{"10.9.1.2:8806"}},
			{SNSSAI: "2", Endpoints: []string{"10.9.1.1", "10.9.1.2"}}}}
	if err := api.Validate(&svc); err != nil {
		t.Fatal(err)
	}
	c, err := m.pfcpConfigOf(svc)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Steering) != 2 || c.Steering[0].DNN != "ims" || fmt.Sprint(c.Steering[0].UPFs) != "[10.9.1.2:8806]" ||
		c.Steering[1].SNSSAI != "2" || fmt.Sprint(c.Steering[1].UPFs) != "[10.9.1.1:8805 10.9.1.2:8806]" {
		t.Fatalf("steering %+v", c.Steering)
	}
	if _, err := sctplb.NewN4(c); err != nil {
		t.Fatalf("the proxy refuses the rules: %v", err)
	}
}

// TestPFCPMemoryOnlyProxyIsRebuiltOnItsPredecessorsState: without a state
// directory a changed PFCP service's proxy starts from the state of the
// one it replaces (handed over in memory), so its peers see the same
// Recovery Time Stamp. The change comes more than a second after the first
// start: a proxy starting afresh would stamp another second.
func TestPFCPMemoryOnlyProxyIsRebuiltOnItsPredecessorsState(t *testing.T) {
	m := newPFCPManager(PFCPConfig{}, "", prometheus.NewRegistry(), testLogger(t))
	t.Cleanup(m.close)
	svc := api.Service{Name: "n4", VIP: pfcpLoop(41).String(), Port: pfcp.Port, Protocol: api.ProtocolUDP, PFCP: true,
		Endpoints: []api.Endpoint{{Address: pfcpLoop(42).String(), Port: pfcp.Port}}}
	if err := m.apply(svc, nil); err != nil {
		t.Fatal(err)
	}
	first, _ := m.running("n4")
	before := first.State().Recovery
	time.Sleep(1100 * time.Millisecond)
	svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: pfcpLoop(43).String(), Port: pfcp.Port})
	if err := m.apply(svc, nil); err != nil {
		t.Fatal(err)
	}
	next, _ := m.running("n4")
	if next == first {
		t.Fatal("the changed service kept its proxy; want it rebuilt")
	}
	if after := next.State().Recovery; after != before {
		t.Fatalf("Recovery Time Stamp %d after the change, %d before: the new proxy did not start from its predecessor's state", after, before)
	}
}
