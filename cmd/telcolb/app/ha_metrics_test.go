package app

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/ha/sync"
)

// TestHALivenessMetricsCountKeepalivesAndTimeouts: the sync's liveness
// counters reach the daemon's metrics. Idle and connected, lb2 sends
// keepalives; with every sync message dropped both ways (a cut sync link,
// the TCP connections open) lb2 closes lb1 as silent past its peer
// timeout, and telcolb_ha_peer_timeouts_total shows it. lb1's timeout is
// long: lb2's verdict is its own, not lb1's close.
func TestHALivenessMetricsCountKeepalivesAndTimeouts(t *testing.T) {
	pair := newHAPair(t)
	var cut atomic.Bool
	liveness := func(timeout time.Duration) func(*HAConfig) {
		return func(c *HAConfig) {
			c.Node.Machine.KeepaliveInterval, c.Node.Machine.PeerTimeout = 200*time.Millisecond, timeout
			c.Node.Impair = func(string) sync.Fault { return sync.Fault{Drop: cut.Load()} }
		}
	}
	lb1 := pair.startWith("lb1", newMemCT(), liveness(30*time.Second))
	lb2 := pair.startWith("lb2", newMemCT(), liveness(time.Second))
	const keepalives, timeouts = "telcolb_ha_keepalives_sent_total", "telcolb_ha_peer_timeouts_total"
	waitFor(t, "lb1 and lb2 connected", func() bool { return lb1.node.Up("lb2") && lb2.node.Up("lb1") })
	waitFor(t, "lb2's keepalives counted", func() bool { return haMetric(t, lb2, keepalives) >= 2 })
	if got := haMetric(t, lb2, timeouts); got != 0 {
		t.Fatalf("%v peer timeouts while lb1 is heard", got)
	}
	cut.Store(true)
	waitFor(t, "lb2's sync declaring lb1 lost", func() bool { return !lb2.node.Up("lb1") })
	// Lost, the peer stays down (its hellos are dropped): the counters
	// are still, so the metric and the sync's own count must agree.
	st := lb2.node.Stats()
	if st.SilentPeers < 1 {
		t.Fatalf("lb1 lost without a peer timeout (silent peers %d)", st.SilentPeers)
	}
	if got := haMetric(t, lb2, timeouts); got != float64(st.SilentPeers) {
		t.Errorf("%s %v, want the sync's %d", timeouts, got, st.SilentPeers)
	}
	if got := haMetric(t, lb2, keepalives); got != float64(st.Keepalives) || got < 2 {
		t.Errorf("%s %v, want the sync's %d (at least 2)", keepalives, got, st.Keepalives)
	}
}

// TestHAPeerRetransmitTimeoutFollowsSlowImports: lb2 takes 300 ms to
// import each batch, so lb1's acknowledgements come 300 ms late, past the
// 200 ms floor. lb1's retransmission timeout towards lb2 follows the
// measured delay above it, and telcolb_ha_peer_retransmit_timeout_seconds
// and GET /v1/ha show that timeout and the delay.
func TestHAPeerRetransmitTimeoutFollowsSlowImports(t *testing.T) {
	const delay = 300 * time.Millisecond
	pair := newHAPair(t)
	src := newTimedCT()
	lb1 := pair.start("lb1", src)
	pair.start("lb2", &slowImportCT{newTimedCT(), delay}) // ha_claim_test.go
	waitFor(t, "lb1 and lb2 connected", func() bool { return lb1.node.Up("lb2") })
	rto := func() float64 {
		reg := prometheus.NewPedanticRegistry()
		if err := reg.Register(lb1.Collector()); err != nil {
			t.Fatal(err)
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "telcolb_ha_peer_retransmit_timeout_seconds" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == "lb2" {
					return m.GetGauge().GetValue()
				}
			}
		}
		t.Fatal("no telcolb_ha_peer_retransmit_timeout_seconds{peer=\"lb2\"}")
		return 0
	}
	n := 0
	waitFor(t, "lb1's timeout towards lb2 above lb2's import delay", func() bool {
		n++
		src.change(fmt.Sprint("k", n), "v") // one change, one message, one measure
		time.Sleep(50 * time.Millisecond)
		st := lb1.Status().Peers[0]
		return st.AckDelaySeconds >= delay.Seconds() && rto() > st.AckDelaySeconds
	})
	st := lb1.Status().Peers[0]
	got := rto()
	if st.RetransmitTimeoutSeconds != got || got > 3.2 {
		t.Fatalf("GET /v1/ha says timeout %vs (ack delay %vs), the metric %vs: want the same, at most 3.2 s", st.RetransmitTimeoutSeconds, st.AckDelaySeconds, got)
	}
	t.Logf("lb2 imports in %v: lb1's ack delay %.3fs, timeout %.3fs after %d changes", delay, st.AckDelaySeconds, got, n)
}
