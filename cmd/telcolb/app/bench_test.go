package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/dataplane"
)

// Restart figures (make bench): API downtime is the time from the old
// server's close to the new one answering /v1/health, which is the start's
// whole cost: datapath load (pinned maps, migration check, active recount)
// and every stored service re-applied. Creation rate is through the API
// with the durable store (one fsync'd file per service).

func benchService(i int) api.Service {
	return api.Service{Name: fmt.Sprintf("svc-%05d", i), VIP: fmt.Sprintf("10.%d.%d.%d", 100+i/65536, i/256%256, i%256),
		Port: 80, Protocol: api.ProtocolTCP, Mode: api.ModeFullNAT,
		Endpoints: []api.Endpoint{{Address: "10.0.0.1", Port: 8080}, {Address: "10.0.0.2", Port: 8080}}}
}

// startBenchServer starts a server over dp and returns its client and a
// stop function.
func startBenchServer(t *testing.T, dp Datapath, dir string) (*api.Client, func()) {
	t.Helper()
	srv, err := NewServer(Config{Datapath: dp, StateDir: dir, Prober: &scriptedProber{}, Logger: testLogger(t), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	c, err := api.NewClient(api.ClientConfig{BaseURL: hs.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Health(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c, func() { hs.Close(); srv.Close() }
}

func TestBenchRestartRealDatapath(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the restart benchmark")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (eBPF)")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	pin := "/sys/fs/bpf/telcolb-bench-" + hex.EncodeToString(b)
	load := func() *dataplane.Datapath {
		d, err := dataplane.Load(dataplane.Config{PinPath: pin, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	dp := load()
	defer func() { _ = dp.Destroy() }()
	dir := t.TempDir()
	c, stop := startBenchServer(t, dp, dir)
	n := int(dp.MaxServiceID())
	start := time.Now()
	for i := 1; i <= n; i++ {
		if err := c.ApplyService(context.Background(), benchService(i)); err != nil {
			t.Fatal(err)
		}
	}
	rate := float64(n) / time.Since(start).Seconds()
	fmt.Printf("BENCH api_services_created_per_s %.0f /s target >= 200\n", rate)
	stop()
	_ = dp.Close()

	start = time.Now()
	dp = load()
	_, stop = startBenchServer(t, dp, dir)
	down := time.Since(start)
	stop()
	fmt.Printf("BENCH api_restart_downtime_%dsvc_ms %.0f ms target <= 2000\n", n, down.Seconds()*1000)
}

func TestBenchRestart10000ServicesControlPlane(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the restart benchmark")
	}
	for _, n := range []int{1000, 10000} {
		dir := t.TempDir()
		dp := newFakeDatapath()
		dp.maxID = uint32(n)
		c, stop := startBenchServer(t, dp, dir)
		start := time.Now()
		for i := 1; i <= n; i++ {
			if err := c.ApplyService(context.Background(), benchService(i)); err != nil {
				t.Fatal(err)
			}
		}
		rate := float64(n) / time.Since(start).Seconds()
		stop()
		start = time.Now()
		dp2 := newFakeDatapath()
		dp2.maxID = uint32(n)
		_, stop = startBenchServer(t, dp2, dir)
		down := time.Since(start)
		stop()
		// The datapath holds 1023 services (LB_MAX_SERVICES): 10,000 is the
		// control plane alone over an in-memory datapath.
		fmt.Printf("BENCH api_services_created_per_s_fakedp_%dsvc %.0f /s target >= 200\n", n, rate)
		fmt.Printf("BENCH api_restart_downtime_fakedp_%dsvc_ms %.0f ms target <= 2000\n", n, down.Seconds()*1000)
	}
}
