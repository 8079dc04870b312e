package n4_test

import (
	"testing"
	"time"

	"github.com/telcolb/telcolb/l7parse/pfcp"
	"github.com/telcolb/telcolb/sctplb/n4"
)

// upfTotals sums the UPF simulators' counters.
func upfTotals(w *world) (est, mods, dups, unknown int) {
	for _, u := range w.upfs {
		s := u.Snapshot()
		est, mods, dups, unknown = est+s.Established, mods+s.Modified, dups+s.Duplicates, unknown+s.Unknown
	}
	return
}

// TestRestoredProxyKeepsEverySessionAndItsRecoveryTimeStamp: a proxy
// restarted from its journal (the daemon restarted) is the same UPF to the
// SMF: the same Recovery Time Stamp, every session answering to its SEID,
// and the UPFs, which did not restart, get nothing replayed and never a
// request they take for a retransmission of an earlier one.
func TestRestoredProxyKeepsEverySessionAndItsRecoveryTimeStamp(t *testing.T) {
	const n = 40
	w := newWorld(t, 3, nil)
	w.associate()
	w.establish(n)
	for cp := uint64(1); cp <= n/2; cp++ {
		b, _ := w.smf.Modify(cp)
		w.smfSends(b)
	}
	estBefore, _, _, _ := upfTotals(w)
	rec := w.m.RecoveryTimeStamp()

	w.restartProxy(nil)
	if w.m.RecoveryTimeStamp() != rec {
		t.Fatalf("restored proxy's Recovery Time Stamp %d, was %d", w.m.RecoveryTimeStamp(), rec)
	}
	w.advance(2 * time.Second) // associations with the UPFs again
	for i, up := range w.m.UPFUp() {
		if !up {
			t.Fatalf("UPF %d not associated after the restart", i)
		}
	}
	for cp := uint64(1); cp <= n; cp++ {
		b, _ := w.smf.Modify(cp)
		w.smfSends(b)
	}
	// Reports from the UPFs still reach the SMF with its SEID.
	reports := 0
	for i, u := range w.upfs {
		for up := range u.Sessions() {
			b, _, ok := u.Report(up)
			if ok {
				w.step(n4.Datagram{From: upfAddr(i), Data: b})
				reports++
			}
		}
	}
	for cp := uint64(1); cp <= n; cp++ {
		b, _ := w.smf.Delete(cp)
		w.smfSends(b)
	}
	st := w.smf.Snapshot()
	if st.Modified != n/2+n || st.Deleted != n || st.Reports != reports || st.Rejected != 0 || st.WrongSEID != 0 || st.RecoveryChanges != 0 {
		t.Fatalf("SMF after the proxy's restart: %+v (reports sent %d)", st, reports)
	}
	est, mods, dups, unknown := upfTotals(w)
	if est != estBefore || mods != n/2+n || dups != 0 || unknown != 0 {
		t.Fatalf("UPFs: %d established (had %d), %d modified, %d taken for retransmissions, %d unknown", est, estBefore, mods, dups, unknown)
	}
	if r := w.count(n4.Replayed); r != 0 {
		t.Fatalf("%d sessions replayed to UPFs that did not restart", r)
	}
	if s := w.m.Sessions(); s[0]+s[1]+s[2] != 0 {
		t.Fatalf("sessions left: %v", s)
	}
}

// TestRestoredProxyReplaysToAUPFThatRestartedMeanwhile: the UPF's
// Recovery Time Stamp, kept in the journal, tells the restored proxy that
// this UPF lost its sessions while the proxy was down.
func TestRestoredProxyReplaysToAUPFThatRestartedMeanwhile(t *testing.T) {
	const n = 30
	w := newWorld(t, 2, nil)
	w.associate()
	w.establish(n)
	held := len(w.upfs[1].Sessions())
	w.upfs[1].Restart(w.now.Add(time.Minute)) // while the proxy is down
	w.restartProxy(nil)
	w.advance(2 * time.Second)
	if got := len(w.upfs[1].Sessions()); got != held {
		t.Fatalf("restarted UPF holds %d sessions, had %d", got, held)
	}
	if r := w.count(n4.Replayed); r != held {
		t.Fatalf("%d replays, want %d", r, held)
	}
	for cp := uint64(1); cp <= n; cp++ {
		b, _ := w.smf.Modify(cp)
		w.smfSends(b)
	}
	if st := w.smf.Snapshot(); st.Modified != n || st.Rejected != 0 || st.RecoveryChanges != 0 {
		t.Fatalf("SMF: %+v", st)
	}
}

// TestServiceChangeKeepsSessions: the proxy is rebuilt with another UPF
// set (a service change). Sessions on UPFs that stay are untouched;
// those of a removed UPF are moved or released per the loss policy.
func TestServiceChangeKeepsSessions(t *testing.T) {
	for _, policy := range []n4.LossPolicy{n4.Move, n4.Release} {
		t.Run(policy.String(), func(t *testing.T) {
			const n = 30
			w := newWorld(t, 3, func(c *n4.Config) { c.OnLoss = policy })
			w.associate()
			w.establish(n)
			onRemoved := len(w.upfs[2].Sessions())
			w.restartProxy(func(c *n4.Config) { c.UPFs = c.UPFs[:2] })
			w.advance(2 * time.Second)
			s := w.m.Sessions()
			want := n
			if policy == n4.Release {
				want = n - onRemoved
			}
			if len(s) != 2 || s[0]+s[1] != want {
				t.Fatalf("proxy holds %v, want %d", s, want)
			}
			if got := len(w.upfs[0].Sessions()) + len(w.upfs[1].Sessions()); got != want {
				t.Fatalf("remaining UPFs hold %d sessions, want %d", got, want)
			}
			for cp := uint64(1); cp <= n; cp++ {
				b, _ := w.smf.Modify(cp)
				w.smfSends(b)
			}
			st := w.smf.Snapshot()
			if st.Modified != want || st.Causes[pfcp.CauseSessionNotFound] != n-want || st.RecoveryChanges != 0 {
				t.Fatalf("SMF: %+v", st)
			}
		})
	}
}

// TestRestoreRefusesStateThatDoesNotHoldTogether: a damaged journal is
// refused as a whole; the machine keeps its fresh state.
func TestRestoreRefusesStateThatDoesNotHoldTogether(t *testing.T) {
	w := newWorld(t, 2, nil)
	w.associate()
	w.establish(3)
	good := w.m.Export()
	cases := map[string]func(*n4.State){
		"no recovery":       func(s *n4.State) { s.Recovery = 0 },
		"SEID twice":        func(s *n4.State) { s.Sessions[1].SID = s.Sessions[0].SID },
		"SEID zero":         func(s *n4.State) { s.Sessions[0].SID = 0 },
		"unknown SMF":       func(s *n4.State) { s.Sessions[2].SMF = "elsewhere" },
		"SMF twice":         func(s *n4.State) { s.SMFs = append(s.SMFs, s.SMFs[0]) },
		"no establishment":  func(s *n4.State) { s.Sessions[0].Est = nil },
		"garbled establish": func(s *n4.State) { s.Sessions[0].Est = []byte{0x21, 50, 0, 1} },
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			s := good
			s.Sessions = append([]n4.SessionState(nil), good.Sessions...)
			s.SMFs = append([]n4.SMFState(nil), good.SMFs...)
			damage(&s)
			m, err := n4.New(w.cfg)
			if err != nil {
				t.Fatal(err)
			}
			fresh := m.Export()
			if err := m.Restore(s); err == nil {
				t.Fatal("damaged state restored")
			}
			if got := m.Export(); got.Recovery != fresh.Recovery || len(got.Sessions) != 0 || len(got.SMFs) != 0 {
				t.Fatalf("refused restore changed the machine: %+v", got)
			}
		})
	}
}

// TestReportInFlightAtACrashReachesTheSMFOnce: a UPF's Session Report
// Request relayed by a proxy that then dies reaches the SMF once. The
// restored proxy sends it again under the sequence number the SMF saw (a
// retransmission, TS 29.244 §6.4, answered from the SMF's cache), and a
// report whose answer was already relayed is answered from the restored
// cache without going to the SMF at all.
func TestReportInFlightAtACrashReachesTheSMFOnce(t *testing.T) {
	cases := []struct {
		name string
		// lose makes the first answer go missing: the SMF's (the report
		// is in flight at the crash) or the proxy's to the UPF (answered,
		// the UPF does not know).
		lose func(w *world, on bool)
		// smfAgain: the SMF gets the report a second time, as a
		// retransmission.
		smfAgain bool
	}{
		{"answer not back from the SMF", func(w *world, on bool) { w.smfMute = on }, true},
		{"answer lost on the way to the UPF", func(w *world, on bool) {
			for i := range w.down {
				w.down[i] = on
			}
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			const n = 12
			w := newWorld(t, 3, nil)
			w.associate()
			w.establish(n)
			c.lose(w, true)
			sent := 0
			for u := range w.upfs {
				for up := range w.upfs[u].Sessions() {
					if w.report(u, up) {
						sent++
					}
				}
			}
			if st := w.smf.Snapshot(); st.Reports != sent {
				t.Fatalf("SMF got %d reports before the crash, the UPFs sent %d", st.Reports, sent)
			}
			relays := len(w.m.Export().Relays)
			dupsBefore := w.smf.Snapshot().DuplicateReports
			w.restartProxy(nil) // the crash: the journal is all that is left
			c.lose(w, false)
			w.advance(2 * time.Second) // UPF associations again
			for _, p := range w.sent { // every UPF retransmits every report
				w.step(n4.Datagram{From: p.from, Data: p.data})
			}
			w.advance(2 * time.Second)
			st := w.smf.Snapshot()
			if st.Reports != sent || st.Rejected != 0 || st.WrongSEID != 0 {
				t.Fatalf("SMF after the crash: %+v (the UPFs sent %d reports)", st, sent)
			}
			if again := st.DuplicateReports - dupsBefore; (again > 0) != c.smfAgain {
				t.Fatalf("SMF saw %d retransmitted reports after the crash (want some: %v)", again, c.smfAgain)
			}
			answered := 0
			for _, u := range w.upfs {
				answered += u.Snapshot().ReportsAnswered
			}
			if answered < sent {
				t.Fatalf("UPFs got %d answers to %d reports", answered, sent)
			}
			if relays != sent {
				t.Fatalf("state held %d relayed reports at the crash, want %d", relays, sent)
			}
			// Relays are kept only while a retransmission may come.
			w.advance(w.cfg.CacheTTL + 10*time.Second)
			if r := w.m.Export().Relays; len(r) != 0 {
				t.Fatalf("%d relayed reports still held after their cache life", len(r))
			}
		})
	}
}
