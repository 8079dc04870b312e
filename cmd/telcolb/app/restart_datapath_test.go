package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/dataplane"
)

// Restarts of the daemon over the real eBPF datapath (maps pinned in
// bpffs, no interface attached: the maps are the state).

func requireDatapath(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root (eBPF maps): CI must run it as root")
		}
		t.Skip("needs root (eBPF maps)")
	}
}

// testPinPath is a fresh bpffs directory, removed when the test ends.
func testPinPath(t testing.TB) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	pin := "/sys/fs/bpf/tlbtest-" + hex.EncodeToString(b)
	// Nothing is attached: unpinning the maps is all there is to destroy.
	t.Cleanup(func() { _ = os.RemoveAll(pin) })
	return pin
}

// manyServices is service i of a large set: VIPs 10.100.0.0/14, one to
// three endpoints (so endpoint counter slots are not one per service).
func manyServices(i int) api.Service {
	s := api.Service{Name: fmt.Sprintf("svc-%05d", i), VIP: fmt.Sprintf("10.%d.%d.%d", 100+i/65536, i/256%256, i%256),
		Port: 80, Protocol: api.ProtocolTCP, Mode: api.ModeFullNAT}
	for e := 0; e <= i%3; e++ {
		s.Endpoints = append(s.Endpoints, api.Endpoint{Address: fmt.Sprintf("10.0.%d.%d", e, 1+i%250), Port: 8080})
	}
	return s
}

// writeStore writes services 1..n as the daemon stores them, service i
// with ID i: the fast way to a daemon with n services.
func writeStore(t testing.TB, dir string, n int, maxID uint32) {
	t.Helper()
	st := store{stateDir: dir, maxID: maxID}
	if err := os.MkdirAll(st.dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		s := manyServices(i)
		api.SetDefaults(&s)
		raw, err := json.Marshal(serviceFile{Version: storeVersion, IDs: []uint32{uint32(i)}, Service: s})
		if err != nil {
			t.Fatal(err)
		}
		// Not synced one by one: the test needs the files, not durability.
		if err := os.WriteFile(filepath.Join(st.dir(), serviceFileName(s.Name)), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// daemon is a server over a real datapath, as cmd/telcolb runs them
// (without interfaces).
type daemon struct {
	dp  *dataplane.Datapath
	srv *Server
	hs  *httptest.Server
	c   *api.Client
}

// startDaemon loads the datapath at pin and starts the server over dir;
// it returns once /v1/health answers.
func startDaemon(t testing.TB, pin, dir string) *daemon {
	t.Helper()
	dp, err := dataplane.Load(dataplane.Config{PinPath: pin, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("load datapath: %v", err)
	}
	srv, err := NewServer(Config{Datapath: dp, StateDir: dir, Prober: &scriptedProber{}, Logger: testLogger(t), Registry: prometheus.NewRegistry()})
	if err != nil {
		_ = dp.Close()
		t.Fatalf("server: %v", err)
	}
	d := &daemon{dp: dp, srv: srv, hs: httptest.NewServer(srv)}
	if d.c, err = api.NewClient(api.ClientConfig{BaseURL: d.hs.URL}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.c.Health(context.Background()); err != nil {
		t.Fatalf("health: %v", err)
	}
	return d
}

// stop ends the process's part; pinned maps stay, as after kill -9.
func (d *daemon) stop(t testing.TB) {
	t.Helper()
	d.hs.Close()
	if err := d.srv.Close(); err != nil {
		t.Error(err)
	}
	if err := d.dp.Close(); err != nil {
		t.Error(err)
	}
}

// ids is the server's service -> IDs allocation.
func (d *daemon) ids() map[string][]uint32 {
	d.srv.mu.Lock()
	defer d.srv.mu.Unlock()
	out := map[string][]uint32{}
	for n, ss := range d.srv.services {
		out[n] = append([]uint32(nil), ss.IDs...)
	}
	return out
}

// pinnedState reads, from the pinned maps themselves, every rule the
// datapath holds: service keys, and per valid service ID its info,
// endpoints (counter slots included), selection table and VIP list, as raw
// bytes. Two equal states forward every packet the same way.
func pinnedState(t testing.TB, pin string) map[string][]byte {
	t.Helper()
	open := func(name string) *ebpf.Map {
		m, err := ebpf.LoadPinnedMap(filepath.Join(pin, name), nil)
		if err != nil {
			t.Fatalf("open pinned %s: %v", name, err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	out := map[string][]byte{}
	services := open("services")
	var (
		k  []byte
		id uint32
	)
	it := services.Iterate()
	for it.Next(&k, &id) {
		out[fmt.Sprintf("key %x", k)] = fmt.Append(nil, id)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	infos, eps, sels, vips := open("svc_infos"), open("endpoints"), open("sel_tables"), open("svc_vip_list")
	for id := uint32(1); id < infos.MaxEntries(); id++ {
		var info []byte
		if err := infos.Lookup(id, &info); err != nil {
			t.Fatal(err)
		}
		if info[9]&0x01 == 0 { // svc_info.flags: SVC_F_VALID
			continue
		}
		out[fmt.Sprintf("info %d", id)] = info
		n := uint32(info[4]) | uint32(info[5])<<8 // svc_info.n_eps
		for i := uint32(0); i < n; i++ {
			var ep []byte
			if err := eps.Lookup(id*dataplane.MaxEndpoints+i, &ep); err != nil {
				t.Fatal(err)
			}
			out[fmt.Sprintf("endpoint %d/%d", id, i)] = ep
		}
		var sel, vl []byte
		if err := sels.Lookup(id, &sel); err != nil {
			t.Fatal(err)
		}
		if err := vips.Lookup(id, &vl); err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprintf("sel %d", id)], out[fmt.Sprintf("vips %d", id)] = sel, vl
	}
	return out
}

func diffState(a, b map[string][]byte) []string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			d = append(d, fmt.Sprintf("%s: %x -> %x", k, v, b[k]))
		}
	}
	for k, w := range b {
		if _, ok := a[k]; !ok {
			d = append(d, fmt.Sprintf("%s: new %x", k, w))
		}
	}
	sort.Strings(d)
	return d
}

// TestRestartWith10000ServicesOnTheDatapath: a daemon with 10,000 services
// on the real eBPF datapath (endpoint counter slots and all) is restarted;
// every rule, ID and slot is back exactly as it was, nothing is
// reassigned, and the API downtime is measured (reported, and held to a
// bound that only a start quadratic in services would break on a loaded
// machine: the 2 s target is the benchmark's).
func TestRestartWith10000ServicesOnTheDatapath(t *testing.T) {
	requireDatapath(t)
	const n = 10000
	pin, dir := testPinPath(t), t.TempDir()
	writeStore(t, dir, n, dataplane.MaxServices-1)
	start := time.Now()
	d := startDaemon(t, pin, dir)
	t.Logf("cold start with %d stored services: %s", n, time.Since(start).Round(time.Millisecond))
	ctx := context.Background()
	// Some churn through the API, so IDs and slots are not simply 1..n:
	// deleted services free theirs, new ones take them, others change size.
	for _, i := range []int{17, 4000, 9999} {
		if err := d.c.DeleteService(ctx, manyServices(i).Name); err != nil {
			t.Fatal(err)
		}
	}
	for i := n + 1; i <= n+5; i++ {
		if err := d.c.ApplyService(ctx, manyServices(i)); err != nil {
			t.Fatal(err)
		}
	}
	grown := manyServices(3)
	grown.Endpoints = append(grown.Endpoints, api.Endpoint{Address: "10.0.9.9", Port: 8080})
	if err := d.c.ApplyService(ctx, grown); err != nil {
		t.Fatal(err)
	}
	total := 0
	for name, ids := range d.ids() {
		if len(ids) != 1 {
			t.Fatalf("%s has IDs %v", name, ids)
		}
	}
	for i := 1; i <= n+5; i++ {
		switch i {
		case 17, 4000, 9999:
		case 3:
			total += len(grown.Endpoints)
		default:
			total += len(manyServices(i).Endpoints)
		}
	}
	if used, _ := d.dp.EndpointSlots(); used != total {
		t.Fatalf("%d endpoint counter slots in use, the services have %d endpoints", used, total)
	}
	ids := d.ids()
	before := pinnedState(t, pin)
	d.stop(t)

	start = time.Now()
	d = startDaemon(t, pin, dir)
	down := time.Since(start)
	defer d.stop(t)
	t.Logf("API downtime restarting with %d services on the eBPF datapath: %s", len(ids), down.Round(time.Millisecond))
	if down > 60*time.Second {
		t.Fatalf("restart with %d services took %s: the start is no longer linear", len(ids), down)
	}
	if got := d.ids(); len(got) != len(ids) {
		t.Fatalf("%d services after restart, %d before", len(got), len(ids))
	} else {
		for name, want := range ids {
			if g := got[name]; len(g) != 1 || g[0] != want[0] {
				t.Fatalf("service %s has ID %v after restart, %v before", name, g, want)
			}
		}
	}
	if diff := diffState(before, pinnedState(t, pin)); len(diff) > 0 {
		t.Fatalf("%d datapath entries changed across the restart, first: %v", len(diff), diff[:min(len(diff), 5)])
	}
	if used, _ := d.dp.EndpointSlots(); used != total {
		t.Fatalf("after restart: %d endpoint counter slots in use, want %d", used, total)
	}
	h, err := d.c.Health(ctx)
	if err != nil || h.Services != len(ids) || h.MaxServices != dataplane.MaxServices-1 {
		t.Fatalf("health after restart: %+v %v", h, err)
	}
	// The freed IDs were reused, and the next new service takes the lowest
	// free one: nothing was handed out twice.
	if err := d.c.ApplyService(ctx, manyServices(n+6)); err != nil {
		t.Fatal(err)
	}
	used := map[uint32]string{}
	for name, got := range d.ids() {
		if prev, dup := used[got[0]]; dup {
			t.Fatalf("ID %d held by %s and %s", got[0], prev, name)
		}
		used[got[0]] = name
	}
}
