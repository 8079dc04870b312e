package app

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha/sync"
)

// drainLab is lb1 (an HA node over an in-memory table, the ready gate of
// a daemon announcing 10.96.0.10 over BGP to a test router) and lb2, its
// peer, whose messages to lb1 (its acknowledgements) can be held back.
type drainLab struct {
	r        *testRouter
	c        *api.Client
	cfg      api.AdvertisementConfig
	lb1, lb2 *memCT
	ha1, ha2 *HA
	hold     *atomic.Bool
	log1     *logBuffer
}

func newDrainLab(t *testing.T, drainTimeout time.Duration) *drainLab {
	pair := newHAPair(t)
	l := &drainLab{lb1: newMemCT(), lb2: newMemCT(), hold: &atomic.Bool{}, log1: &logBuffer{}}
	pair.logs = map[string]*logBuffer{"lb1": l.log1}
	for i := range 50 {
		k := fmt.Sprintf("old%d", i)
		l.lb1.table[k] = ctRec(k, "est")
	}
	l.ha1 = pair.startWith("lb1", l.lb1, func(c *HAConfig) {
		c.DrainTimeout = drainTimeout
		c.Node.Machine.RetransmitTimeout = 50 * time.Millisecond
	})
	l.ha2 = pair.startWith("lb2", l.lb2, func(c *HAConfig) {
		c.Node.Impair = func(string) sync.Fault { return sync.Fault{Drop: l.hold.Load()} }
	})
	waitFor(t, "lb1's table on lb2, both ready", func() bool {
		return l.lb2.has("old49") && l.ha1.Waiting() == "" && l.ha2.Waiting() == ""
	})
	l.r = newTestRouter(t, "127.0.0.3")
	env := newEnv(t, func(c *Config) { c.Ready = l.ha1 })
	l.c = env.client(t, "")
	ctx := context.Background()
	l.cfg = advConfig(l.r.port)
	if err := l.c.PutAdvertisement(ctx, l.cfg); err != nil {
		t.Fatal(err)
	}
	if err := l.c.CreateService(ctx, webService()); err != nil {
		t.Fatal(err)
	}
	l.r.waitPrefixes(t, "10.96.0.10/32")
	return l
}

// drain PUTs the advertisement with Draining (it returns once lb1 has
// withdrawn) and reports when it returned on done.
func (l *drainLab) drain(t *testing.T) <-chan time.Time {
	done := make(chan time.Time, 1)
	cfg := l.cfg
	cfg.Draining = true
	go func() {
		if err := l.c.PutAdvertisement(context.Background(), cfg); err != nil {
			t.Errorf("drain: %v", err)
		}
		done <- time.Now()
	}()
	return done
}

func (l *drainLab) drainStatus(t *testing.T) *api.HADrainStatus {
	t.Helper()
	st, err := l.c.HA(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Drain
}

// TestDrainWaitsForThePeersAcknowledgement: with lb2's acknowledgements
// held back, a drain of lb1 keeps the VIP announced (GET /v1/ha: waiting
// for lb2) although lb2 already holds the flow opened just before; once
// they arrive lb1 withdraws, says so in its log, and the status says
// acknowledged. Undrained, lb1 announces again and a drain with lb2 down
// does not wait for it, and says that no peer holds its flows.
func TestDrainWaitsForThePeersAcknowledgement(t *testing.T) {
	l := newDrainLab(t, 30*time.Second)
	if st := l.drainStatus(t); st != nil {
		t.Fatalf("drain status before any drain: %+v", st)
	}
	l.hold.Store(true)
	l.lb1.local(ctRec("young", "syn")) // a flow opened just before the drain
	done := l.drain(t)
	// lb2 receives lb1's records (only its acknowledgements are lost) and
	// lb1 resends on its timer: a withdrawal now would be one without the
	// acknowledgement.
	waitFor(t, "the young flow on lb2", func() bool { return l.lb2.has("young") })
	time.Sleep(500 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("drain returned while lb2's acknowledgements are held back")
	default:
	}
	if got := l.r.prefixes(t); !slices.Equal(got, []string{"10.96.0.10/32"}) {
		t.Fatalf("router table %v while lb1 waits for lb2's acknowledgement, want the VIP still announced", got)
	}
	if st := l.drainStatus(t); st == nil || st.State != api.HADrainWaiting || !slices.Equal(st.Peers, []string{"lb2"}) || st.WaitSeconds < 0.5 {
		t.Fatalf("drain status while lb2's acknowledgements are held back: %+v, want waiting for lb2", st)
	}
	l.hold.Store(false)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("drain did not return once lb2 acknowledged")
	}
	l.r.waitPrefixes(t)
	if st := l.drainStatus(t); st == nil || st.State != api.HADrainAcknowledged || len(st.Peers) != 0 {
		t.Errorf("drain status after the acknowledgement: %+v", st)
	}
	if log := l.log1.String(); !strings.Contains(log, "drain: every peer up acknowledged every change; withdrawing the VIPs") {
		t.Errorf("lb1's log does not say it withdrew after the acknowledgement:\n%s", log)
	}
	// Undrained: announced again, no drain status.
	if err := l.c.PutAdvertisement(context.Background(), l.cfg); err != nil {
		t.Fatal(err)
	}
	l.r.waitPrefixes(t, "10.96.0.10/32")
	if st := l.drainStatus(t); st != nil {
		t.Errorf("drain status after the drain ended: %+v", st)
	}
	// lb2 down: nothing to wait for.
	_ = l.ha2.Close()
	waitFor(t, "lb2 down at lb1", func() bool { return !l.ha1.node.Up("lb2") })
	select {
	case <-l.drain(t):
	case <-time.After(10 * time.Second):
		t.Fatal("a drain with the peer down waits for it")
	}
	l.r.waitPrefixes(t)
	// Said as it is: nobody acknowledged, nobody holds lb1's flows.
	if st := l.drainStatus(t); st == nil || st.State != api.HADrainNoPeer || len(st.Peers) != 0 {
		t.Errorf("drain status with the peer down: %+v, want %s", st, api.HADrainNoPeer)
	}
	if log := l.log1.String(); !strings.Contains(log, "level=WARN msg=\"drain: no peer is up, so no node holds this node's flows") || !strings.Contains(log, "peers=[lb2]") {
		t.Errorf("lb1's log does not warn that no peer was up at the drain:\n%s", log)
	}
}

// TestDrainWithdrawsAfterTheTimeout: lb2 never acknowledges; lb1 waits the
// drain timeout, then withdraws anyway and names lb2 in its status and log.
func TestDrainWithdrawsAfterTheTimeout(t *testing.T) {
	const timeout = time.Second
	l := newDrainLab(t, timeout)
	l.hold.Store(true)
	l.lb1.local(ctRec("young", "syn"))
	start := time.Now()
	done := l.drain(t)
	var returned time.Time
	select {
	case returned = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("drain never returned with lb2 silent")
	}
	if waited := returned.Sub(start); waited < timeout {
		t.Fatalf("drain returned after %v, before the timeout of %v, without lb2's acknowledgement", waited, timeout)
	}
	l.r.waitPrefixes(t)
	if st := l.drainStatus(t); st == nil || st.State != api.HADrainTimeout || !slices.Equal(st.Peers, []string{"lb2"}) || st.WaitSeconds < timeout.Seconds() {
		t.Errorf("drain status after the timeout: %+v", st)
	}
	if log := l.log1.String(); !strings.Contains(log, "withdrawing the VIPs anyway") || !strings.Contains(log, "peers=[lb2]") {
		t.Errorf("lb1's log does not name lb2 at the timeout:\n%s", log)
	}
}

// TestDrainingNodeTakesNoFlowOver: a draining node takes no peer's flow
// over for its traffic here (what still arrives is in flight while the
// routes move); once the drain ends, the same traffic makes it the owner.
func TestDrainingNodeTakesNoFlowOver(t *testing.T) {
	start := newHAPair(t).start
	lb1, lb2 := newTimedCT(), newTimedCT()
	lb2.put("k", "v", time.Now())
	ha1, ha2 := start("lb1", lb1), start("lb2", lb2)
	waitFor(t, "lb2's flow on lb1, both ready", func() bool {
		return lb1.has("k") && ha1.Waiting() == "" && ha2.Waiting() == ""
	})
	ha1.Drain()
	time.Sleep(200 * time.Millisecond) // k's last packet on lb2 is older than the slack
	lb1.flowing(t, "k")
	time.Sleep(time.Second) // 10 refresh rounds
	if ha1.owns("k") || !ha1.isCopy("k") {
		t.Fatal("draining lb1 took lb2's flow over for its traffic")
	}
	ha1.SetDraining(false)
	waitFor(t, "lb1 owning k once undrained", func() bool { return ha1.owns("k") })
}
