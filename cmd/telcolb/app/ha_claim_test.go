package app

import (
	"context"
	"testing"
	"time"

	"github.com/telcolb/telcolb/dataplane"
	"github.com/telcolb/telcolb/ha/sync"
	labha "github.com/telcolb/telcolb/scenarios/ha"
)

// slowDumpCT is a timedCT whose dump takes its clock first and returns
// late, as the datapath's does with a few thousand entries under load:
// the records' ages count from the dump's start.
type slowDumpCT struct {
	*timedCT
	delay time.Duration
}

func (m *slowDumpCT) DumpConntrack() ([]dataplane.Record, error) {
	recs, err := m.timedCT.DumpConntrack()
	time.Sleep(m.delay)
	return recs, err
}

// TestHASlowDumpTakesNoIdleCopy: lb1 owns an idle flow, lb2 holds its
// copy; both dumps take 300 ms (well over claimSlack). Refresh after
// refresh, lb2 must not mistake the dump's duration for traffic: it never
// takes the copy over and sends lb1 nothing.
func TestHASlowDumpTakesNoIdleCopy(t *testing.T) {
	certs, err := labha.WriteGroupCerts(t.TempDir(), "lb1", "lb2")
	if err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{"lb1": freePort(t), "lb2": freePort(t)}
	dps := map[string]*slowDumpCT{"lb1": {newTimedCT(), 300 * time.Millisecond}, "lb2": {newTimedCT(), 300 * time.Millisecond}}
	dps["lb1"].put("k1", "v1", time.Now().Add(-2*time.Second))
	has := map[string]*HA{}
	for _, n := range []string{"lb1", "lb2"} {
		peer := map[string]string{"lb1": "lb2", "lb2": "lb1"}[n]
		c := HAConfig{Refresh: 100 * time.Millisecond, JoinTimeout: time.Minute, Node: sync.NodeConfig{Self: n, Listen: addrs[n],
			Peers: []sync.Peer{{Name: peer, Addr: addrs[peer]}}, CertFile: certs[n].Cert, KeyFile: certs[n].Key, CAFile: certs[n].CA,
			RedialInterval: 50 * time.Millisecond}}
		h, err := StartHA(context.Background(), c, dps[n], testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		has[n] = h
	}
	waitFor(t, "k1 on lb2", func() bool { return dps["lb2"].has("k1") })
	// Several refresh rounds of both nodes.
	time.Sleep(2 * time.Second)
	if !has["lb2"].isCopy("k1") || has["lb2"].owns("k1") {
		t.Errorf("lb2 took over lb1's idle flow (copy %v, owned %v): a slow dump counted as traffic", has["lb2"].isCopy("k1"), has["lb2"].owns("k1"))
	}
	if n := dps["lb1"].importCount(); n != 0 {
		t.Errorf("lb1 imported %d records of its own idle flow back from lb2", n)
	}
	if !has["lb1"].owns("k1") {
		t.Error("lb1 no longer owns its flow")
	}
}
