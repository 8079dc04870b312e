package app

import (
	"context"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/dataplane"
	"github.com/telcolb/telcolb/scenarios/bench/figure"
)

// Restart figures (make bench): API downtime is the time from the old
// server's close to the new one answering /v1/health, which is the start's
// whole cost: datapath load (object, pinned maps, counter slots, active
// recount) and every stored service re-applied. Creation rate is through
// the API with the durable store (one fsync'd file per service) over the
// real datapath. The peer, run side by side in every round, is the same
// restart of 10,000 services over the in-memory datapath: the control
// plane alone, so the ratio is what the eBPF datapath adds.

// downtime stops d and starts a daemon over the same pin path and state,
// returning the new one and how long the API was gone.
func restartDaemon(t testing.TB, d *daemon, pin, dir string) (*daemon, time.Duration) {
	d.stop(t)
	start := time.Now()
	d = startDaemon(t, pin, dir)
	return d, time.Since(start)
}

// fakeRestart is the control-plane-only peer: n stored services restored
// over the in-memory datapath.
func fakeRestart(t testing.TB, dir string, n int) time.Duration {
	start := time.Now()
	dp := newFakeDatapath()
	dp.maxID = dataplane.MaxServices - 1
	srv, err := NewServer(Config{Datapath: dp, StateDir: dir, Prober: &scriptedProber{}, Logger: testLogger(t), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer func() { hs.Close(); _ = srv.Close() }()
	c, err := api.NewClient(api.ClientConfig{BaseURL: hs.URL})
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.Health(context.Background())
	if err != nil || h.Services != n {
		t.Fatalf("fake restart: %+v %v", h, err)
	}
	return time.Since(start)
}

func TestBenchRestartRealDatapath(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the restart benchmark")
	}
	requireDatapath(t)
	ctx := context.Background()
	ms := func(d time.Duration) float64 { return d.Seconds() * 1000 }
	variants := []figure.Variant{
		{Name: "1k", Measure: func(int) (map[string]float64, error) {
			const n = 1000
			pin, dir := testPinPath(t), t.TempDir()
			d := startDaemon(t, pin, dir)
			start := time.Now()
			for i := 1; i <= n; i++ {
				if err := d.c.ApplyService(ctx, manyServices(i)); err != nil {
					return nil, err
				}
			}
			rate := float64(n) / time.Since(start).Seconds()
			d, down := restartDaemon(t, d, pin, dir)
			d.stop(t)
			_ = os.RemoveAll(pin)
			return map[string]float64{"create_per_s": rate, "down_1k": ms(down)}, nil
		}},
		{Name: "10k", Measure: func(int) (map[string]float64, error) {
			const n = 10000
			pin, dir := testPinPath(t), t.TempDir()
			writeStore(t, dir, n, dataplane.MaxServices-1)
			d := startDaemon(t, pin, dir)
			d, down := restartDaemon(t, d, pin, dir)
			d.stop(t)
			_ = os.RemoveAll(pin)
			return map[string]float64{"down_10k": ms(down)}, nil
		}},
		{Name: "10k-control-plane", Measure: func(int) (map[string]float64, error) {
			const n = 10000
			dir := t.TempDir()
			writeStore(t, dir, n, dataplane.MaxServices-1)
			fakeRestart(t, dir, n) // the first start, as for the others
			return map[string]float64{"down_10k_fakedp": ms(fakeRestart(t, dir, n))}, nil
		}},
	}
	// A round costs about a minute on a loaded machine: the minimum.
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 5}, variants, func(s *figure.Samples) []figure.Figure {
		return []figure.Figure{
			s.Measured("api_services_created_per_s", "/s", figure.AtLeast(200), "create_per_s"),
			s.Measured("api_restart_downtime_1000svc_ms", "ms", figure.AtMost(2000), "down_1k"),
			s.Measured("api_restart_downtime_10000svc_ms", "ms", figure.AtMost(2000), "down_10k"),
			s.Ratio("api_restart_downtime_10000svc_vs_control_plane", figure.AtMost(3), "down_10k", "down_10k_fakedp"),
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}
