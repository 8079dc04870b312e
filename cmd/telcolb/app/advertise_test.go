package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	gapi "github.com/osrg/gobgp/v3/api"
	glog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/telcolb/telcolb/api"
)

// testRouter is a passive gobgp speaker on 127.0.0.1 standing in for the
// router; the daemon under test peers with it from srcAddr.
type testRouter struct {
	srv  *server.BgpServer
	port int
}

func newTestRouter(t *testing.T, srcAddrs ...string) *testRouter {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	r := server.NewBgpServer(server.LoggerOption(quietGoBGP{}))
	go r.Serve()
	ctx := context.Background()
	if err := r.StartBgp(ctx, &gapi.StartBgpRequest{Global: &gapi.Global{Asn: 65000, RouterId: "10.255.0.1", ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"}}}); err != nil {
		t.Fatal(err)
	}
	for _, a := range srcAddrs {
		if err := r.AddPeer(ctx, &gapi.AddPeerRequest{Peer: &gapi.Peer{
			Conf:      &gapi.PeerConf{NeighborAddress: a, PeerAsn: 65001},
			Transport: &gapi.Transport{PassiveMode: true},
			AfiSafis:  []*gapi.AfiSafi{{Config: &gapi.AfiSafiConfig{Family: &gapi.Family{Afi: gapi.Family_AFI_IP, Safi: gapi.Family_SAFI_UNICAST}, Enabled: true}}},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(r.Stop)
	return &testRouter{srv: r, port: port}
}

// prefixes lists the IPv4 prefixes in the router's table.
func (r *testRouter) prefixes(t *testing.T) []string {
	var out []string
	err := r.srv.ListPath(context.Background(), &gapi.ListPathRequest{TableType: gapi.TableType_GLOBAL, Family: &gapi.Family{Afi: gapi.Family_AFI_IP, Safi: gapi.Family_SAFI_UNICAST}}, func(d *gapi.Destination) {
		out = append(out, d.Prefix)
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func (r *testRouter) waitPrefixes(t *testing.T, want ...string) {
	t.Helper()
	sort.Strings(want)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := r.prefixes(t)
		if strings.Join(got, ",") == strings.Join(want, ",") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("router table %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func advConfig(port int) api.AdvertisementConfig {
	return api.AdvertisementConfig{
		NodeName: "node-a",
		BGP: &api.BGPConfig{ASN: 65001, RouterID: "10.255.0.3", Peers: []api.BGPPeer{{
			Name: "r1", Address: "127.0.0.1", ASN: 65000, Port: uint16(port), SourceAddress: "127.0.0.3", Password: "",
		}}},
		Advertisements: []api.Advertisement{{Name: "pub", Mode: api.AdvertiseBGP, Prefixes: []string{"10.96.0.0/24"}, Communities: []string{"65000:7"}}},
	}
}

func vipByAddr(t *testing.T, c *api.Client, vip string) api.VIPStatus {
	t.Helper()
	l, err := c.VIPs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range l {
		if v.VIP == vip {
			return v
		}
	}
	t.Fatalf("VIP %s not listed: %+v", vip, l)
	return api.VIPStatus{}
}

// TestAdvertisementFollowsServices runs the daemon's advertiser against a
// BGP router: a VIP is announced while its service exists and has a
// healthy endpoint, withdrawn when the endpoints fail, when the service is
// deleted and when the daemon stops, and announced again after a restart
// from the persisted configuration.
func TestAdvertisementFollowsServices(t *testing.T) {
	r := newTestRouter(t, "127.0.0.3")
	prober := &scriptedProber{}
	dir := t.TempDir()
	env := newEnv(t, func(c *Config) { c.Prober = prober; c.StateDir = dir })
	c := env.client(t, "")
	ctx := context.Background()

	// Bad configuration: 400 naming the field; nothing changes.
	bad := advConfig(r.port)
	bad.Advertisements[0].Peers = []string{"r9"}
	err := c.PutAdvertisement(ctx, bad)
	var se *api.StatusError
	if !asStatus(err, &se) || se.Code != 400 || se.Body.Field != "advertisements[0].peers[0]" {
		t.Fatalf("bad config: %v", err)
	}
	cfg := advConfig(r.port)
	cfg.BGP.Peers[0].Password = ""
	if err := c.PutAdvertisement(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	svc := webService()
	svc.Probe = &api.Probe{Type: api.ProbeTCP, IntervalSeconds: 2, TimeoutSeconds: 1, Retries: 1}
	if err := c.CreateService(ctx, svc); err != nil {
		t.Fatal(err)
	}
	other := webService()
	other.Name, other.VIP = "other", "10.97.0.1"
	if err := c.CreateService(ctx, other); err != nil {
		t.Fatal(err)
	}
	r.waitPrefixes(t, "10.96.0.10/32")
	eventually(t, "VIP announced via bgp/r1", func() bool {
		v := vipByAddr(t, c, "10.96.0.10")
		return len(v.Announced) == 1 && v.Announced[0] == "bgp/r1"
	})
	if v := vipByAddr(t, c, "10.97.0.1"); v.Reason != reasonNoAdvertisement || len(v.Announced) != 0 {
		t.Errorf("uncovered VIP: %+v", v)
	}
	st, err := c.Advertisement(ctx)
	if err != nil || len(st.BGPPeers) != 1 || st.BGPPeers[0].State != "established" || st.BGPPeers[0].PrefixesSent != 1 {
		t.Fatalf("status %+v %v", st, err)
	}

	// Every endpoint down: withdrawn, with the reason.
	prober.set("10.0.0.1:8080", true)
	prober.set("10.0.0.2:8080", true)
	r.waitPrefixes(t)
	if v := vipByAddr(t, c, "10.96.0.10"); v.Reason != reasonNoEndpoint {
		t.Errorf("reason %q", v.Reason)
	}
	prober.set("10.0.0.2:8080", false)
	r.waitPrefixes(t, "10.96.0.10/32")

	if err := c.DeleteService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	r.waitPrefixes(t)
	if err := c.CreateService(ctx, svc); err != nil {
		t.Fatal(err)
	}
	r.waitPrefixes(t, "10.96.0.10/32")

	// Draining: withdrawn while the service stays, with the reason; back
	// when the drain ends.
	cfg.Draining = true
	if err := c.PutAdvertisement(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	r.waitPrefixes(t)
	if v := vipByAddr(t, c, "10.96.0.10"); v.Reason != reasonDraining || len(v.Announced) != 0 {
		t.Errorf("draining: %+v", v)
	}
	cfg.Draining = false
	if err := c.PutAdvertisement(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	r.waitPrefixes(t, "10.96.0.10/32")

	// Stop: withdrawn at once (not after the hold time).
	env.stop()
	r.waitPrefixes(t)
	raw, err := readFileMode(dir + "/" + advertisementFileName)
	if err != nil || raw.mode != 0o600 {
		t.Fatalf("persisted config: %v mode %o", err, raw.mode)
	}
	// Restart over the same state dir: the configuration is back, so is the route.
	env2 := newEnv(t, func(c *Config) { c.Prober = &scriptedProber{}; c.StateDir = dir })
	_ = env2
	r.waitPrefixes(t, "10.96.0.10/32")
}

// TestAdvertisementPasswordNotReturned: GET never shows the MD5 password,
// the state file keeps it.
func TestAdvertisementPasswordNotReturned(t *testing.T) {
	env := newEnv(t, nil)
	c := env.client(t, "")
	cfg := advConfig(1179)
	cfg.BGP.Peers[0].Password = "s3cret"
	if err := c.PutAdvertisement(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	st, err := c.Advertisement(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(st)
	if strings.Contains(string(b), "s3cret") {
		t.Fatalf("password returned: %s", b)
	}
	raw, err := readFileMode(env.cfg.StateDir + "/" + advertisementFileName)
	if err != nil || !strings.Contains(raw.text, "s3cret") {
		t.Fatalf("password not persisted: %v", err)
	}
}

// TestAdvertisementFileAtStart: --advertisement-config is loaded at start;
// a bad file refuses the start naming the field.
func TestAdvertisementFileAtStart(t *testing.T) {
	good := writeFile(t, "adv.yaml", "nodeName: node-a\nbgp:\n  asn: 65001\n  routerID: 10.255.0.3\n  peers:\n  - {name: r1, address: 127.0.0.1, asn: 65000, port: 1179}\nadvertisements:\n- {name: pub, mode: bgp, prefixes: [10.96.0.0/24]}\n")
	env := newEnv(t, func(c *Config) { c.Advertise.File = good })
	st, err := env.client(t, "").Advertisement(context.Background())
	if err != nil || len(st.Config.Advertisements) != 1 || st.Config.BGP.Peers[0].Name != "r1" {
		t.Fatalf("%+v %v", st, err)
	}
	bad := writeFile(t, "bad.yaml", "bgp:\n  asn: 0\n")
	_, err = NewServer(Config{Datapath: newFakeDatapath(), StateDir: t.TempDir(), Prober: &scriptedProber{}, Logger: testLogger(t), Advertise: AdvertiseConfig{File: bad}})
	if err == nil || !strings.Contains(err.Error(), "bgp.asn") {
		t.Fatalf("bad file: %v", err)
	}
	l2 := writeFile(t, "l2.yaml", "nodeName: a\nl2:\n  members: [{name: a, address: '127.0.0.1:7946'}]\nadvertisements:\n- {name: lan, mode: l2, prefixes: [10.96.0.0/24]}\n")
	// An l2 advertisement runs the L2 announcer (ha/l2 over ha/member).
	srv, err := NewServer(Config{Datapath: newFakeDatapath(), StateDir: t.TempDir(), Prober: &scriptedProber{}, Logger: testLogger(t), Advertise: AdvertiseConfig{File: l2}})
	if err != nil {
		t.Fatalf("l2 file: %v", err)
	}
	defer srv.Close()
	srv.adv.mu.Lock()
	_, running := srv.adv.announcers[api.AdvertiseL2]
	srv.adv.mu.Unlock()
	if !running {
		t.Fatal("an l2 advertisement started no L2 announcer")
	}
}

func TestPlan(t *testing.T) {
	cfg := api.AdvertisementConfig{Advertisements: []api.Advertisement{
		{Name: "a", Mode: api.AdvertiseBGP, Prefixes: []string{"10.0.0.0/24"}},
		{Name: "b", Mode: api.AdvertiseBGP, Prefixes: []string{"10.0.1.0/24"}},
		{Name: "c", Mode: api.AdvertiseL2, Prefixes: []string{"10.0.0.0/16"}},
	}}
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	served := map[netip.Addr]*servedVIP{
		a("10.0.0.1"): {addr: a("10.0.0.1"), healthy: true},
		a("10.0.1.1"): {addr: a("10.0.1.1"), healthy: false},
		a("10.0.2.1"): {addr: a("10.0.2.1"), healthy: true},
		a("10.9.0.1"): {addr: a("10.9.0.1"), healthy: true},
	}
	by, reasons := plan(cfg, served, false)
	got := fmt.Sprint(by[api.AdvertiseBGP], by[api.AdvertiseL2])
	if len(by[api.AdvertiseBGP]) != 1 || by[api.AdvertiseBGP][0].Advertisement.Name != "a" || len(by[api.AdvertiseL2]) != 2 {
		t.Fatalf("plan: %s", got)
	}
	if reasons[a("10.0.1.1")] != reasonNoEndpoint || reasons[a("10.9.0.1")] != reasonNoAdvertisement || reasons[a("10.0.0.1")] != "" {
		t.Fatalf("reasons %v", reasons)
	}
	by, reasons = plan(cfg, served, true)
	if len(by) != 0 || reasons[a("10.0.0.1")] != reasonStopping {
		t.Fatalf("stopping: %v %v", by, reasons)
	}
}

type fileInfo struct {
	text string
	mode uint32
}

func readFileMode(path string) (fileInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileInfo{}, err
	}
	raw, err := os.ReadFile(path)
	return fileInfo{text: string(raw), mode: uint32(st.Mode().Perm())}, err
}

// quietGoBGP drops the test router's logs.
type quietGoBGP struct{}

func (quietGoBGP) Panic(msg string, _ glog.Fields) { panic(msg) }
func (quietGoBGP) Fatal(string, glog.Fields)       {}
func (quietGoBGP) Error(string, glog.Fields)       {}
func (quietGoBGP) Warn(string, glog.Fields)        {}
func (quietGoBGP) Info(string, glog.Fields)        {}
func (quietGoBGP) Debug(string, glog.Fields)       {}
func (quietGoBGP) SetLevel(glog.LogLevel)          {}
func (quietGoBGP) GetLevel() glog.LogLevel         { return glog.ErrorLevel }
