package steer

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// countingHandler counts WARN records and remembers their attributes.
type countingHandler struct {
	mu    sync.Mutex
	warns int
	attrs []map[string]any
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.warns++
	a := map[string]any{}
	r.Attrs(func(x slog.Attr) bool { a[x.Key] = x.Value.Any(); return true })
	h.attrs = append(h.attrs, a)
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// TestHostileGNBGetsNoAmplification (issue 11, item 10): a gNB sending bad
// PDUs as fast as it can gets at most PeerErrorBurst Error Indications and
// causes at most PeerLogBurst log lines, then the configured rates; the rest
// is counted. Another gNB is not affected.
func TestHostileGNBGetsNoAmplification(t *testing.T) {
	h := &countingHandler{}
	s := newSim(t, 2, RoundRobin)
	s.m.cfg.Logger, s.m.log = slog.New(h), slog.New(h)
	ga, gb := s.addGNB(gnbA), s.addGNB(gnbB)
	h.warns = 0

	kinds := [][]byte{
		{0xde, 0xad, 0xbe, 0xef},                           // undecodable
		s.must(ngapl.UplinkNASTransport(77, 77, nil, loc)), // unknown UE
		s.must(ngapl.WithoutIE(s.must(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: 1, Location: loc})), ngapType.ProtocolIEIDNASPDU)), // missing IE
	}
	suppressed := map[string]int{}
	send := func(g AssocID, n int) {
		for i := 0; i < n; i++ {
			for _, a := range s.m.Step(s.now, GNBMessage{Assoc: g, Stream: 1, Data: kinds[i%len(kinds)]}) {
				if a.Kind == Suppressed {
					suppressed[a.Reason]++
				}
				s.do(a)
			}
			s.run()
		}
	}
	send(gnbA, 3000)
	if ga.errInd != 20 {
		t.Errorf("hostile gNB got %d Error Indications for 3000 bad PDUs, want the burst of 20", ga.errInd)
	}
	if suppressed["error-indication"] != 2980 {
		t.Errorf("suppressed Error Indications = %d, want 2980", suppressed["error-indication"])
	}
	if h.warns > 5 {
		t.Errorf("3000 bad PDUs caused %d WARN lines, want at most the burst of 5", h.warns)
	}
	// Another gNB still gets its answer.
	send(gnbB, 1)
	if gb.errInd != 1 {
		t.Errorf("other gNB got %d Error Indications, want 1", gb.errInd)
	}
	// The limits refill at their rates: 10 Error Indications and 1 line a second.
	s.now = s.now.Add(time.Second)
	before, warns := ga.errInd, h.warns
	send(gnbA, 100)
	if got := ga.errInd - before; got != 10 {
		t.Errorf("one second later: %d Error Indications, want 10", got)
	}
	if got := h.warns - warns; got != 1 {
		t.Fatalf("one second later: %d WARN lines, want 1", got)
	}
	if n, _ := h.attrs[len(h.attrs)-1]["suppressed"].(int64); n == 0 {
		t.Errorf("the line after a quiet spell does not say how many it stands for: %v", h.attrs[len(h.attrs)-1])
	}
}

// TestRepeatedNGSetupAnsweredFromCache (issue 11, item 10): a gNB that is set
// up and repeats its NG Setup gets the proxy's merged answer; the AMFs see
// no NG Setup for it, only an NG Reset where they held its UEs (8.7.1.2).
func TestRepeatedNGSetupAnsweredFromCache(t *testing.T) {
	s := newSim(t, 3, RoundRobin)
	g := s.addGNB(gnbA)
	s.initialUE(gnbA, 1, nil)
	s.initialUE(gnbA, 2, nil) // two AMFs hold a UE of gNB A, one does not
	setups := func() (n int) {
		for _, f := range s.amfs {
			n += f.got[ngapType.ProcedureCodeNGSetup]
		}
		return n
	}
	resets := func() (n []int) {
		for _, f := range s.amfs {
			n = append(n, f.resets)
		}
		return n
	}
	held := s.m.UEs()
	before := setups()
	req := s.must(ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: plmn, GNBID: uint32(gnbA), GNBIDBits: 22, TACs: []uint32{1}, Slices: []ngapl.SNSSAI{{SST: 1}}}))
	responses := g.inbox[ngapType.ProcedureCodeNGSetup]
	for i := 0; i < 100; i++ {
		s.run(GNBMessage{Assoc: gnbA, Data: req})
	}
	if got := setups() - before; got != 0 {
		t.Errorf("100 repeated NG Setups reached the AMFs %d times, want 0", got)
	}
	if got := g.inbox[ngapType.ProcedureCodeNGSetup] - responses; got != 100 || !g.setupOK {
		t.Errorf("gNB got %d NG Setup answers (ok=%v), want 100 responses", got, g.setupOK)
	}
	if got := resets(); sum(got) != 2 || got[0] != held[0] || got[1] != held[1] || got[2] != held[2] {
		t.Errorf("NG Resets per AMF = %v, want one to each AMF that held a UE (%v)", got, held)
	}
	if got := s.m.UEs(); sum(got) != 0 {
		t.Errorf("UE contexts after NG Setup = %v, want none (8.7.1.2)", got)
	}

	// A changed request is the gNB's new configuration: forwarded once per
	// RedialMin, kept otherwise.
	changed := s.must(ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: plmn, GNBID: uint32(gnbA), GNBIDBits: 22, TACs: []uint32{1, 2}, Slices: []ngapl.SNSSAI{{SST: 1}}}))
	s.run(GNBMessage{Assoc: gnbA, Data: changed})
	if got := setups() - before; got != 3 {
		t.Fatalf("changed NG Setup reached %d AMFs, want 3", got)
	}
	s.run(GNBMessage{Assoc: gnbA, Data: req}, GNBMessage{Assoc: gnbA, Data: changed})
	if got := setups() - before; got != 3 {
		t.Errorf("changes within RedialMin reached the AMFs: %d setups", got)
	}
	s.now = s.now.Add(time.Second)
	s.run(GNBMessage{Assoc: gnbA, Data: req})
	if got := setups() - before; got != 6 {
		t.Errorf("change after RedialMin: %d setups, want 6", got)
	}
	if len(s.fails) != 0 {
		t.Errorf("steering failures: %v", s.fails)
	}
	if !g.setupOK {
		t.Error("gNB lost its NG Setup")
	}
}
