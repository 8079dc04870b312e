package sctplb

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/l7parse/pfcp"
	sims "github.com/telcolb/telcolb/scenarios/pfcp"
	"github.com/telcolb/telcolb/sctplb/n4"
)

// TestN4ProxyTakesOverFromItsStateDirAfterACrash: an SMF establishes,
// modifies and gets reports on sessions through a proxy; the proxy then
// dies without a chance to save anything more (its state directory is
// copied as it stands mid-run, journal and all, and the proxy stopped),
// and a new proxy started on that copy serves the second round of
// modifications and the deletions. The SMF must see the same UPF: no
// Recovery Time Stamp change, no rejection, its own SEIDs; the UPFs,
// which did not restart, get nothing replayed and no request they take
// for a retransmission.
func TestN4ProxyTakesOverFromItsStateDirAfterACrash(t *testing.T) {
	const sessions = 300
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vip := netip.AddrPortFrom(loopAddr(41), pfcp.Port)
	dir := filepath.Join(t.TempDir(), "n4")
	cfg := N4Config{Listen: vip, Name: "n4crash", StateDir: dir, T1: 500 * time.Millisecond, N1: 3,
		HeartbeatInterval: 300 * time.Millisecond, LossTimeout: 10 * time.Second, TickInterval: 20 * time.Millisecond}
	var upfs []*sims.UPFSim
	for i := range 2 {
		a := netip.AddrPortFrom(loopAddr(byte(42+i)), pfcp.Port)
		cfg.UPFs = append(cfg.UPFs, N4UPF{Name: fmt.Sprintf("upf%d", i), Addr: a})
		u := sims.NewUPFSim(a.Addr(), time.Now().Add(-time.Hour), 0x100)
		upfs = append(upfs, u)
		c := udpOn(t, a)
		go func() { _ = sims.ServeUPF(ctx, c, u, true, 500*time.Millisecond) }()
	}
	start := func(c N4Config) (*N4Proxy, context.CancelFunc, chan error) {
		t.Helper()
		p, err := NewN4(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Open(); err != nil {
			t.Fatal(err)
		}
		pctx, stop := context.WithCancel(ctx)
		served := make(chan error, 1)
		go func() { served <- p.Serve(pctx) }()
		waitN4(t, p, func(s N4Stats) bool { return len(s.UPFs) == 2 && s.UPFs[0].Up && s.UPFs[1].Up })
		return p, stop, served
	}
	first, stopFirst, firstDone := start(cfg)
	rec := first.State().Recovery
	var second *N4Proxy
	var stopSecond context.CancelFunc
	var secondDone chan error
	smf := sims.NewSMFSim(loopAddr(44), time.Now().Add(-2*time.Hour))
	sc := udpOn(t, netip.AddrPortFrom(loopAddr(44), pfcp.Port))
	st, err := sims.RunSMF(ctx, sc, vip, smf, sims.Load{Sessions: sessions, Window: 32, T1: time.Second, N1: 3,
		ReportWait: 10 * time.Second,
		Pause: func() {
			crashed := filepath.Join(t.TempDir(), "crashed")
			if out, err := exec.Command("cp", "-a", dir, crashed).CombinedOutput(); err != nil {
				t.Errorf("copy the state dir: %v: %s", err, out)
				return
			}
			stopFirst()
			if err := <-firstDone; err != nil {
				t.Error(err)
			}
			c := cfg
			c.StateDir = crashed
			second, stopSecond, secondDone = start(c)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Established != sessions || st.Modified != 2*sessions || st.Deleted != sessions || st.Reports != sessions ||
		st.Rejected != 0 || st.WrongSEID != 0 || st.RecoveryChanges != 0 {
		t.Fatalf("SMF saw %+v across the proxy's crash", st)
	}
	if second == nil {
		t.Fatal("second proxy never started")
	}
	if got := second.State().Recovery; got != rec {
		t.Fatalf("second proxy's Recovery Time Stamp %d, first's %d", got, rec)
	}
	for i, u := range upfs {
		s := u.Snapshot()
		if s.Established != sessions/2 || s.Unknown != 0 || s.Duplicates != 0 || len(u.Sessions()) != 0 {
			t.Fatalf("UPF %d: %+v, %d sessions left: want %d established once, nothing unknown, duplicated or left",
				i, s, len(u.Sessions()), sessions/2)
		}
	}
	stopSecond()
	if err := <-secondDone; err != nil {
		t.Fatal(err)
	}
}

// TestN4StateJournal: what the loader makes of a state directory.
func TestN4StateJournal(t *testing.T) {
	m := newTestMachine(t)
	st := m.Export()
	dir := filepath.Join(t.TempDir(), "s")
	s, err := openN4Store(dir, st)
	if err != nil {
		t.Fatal(err)
	}
	sess := n4.SessionState{SID: 7, SMF: "smf", CPSEID: 1, UPSEID: 2, HasUP: true, UPF: "upf0", Est: []byte{1}}
	node := st.Node
	node.SMFs = []n4.SMFState{{Addr: netip.MustParseAddrPort("10.1.1.1:8805"), Node: "smf", Recovery: 9}}
	// Relayed reports: one answered and kept, one gone (expired).
	exp := time.Date(2026, 12, 2, 15, 0, 0, 123, time.UTC)
	kept := n4.RelayState{UPF: "upf0", UPFSeq: 5, Seq: 4100, SID: 7, SMF: node.SMFs[0].Addr, Data: []byte{0x21, 56}, Resp: []byte{0x21, 57}, Expires: exp}
	gone := n4.RelayState{UPF: "upf1", UPFSeq: 5, Seq: 4101, SID: 7, SMF: node.SMFs[0].Addr, Data: []byte{0x21, 56}, Expires: exp}
	for _, c := range []n4.Changes{{Node: &node}, {Sessions: []n4.SessionState{sess}}, {Sessions: []n4.SessionState{{SID: 8, SMF: "smf", UPF: "upf0", Est: []byte{2}}}}, {Deleted: []uint64{8}},
		{Relays: []n4.RelayState{gone, {UPF: "upf0", UPFSeq: 5, Seq: 4100, SID: 7, SMF: kept.SMF, Data: kept.Data, Expires: exp}}},
		{Relays: []n4.RelayState{kept}, RelaysGone: []n4.RelayKey{gone.Key()}}} {
		if _, err := s.append(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	got, ok, err := loadN4State(dir)
	if err != nil || !ok || len(got.Sessions) != 1 || got.Sessions[0].SID != 7 || len(got.SMFs) != 1 || got.Recovery != st.Recovery {
		t.Fatalf("folded state %+v ok %v err %v", got, ok, err)
	}
	if len(got.Relays) != 1 || got.Relays[0].Key() != kept.Key() || string(got.Relays[0].Resp) != string(kept.Resp) ||
		got.Relays[0].Seq != kept.Seq || !got.Relays[0].Expires.Equal(exp) {
		t.Fatalf("folded relays %+v, want %+v", got.Relays, kept)
	}

	// A last line cut short by a crash mid-write is dropped, nothing else.
	j := filepath.Join(dir, journalFile)
	f, err := os.OpenFile(j, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(`{"Deleted":[7`)
	f.Close()
	if got, _, err := loadN4State(dir); err != nil || len(got.Sessions) != 1 {
		t.Fatalf("journal with a torn last line: %+v, %v", got, err)
	}
	// Garbage inside the journal is an error naming the line.
	b, _ := os.ReadFile(j)
	if err := os.WriteFile(j, append([]byte("{garbage\n"), b...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadN4State(dir); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("garbage journal line: err %v", err)
	}
	// A fresh directory is an empty state, not an error.
	if _, ok, err := loadN4State(filepath.Join(t.TempDir(), "none")); ok || err != nil {
		t.Fatalf("missing dir: ok %v err %v", ok, err)
	}
}

// TestN4DamagedStateIsMovedAside: a proxy whose state cannot be read
// starts without sessions (serving beats refusing) and keeps the damaged
// files beside for a post-mortem.
func TestN4DamagedStateIsMovedAside(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n4")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, snapshotFile), []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := N4Config{Listen: netip.AddrPortFrom(loopAddr(45), pfcp.Port), StateDir: dir,
		UPFs: []N4UPF{{Name: "u", Addr: netip.AddrPortFrom(loopAddr(46), pfcp.Port)}}, Logger: slog.New(slog.DiscardHandler)}
	p, err := NewN4(cfg)
	if err != nil {
		t.Fatalf("damaged state refused the proxy: %v", err)
	}
	if n := len(p.State().Sessions); n != 0 {
		t.Fatalf("%d sessions from a damaged state", n)
	}
	aside, _ := filepath.Glob(dir + ".damaged-*")
	if len(aside) != 1 {
		t.Fatalf("damaged state not moved aside: %v", aside)
	}
	if b, err := os.ReadFile(filepath.Join(aside[0], snapshotFile)); err != nil || string(b) != "not json" {
		t.Fatalf("moved-aside snapshot: %q, %v", b, err)
	}
	if _, ok, err := loadN4State(dir); err != nil || !ok {
		t.Fatalf("the fresh state dir: ok %v err %v", ok, err)
	}
	_ = p.store.close()
}

func newTestMachine(t *testing.T) *n4.Machine {
	t.Helper()
	m, err := n4.New(n4.Config{UPFs: []n4.UPF{{Name: "upf0", Addr: netip.MustParseAddrPort("10.2.2.2:8805")}},
		SMFSide: netip.MustParseAddr("10.3.3.3"), UPFSide: netip.MustParseAddr("10.3.3.3"), Recovery: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return m
}
