package n2

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb"
	"github.com/telcolb/telcolb/sctplb/steer"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/memory"
)

func mep(addr string, port uint16) transport.Endpoint {
	return transport.Endpoint{Addrs: []netip.Addr{netip.MustParseAddr(addr)}, Port: port}
}

// memAMFs are AMF simulators on the in-memory network.
type memAMFs struct {
	amfs  []*AMF
	eps   []sctplb.AMFEndpoint
	stops []context.CancelFunc // one per AMF: it stops serving
}

// startMemAMFs starts count AMF simulators amf1.. listening on 10.1.0.1..
// (one GUAMI region and set, pointer i+1), each serving on n until ctx
// ends or its stop is called; wg waits for them.
func startMemAMFs(t *testing.T, ctx context.Context, wg *sync.WaitGroup, n transport.Transport, count int) memAMFs {
	t.Helper()
	var m memAMFs
	for i := 0; i < count; i++ {
		name, at := fmt.Sprintf("amf%d", i+1), mep(fmt.Sprintf("10.1.0.%d", i+1), 38412)
		a, err := NewAMF(AMFConfig{Name: name, Transport: n, Listen: at, Region: 0xca, SetID: 0x3f8, Pointer: uint8(i + 1)})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := a.Listen()
		if err != nil {
			t.Fatal(err)
		}
		actx, stop := context.WithCancel(ctx)
		wg.Add(1)
		go func() { defer wg.Done(); _ = a.Serve(actx, ln) }()
		m.amfs = append(m.amfs, a)
		m.eps = append(m.eps, sctplb.AMFEndpoint{Name: name, Address: at})
		m.stops = append(m.stops, stop)
	}
	return m
}

// simRun is the lab scenario on the in-memory network: the same simulators
// and checks, without namespaces, so it runs everywhere.
func simRun(t *testing.T, ues int, kill int) Verdict {
	t.Helper()
	ngapl.SilenceLibraryLogs()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := memory.New(memory.Config{Queue: 4096})
	pcfg := sctplb.Config{Transport: n, Listen: mep("10.0.0.1", 38412), Policy: steer.RoundRobin, SetupWait: 200 * time.Millisecond, TickInterval: 10 * time.Millisecond}
	m := startMemAMFs(t, ctx, &wg, n, 3)
	amfs, stops := m.amfs, m.stops
	pcfg.AMFs = m.eps
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	p, err := sctplb.New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = p.Run(ctx) }()
	var gnbs []*GNB
	for i := 0; i < 2; i++ {
		g, err := NewGNB(GNBConfig{Name: fmt.Sprintf("gnb%d", i+1), Transport: n, Remote: pcfg.Listen, GNBID: uint32(i + 1), UEs: ues / 2, RANBase: uint32(i) * 100000, SetID: 0x3f8})
		if err != nil {
			t.Fatal(err)
		}
		var cerr error
		for try := 0; try < 50; try++ { // the proxy may not listen yet
			if cerr = g.Connect(ctx); cerr == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if cerr != nil {
			t.Fatal(cerr)
		}
		defer g.Close()
		gnbs = append(gnbs, g)
	}
	phase := func(fn func(g *GNB)) {
		var pw sync.WaitGroup
		for _, g := range gnbs {
			pw.Add(1)
			go func() { defer pw.Done(); fn(g) }()
		}
		pw.Wait()
	}
	phase(func(g *GNB) { g.Register(ctx) })
	var lost []uint8
	dead := -1
	if kill > 0 {
		stops[kill-1]()
		lost, dead = []uint8{uint8(kill)}, kill
	}
	phase(func(g *GNB) { g.Continue(ctx, lost) })
	// The last Release Completes may still be on their way to the AMFs.
	var v Verdict
	for try := 0; try < 100; try++ {
		var greps []GNBReport
		for _, g := range gnbs {
			greps = append(greps, g.Report())
		}
		var areps []AMFReport
		for i, a := range amfs {
			if i+1 != kill {
				areps = append(areps, a.Report())
			}
		}
		if v = Check(greps, areps, dead); len(v.Problems) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return v
}

func TestEveryUEReachesItsAMFOverTheProxy(t *testing.T) {
	tests := []struct {
		name string
		ues  int
		kill int
	}{
		{"all AMFs up", 300, 0},
		{"AMF 2 dies between the phases", 300, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := simRun(t, tt.ues, tt.kill)
			for _, p := range v.Problems {
				t.Error(p)
			}
			for ptr := uint8(1); ptr <= 3; ptr++ {
				if v.Registered[ptr] == 0 {
					t.Errorf("no UE registered with AMF %d: %v", ptr, v.Registered)
				}
			}
			live := tt.ues
			if tt.kill > 0 {
				live -= v.Registered[uint8(tt.kill)]
				if v.Rehomed != v.Registered[uint8(tt.kill)] || v.Rehomed == 0 {
					t.Errorf("%d of the dead AMF's %d UEs came back on a live AMF", v.Rehomed, v.Registered[uint8(tt.kill)])
				}
			}
			if v.ServiceRequests != live {
				t.Errorf("%d service requests reached the AMF their 5G-S-TMSI names, want %d", v.ServiceRequests, live)
			}
		})
	}
}
