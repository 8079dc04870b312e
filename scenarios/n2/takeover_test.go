package n2

import (
	"context"
	"sync"
	"testing"
	"time"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb"
	"github.com/telcolb/telcolb/sctplb/steer"
	"github.com/telcolb/telcolb/sctplb/transport/memory"
)

// takeoverRun registers ues UEs through proxy A, stops A, and reconnects
// the gNB (asking for UE retention) to proxy B, which imported what A
// published when replicate is set; then every UE runs the second phase
// (uplink NAS, release, paging, service request). The HA sync between the
// two is replaced by a direct hand-over of A's records (cmd/telcolb/app
// tests the sync path).
func takeoverRun(t *testing.T, ues int, replicate bool) (Verdict, int, bool) {
	t.Helper()
	ngapl.SilenceLibraryLogs()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	n := memory.New(memory.Config{Queue: 4096})
	m := startMemAMFs(t, ctx, &wg, n, 3)
	amfs, amfEPs := m.amfs, m.eps
	var mu sync.Mutex
	var published []steer.Record
	proxy := func(addr string, publish bool) (*sctplb.Proxy, context.CancelFunc) {
		cfg := sctplb.Config{Transport: n, Listen: mep(addr, 38412), AMFs: amfEPs, Policy: steer.RoundRobin,
			SetupWait: 200 * time.Millisecond, TickInterval: 10 * time.Millisecond}
		if publish {
			cfg.Publish = func(r []steer.Record) { mu.Lock(); published = append(published, r...); mu.Unlock() }
		}
		p, err := sctplb.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		pctx, stop := context.WithCancel(ctx)
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.Run(pctx) }()
		return p, stop
	}
	_, stopA := proxy("10.0.0.1", replicate)
	defer stopA()
	pb, stopB := proxy("10.0.0.2", replicate)
	defer stopB()

	g, err := NewGNB(GNBConfig{Name: "gnb1", Transport: n, Remote: mep("10.0.0.1", 38412), GNBID: 1, UEs: ues, SetID: 0x3f8, Wait: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	connect := func() {
		var cerr error
		for try := 0; try < 50; try++ { // the proxy may not listen yet
			if cerr = g.Connect(ctx); cerr == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal(cerr)
	}
	connect()
	defer g.Close()
	g.Register(ctx)
	time.Sleep(100 * time.Millisecond) // A's last changes published
	if replicate {
		mu.Lock()
		recs := published
		mu.Unlock()
		if err := pb.Import(ctx, recs); err != nil {
			t.Fatal(err)
		}
	}
	// A dies; the gNB reconnects to B (the VIP moved), keeping its UEs.
	stopA()
	_ = g.Close()
	g.cfg.Remote, g.cfg.RetainUEs = mep("10.0.0.2", 38412), true
	connect()
	g.Continue(ctx, nil)
	// The last Release Completes may still be on their way to the AMFs.
	var v Verdict
	var rep GNBReport
	for try := 0; try < 100; try++ {
		var areps []AMFReport
		for _, a := range amfs {
			areps = append(areps, a.Report())
		}
		rep = g.Report()
		if v = Check([]GNBReport{rep}, areps, -1); len(unexpected(v.Problems)) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	same := 0
	for _, u := range rep.UEs {
		if u.Registered && u.UplinkPointer == int(u.RegPointer) && u.UplinkPointer != 0 {
			same++
		}
	}
	return v, same, g.Retained()
}

// unexpected drops the one problem the scenario causes on purpose: the
// gNB reports the loss of its first association once.
func unexpected(problems []string) []string {
	var out []string
	for _, p := range problems {
		if p != "gnb gnb1: association lost: EOF" {
			out = append(out, p)
		}
	}
	return out
}

// After a takeover with replicated state, >= 99.9% of the UEs' next uplink
// NAS reaches the AMF that registered them, under the AMF-UE-NGAP-ID it
// gave (the AMF simulator answers only its own IDs with the right RAN ID),
// and every UE goes on through release, paging and service request.
func TestTakeoverKeepsUEsOnTheirAMF(t *testing.T) {
	const ues = 1000
	v, same, retained := takeoverRun(t, ues, true)
	if !retained {
		t.Error("the standby's NG Setup Response did not say ues-retained")
	}
	if same*1000 < ues*999 {
		t.Errorf("%d of %d UEs' uplink NAS reached their AMF after the takeover, want >= 99.9%%", same, ues)
	}
	if problems := unexpected(v.Problems); len(problems) > 0 {
		t.Errorf("problems: %v", problems)
	}
	t.Logf("takeover: %d/%d UEs resumed on their AMF", same, ues)
}

// Without replication the standby knows none of the UEs: their uplink NAS
// goes nowhere.
func TestTakeoverWithoutReplicationLosesUEs(t *testing.T) {
	const ues = 30
	_, same, retained := takeoverRun(t, ues, false)
	if retained {
		t.Error("a standby without replicated state answered ues-retained")
	}
	if same != 0 {
		t.Errorf("%d UEs resumed without replicated state", same)
	}
}
