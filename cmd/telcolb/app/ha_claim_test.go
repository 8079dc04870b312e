package app

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telcolb/telcolb/dataplane"
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
	pair := newHAPair(t)
	dps := map[string]*slowDumpCT{"lb1": {newTimedCT(), 300 * time.Millisecond}, "lb2": {newTimedCT(), 300 * time.Millisecond}}
	dps["lb1"].put("k1", "v1", time.Now().Add(-2*time.Second))
	has := map[string]*HA{"lb1": pair.start("lb1", dps["lb1"]), "lb2": pair.start("lb2", dps["lb2"])}
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

// perKeyCT counts the records imported per key.
type perKeyCT struct {
	*timedCT
	byKey map[string]int
}

func (m *perKeyCT) ImportConntrack(recs []dataplane.Record) error {
	m.mu.Lock()
	for _, r := range recs {
		m.byKey[string(r.Key)]++
	}
	m.mu.Unlock()
	return m.timedCT.ImportConntrack(recs)
}

func (m *perKeyCT) imported(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byKey[key]
}

// scanCT is a timedCT that scans as the datapath does (conntrackScanner):
// it counts, per key, the entries the refresh's walk kept (encoded) and
// the entries it was offered. Its marks are its clock since base; a walk
// given one leaves out the entries last seen before it, as the datapath's
// does (with a millisecond of slack for the dump's own clock read).
type scanCT struct {
	*timedCT
	kept, offered map[string]int
	base          time.Time
}

func newScanCT(timed *timedCT) *scanCT {
	return &scanCT{timed, map[string]int{}, map[string]int{}, time.Now()}
}

func (m *scanCT) ScanConntrack(since dataplane.ScanMark, keep func(kind uint16, key []byte, idle time.Duration, known bool) bool) ([]dataplane.Record, dataplane.ScanMark, error) {
	at := time.Now()
	recs, err := m.timedCT.DumpConntrack()
	var out []dataplane.Record
	for _, r := range recs {
		idle, known := dataplane.RecordIdle(r)
		if known && since != 0 && at.Add(-idle).Before(m.base.Add(time.Duration(since)-time.Millisecond)) {
			continue
		}
		m.mu.Lock()
		m.offered[string(r.Key)]++
		m.mu.Unlock()
		if keep(r.Kind, r.Key, idle, known) {
			m.mu.Lock()
			m.kept[string(r.Key)]++
			m.mu.Unlock()
			out = append(out, r)
		}
	}
	return out, dataplane.ScanMark(at.Sub(m.base)), err
}

func (m *scanCT) counts(key string) (kept, offered int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.kept[key], m.offered[key]
}

// TestHARefreshSendsWhatCarriedTraffic: lb1 owns an idle flow and one
// carrying traffic; over 20 refresh rounds lb2 gets the busy one each
// round and the idle one only from the full rounds (one in
// testFullRefreshEvery): its copy ages as lb1's entry does. With a datapath
// that scans (the real one), the other rounds' walks keep (encode) the
// busy flow and skip the idle one.
func TestHARefreshSendsWhatCarriedTraffic(t *testing.T) {
	for _, scans := range []bool{false, true} {
		t.Run(fmt.Sprintf("scan=%v", scans), func(t *testing.T) {
			pair := newHAPair(t)
			timed, lb2 := newTimedCT(), &perKeyCT{newTimedCT(), map[string]int{}}
			var lb1 ConntrackSource = timed
			scan := newScanCT(timed)
			if scans {
				lb1 = scan
			}
			timed.put("idle", "v1", time.Now().Add(-time.Second))
			timed.put("busy", "v2", time.Now())
			pair.start("lb1", lb1)
			pair.start("lb2", lb2)
			waitFor(t, "both flows on lb2", func() bool { return lb2.has("idle") && lb2.has("busy") })
			timed.flowing(t, "busy")
			idle0, busy0 := lb2.imported("idle"), lb2.imported("busy")
			idleKept0, idleOffered0 := scan.counts("idle")
			busyKept0, busyOffered0 := scan.counts("busy")
			time.Sleep(20 * 100 * time.Millisecond)
			idle, busy := lb2.imported("idle")-idle0, lb2.imported("busy")-busy0
			t.Logf("over 20 rounds lb2 imported the idle flow %d times, the busy one %d times", idle, busy)
			if busy < 5 {
				t.Errorf("the flow carrying traffic was refreshed %d times in 20 rounds", busy)
			}
			if idle > 20/testFullRefreshEvery+1 || idle*3 >= busy {
				t.Errorf("the idle flow was sent %d times in 20 rounds (busy %d): only the full rounds should send it", idle, busy)
			}
			if !scans {
				return
			}
			idleKept, idleOffered := scan.counts("idle")
			busyKept, busyOffered := scan.counts("busy")
			t.Logf("the scans offered the busy flow %d times and kept it %d times; offered the idle one %d times and kept it %d times",
				busyOffered-busyOffered0, busyKept-busyKept0, idleOffered-idleOffered0, idleKept-idleKept0)
			if busyOffered-busyOffered0 < 8 || busyKept-busyKept0 < 8 {
				t.Errorf("the scans offered the busy flow %d times and kept it %d times in 20 rounds, want at least 8 (most rounds are not full)",
					busyOffered-busyOffered0, busyKept-busyKept0)
			}
			if idleKept-idleKept0 != 0 {
				t.Errorf("the scans kept the idle flow %d times: it was sent before and idle since", idleKept-idleKept0)
			}
			// Idle since before the last round's walk, held by no peer:
			// judged by that round as it is now, not offered again (the
			// first scan of the window may still be the one that judged
			// it).
			if n := idleOffered - idleOffered0; n > 1 {
				t.Errorf("the scans offered the idle flow %d times in 20 rounds, want at most once: it was idle since before the rounds that judged it", n)
			}
		})
	}
}

// TestHAScanJudgesIdleCopiesEveryRound: lb2 scans (the real datapath's
// walk) and holds a copy of lb1's flow, idle for seconds. Every round's
// walk offers the copy, however idle (a copy is judged every round: only
// then does the copy of a peer that went down become ours), and lb2 takes
// it over when lb1 goes.
func TestHAScanJudgesIdleCopiesEveryRound(t *testing.T) {
	pair := newHAPair(t)
	lb1, lb2 := newTimedCT(), newScanCT(newTimedCT())
	lb1.put("k1", "v1", time.Now().Add(-2*time.Second))
	ha1, ha2 := pair.start("lb1", lb1), pair.start("lb2", lb2)
	waitFor(t, "lb1's flow a copy on lb2", func() bool { return ha2.isCopy("k1") })
	_, offered0 := lb2.counts("k1")
	time.Sleep(10 * 100 * time.Millisecond) // 10 rounds, one of them full (a dump)
	_, offered := lb2.counts("k1")
	if n := offered - offered0; n < 5 {
		t.Errorf("lb2's scans offered lb1's idle copy %d times in 10 rounds, want every round but the full one", n)
	}
	if err := ha1.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "lb2 owning k1 once lb1 is down", func() bool { return ha2.owns("k1") })
}

// slowImportCT is a timedCT whose import waits before it writes (the
// datapath's lock held by an ageing round): the entries are dated when
// written.
type slowImportCT struct {
	*timedCT
	delay time.Duration
}

func (m *slowImportCT) ImportConntrack(recs []dataplane.Record) error {
	time.Sleep(m.delay)
	return m.timedCT.ImportConntrack(recs)
}

// TestHASlowImportTakesNoIdleCopy: lb2's imports take 300 ms (well over
// claimSlack); lb1's idle flow, refreshed every full round, stays a copy
// on lb2 and lb1 imports nothing back.
func TestHASlowImportTakesNoIdleCopy(t *testing.T) {
	pair := newHAPair(t)
	lb1 := newTimedCT()
	lb1.put("k1", "v1", time.Now().Add(-2*time.Second))
	dps := map[string]ConntrackSource{"lb1": lb1, "lb2": &slowImportCT{newTimedCT(), 300 * time.Millisecond}}
	has := map[string]*HA{"lb1": pair.start("lb1", dps["lb1"]), "lb2": pair.start("lb2", dps["lb2"])}
	waitFor(t, "k1 on lb2", func() bool { return dps["lb2"].(*slowImportCT).has("k1") })
	time.Sleep(2500 * time.Millisecond) // 25 refresh rounds, two of them full
	if !has["lb2"].isCopy("k1") || has["lb2"].owns("k1") {
		t.Errorf("lb2 took over lb1's idle flow (copy %v, owned %v): the import's wait counted as traffic", has["lb2"].isCopy("k1"), has["lb2"].owns("k1"))
	}
	if n := lb1.importCount(); n != 0 {
		t.Errorf("lb1 imported %d records of its own idle flow back from lb2", n)
	}
}

// writeMidImportCT writes the records delay into the import and returns
// delay later: the datapath's import waits for its lock, then writes a
// large batch over hundreds of milliseconds, so a refresh's dump can read
// entries the import has written before the import returns.
type writeMidImportCT struct {
	*timedCT
	delay time.Duration
}

func (m *writeMidImportCT) ImportConntrack(recs []dataplane.Record) error {
	time.Sleep(m.delay)
	err := m.timedCT.ImportConntrack(recs)
	time.Sleep(m.delay)
	return err
}

// TestHARefreshDuringAnImportTakesNoCopy: lb2's refresh runs while an
// import of lb1's idle flow has written the entry (dated by the import's
// wait) but not returned; the copy stays a copy (no traffic here) and lb1
// imports nothing back. Before, lb2 took such copies over and sent them
// back, and lb1 replaced its live entries with them (SCTP associations
// died in scenarios/ha).
func TestHARefreshDuringAnImportTakesNoCopy(t *testing.T) {
	pair := newHAPair(t)
	lb1 := newTimedCT()
	lb1.put("k1", "v1", time.Now().Add(-2*time.Second))
	lb2 := &writeMidImportCT{newTimedCT(), 300 * time.Millisecond}
	has := map[string]*HA{"lb1": pair.start("lb1", lb1), "lb2": pair.start("lb2", lb2)}
	waitFor(t, "k1 on lb2", func() bool { return lb2.has("k1") })
	time.Sleep(2500 * time.Millisecond) // 25 refresh rounds, two of them full
	if !has["lb2"].isCopy("k1") || has["lb2"].owns("k1") {
		t.Errorf("lb2 took over lb1's idle flow (copy %v, owned %v): an entry written by an import in progress counted as traffic", has["lb2"].isCopy("k1"), has["lb2"].owns("k1"))
	}
	if n := lb1.importCount(); n != 0 {
		t.Errorf("lb1 imported %d records of its own idle flow back from lb2", n)
	}
}

// lossyCT is a timedCT whose datapath reports dropped change events.
type lossyCT struct {
	*perKeyCT
	lost atomic.Uint64
}

func (m *lossyCT) ConntrackEventsLost() (uint64, error) { return m.lost.Load(), nil }

// TestHAFullRefreshAfterLostEvents: lb1 owns an idle flow, sent once; its
// refresh rounds do not send it again (full rounds are far apart here).
// Once lb1's datapath reports change events dropped (its ring buffer was
// full), the next round sends every entry: lb2 gets the idle flow again
// within a few rounds, though no event told of it.
func TestHAFullRefreshAfterLostEvents(t *testing.T) {
	pair := newHAPair(t)
	lb1 := &lossyCT{perKeyCT: &perKeyCT{newTimedCT(), map[string]int{}}}
	lb2 := &perKeyCT{newTimedCT(), map[string]int{}}
	lb1.put("idle", "v1", time.Now().Add(-time.Second))
	rare := func(c *HAConfig) { c.FullRefreshEvery = 1000 }
	pair.startWith("lb1", lb1, rare)
	pair.startWith("lb2", lb2, rare)
	waitFor(t, "the flow on lb2", func() bool { return lb2.has("idle") })
	time.Sleep(5 * 100 * time.Millisecond)
	before := lb2.imported("idle")
	time.Sleep(5 * 100 * time.Millisecond)
	if n := lb2.imported("idle") - before; n != 0 {
		t.Fatalf("the idle flow was sent %d times in 5 rounds with no event lost, want none", n)
	}
	lb1.lost.Add(3)
	waitFor(t, "the idle flow sent again after lost events", func() bool { return lb2.imported("idle") > before })
}
