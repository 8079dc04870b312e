package app

import (
	"fmt"
	"testing"
	"time"

	"github.com/telcolb/telcolb/dataplane"
)

// TestHACrossoverSettlesOwnership: lb1 owns 20 flows that carry traffic,
// lb2 holds their copies; the routes move (a crossover): for a while
// packets in flight still reach lb1 while lb2 already carries the flows,
// then only lb2 does, then the flows go idle. Whoever ends up owning each
// flow, exactly one node owns it and ownership settles: once idle, no flow
// moves between the nodes again over two full refreshes of each (every
// owned entry sent). A flow moving back and forth costs a record each way
// per full round and, for an SCTP association, a window in which the old
// owner's copy is written over the live entry. The moves are read from the
// nodes' telcolb_ha_entries_* counters, which must also show the
// crossover itself when lb2 carried the flows alone for a second.
func TestHACrossoverSettlesOwnership(t *testing.T) {
	cases := []struct {
		name string
		// overlap: both nodes see the flows' packets; carry: then lb2
		// alone; dump: how long each node's conntrack dump takes (its
		// records dated from the dump's start, as on a loaded node).
		overlap, carry, dump time.Duration
	}{
		{"lb2 carries the flows, slow dumps", 30 * time.Millisecond, time.Second, 300 * time.Millisecond},
		{"lb2 carries the flows, fast dumps", 30 * time.Millisecond, time.Second, 0},
		{"both carry, then idle, slow dumps", 200 * time.Millisecond, 0, 300 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			pair := newHAPair(t)
			lb1 := &perKeyCT{newTimedCT(), map[string]int{}}
			lb2 := &perKeyCT{newTimedCT(), map[string]int{}}
			var keys []string
			for i := range 20 {
				k := fmt.Sprintf("f%02d", i)
				keys = append(keys, k)
				lb1.put(k, "v", time.Now())
			}
			has := map[string]*HA{
				"lb1": pair.start("lb1", &crossCT{&slowDumpCT{lb1.timedCT, c.dump}, lb1}),
				"lb2": pair.start("lb2", &crossCT{&slowDumpCT{lb2.timedCT, c.dump}, lb2}),
			}
			waitFor(t, "every flow on lb2", func() bool {
				for _, k := range keys {
					if !lb2.has(k) {
						return false
					}
				}
				return true
			})
			stop1 := lb1.flowing(t, keys...)
			time.Sleep(500 * time.Millisecond)
			stop2 := lb2.flowing(t, keys...)
			time.Sleep(c.overlap)
			stop1()
			time.Sleep(c.carry)
			stop2()
			// Settling: a few refresh rounds of each node.
			time.Sleep(5 * (100*time.Millisecond + c.dump))
			m1, m2 := has["lb1"].snapshot().moves, has["lb2"].snapshot().moves
			t.Logf("after the crossover: lb1 %+v, lb2 %+v", m1, m2)
			if c.carry > 0 && (m2.takenTraffic < uint64(len(keys)) || m1.yielded < uint64(len(keys))) {
				t.Errorf("lb2 carried the flows alone for %v: it took over %d for traffic and lb1 yielded %d, want %d each",
					c.carry, m2.takenTraffic, m1.yielded, len(keys))
			}
			// Two full refreshes of each node.
			time.Sleep(2 * testFullRefreshEvery * (100*time.Millisecond + c.dump))
			e1, e2 := has["lb1"].snapshot().moves, has["lb2"].snapshot().moves
			if e1 != m1 || e2 != m2 {
				t.Errorf("flows changed hands after the crossover settled: lb1 %+v -> %+v, lb2 %+v -> %+v", m1, e1, m2, e2)
			}
			for _, k := range keys {
				if o1, o2 := has["lb1"].owns(k), has["lb2"].owns(k); o1 == o2 {
					t.Errorf("%s: owned by lb1 %v, by lb2 %v: want exactly one owner", k, o1, o2)
				}
			}
		})
	}
}

// crossCT is a datapath with a slow dump that counts imports per key.
type crossCT struct {
	*slowDumpCT
	perKey *perKeyCT
}

func (m *crossCT) ImportConntrack(recs []dataplane.Record) error {
	return m.perKey.ImportConntrack(recs)
}

// gatedDumpCT is a timedCT whose next dump, once armed, says it has
// entered (entered), reads the table when told (read), says so (started)
// and returns only when released: a refresh's dump that began before
// something else happened on the node.
type gatedDumpCT struct {
	*timedCT
	armed                           chan struct{}
	entered, read, started, release chan struct{}
}

func newGatedDumpCT() *gatedDumpCT {
	return &gatedDumpCT{timedCT: newTimedCT(), armed: make(chan struct{}, 1),
		entered: make(chan struct{}), read: make(chan struct{}), started: make(chan struct{}), release: make(chan struct{})}
}

func (m *gatedDumpCT) DumpConntrack() ([]dataplane.Record, error) {
	select {
	case <-m.armed:
	default:
		return m.timedCT.DumpConntrack()
	}
	m.entered <- struct{}{}
	<-m.read
	recs, err := m.timedCT.DumpConntrack()
	m.started <- struct{}{}
	<-m.release
	return recs, err
}

// TestHADumpBeforeImportTakesNoCopy: lb2 owns an idle flow; its refresh's
// dump reads the flow just after a packet of it (at T); before that
// refresh ends, lb1 changes the flow's state with a record dated 100 ms
// before T (newer than what lb2 last told of its flow), so lb2 yields the
// flow and imports lb1's copy, while the dump, begun before the import,
// still shows lb2's own entry last seen at T. That dump must not judge the
// copy: read as traffic here it would claim the flow back and send it,
// and lb1 would yield and claim it the same way on its next dump, round
// after round (the ping-pong TestHACrossoverSettlesOwnership catches
// statistically).
func TestHADumpBeforeImportTakesNoCopy(t *testing.T) {
	pair := newHAPair(t)
	lb1, lb2 := newTimedCT(), newGatedDumpCT()
	lb2.put("k", "v1", time.Now().Add(-10*time.Second))
	has := map[string]*HA{"lb1": pair.start("lb1", lb1), "lb2": pair.start("lb2", lb2)}
	waitFor(t, "k on lb1, both ready", func() bool {
		return lb1.has("k") && has["lb1"].Waiting() == "" && has["lb2"].Waiting() == ""
	})
	lb2.armed <- struct{}{}
	<-lb2.entered
	T := time.Now()
	lb2.traffic("k")
	lb2.read <- struct{}{}
	<-lb2.started // lb2's dump has read k last seen at T
	time.Sleep(10 * time.Millisecond)
	lb1.put("k", "v2", T.Add(-100*time.Millisecond))
	lb1.changes <- []dataplane.Record{{Kind: dataplane.RecordConntrack, Key: []byte("k"), Value: encodeTimed("v2", time.Since(T)+100*time.Millisecond)}}
	waitFor(t, "lb1's change imported on lb2", func() bool {
		v, ok := lb2.value("k")
		return ok && v == "v2" && has["lb2"].isCopy("k") && !has["lb2"].copyImporting("k")
	})
	imports := lb1.importCount()
	close(lb2.release)
	// The gated refresh ends, then a few ungated rounds.
	time.Sleep(500 * time.Millisecond)
	m1, m2 := has["lb1"].snapshot().moves, has["lb2"].snapshot().moves
	t.Logf("moves: lb1 %+v, lb2 %+v", m1, m2)
	if m2.takenTraffic != 0 {
		t.Errorf("lb2 took over %d entries for traffic: its dump from before the import read as traffic here", m2.takenTraffic)
	}
	if has["lb2"].owns("k") || !has["lb2"].isCopy("k") {
		t.Errorf("lb2 owns k again (owned %v, copy %v): want lb1's copy", has["lb2"].owns("k"), has["lb2"].isCopy("k"))
	}
	if n := lb1.importCount() - imports; n != 0 {
		t.Errorf("lb1 imported %d records of the flow it changed: lb2 sent it back", n)
	}
}

func (h *HA) copyImporting(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.imported[mapKey(dataplane.RecordConntrack, []byte(key))].importing
}

// TestHARefreshRecordsLeaveWithTheirAge: lb1's dumps take 300 ms and its
// records' ages count from the dump's start; the refresh sends them aged
// by the dump's length, so lb2 dates lb1's flow's last packet where it
// was, not 300 ms later (which would make lb1's copy look newer than a
// packet lb2 carried in between, and lb2 yield a flow it carries).
func TestHARefreshRecordsLeaveWithTheirAge(t *testing.T) {
	pair := newHAPair(t)
	lb1, lb2 := &slowDumpCT{newTimedCT(), 300 * time.Millisecond}, newTimedCT()
	lb1.put("k", "v", time.Now().Add(-time.Minute))
	pair.start("lb1", lb1)
	h2 := pair.start("lb2", lb2)
	waitFor(t, "k on lb2, lb2 ready", func() bool { return lb2.has("k") && h2.Waiting() == "" })
	copyOf := func() haCopy {
		h2.mu.Lock()
		defer h2.mu.Unlock()
		return h2.imported[mapKey(dataplane.RecordConntrack, []byte("k"))]
	}
	for i := range 3 {
		last := time.Now()
		lb1.traffic("k") // one packet: the next refresh sends the flow
		waitFor(t, "lb2's copy of the packet", func() bool {
			c := copyOf()
			return !c.importing && c.seen.After(last.Add(-claimSlack))
		})
		late := copyOf().seen.Sub(last)
		t.Logf("packet %d: lb2 dated it %v after lb1 saw it", i, late)
		if late > claimSlack {
			t.Errorf("lb2 dated lb1's packet %v after lb1 saw it (over claimSlack %v): the record left lb1 without the dump's %v", late, claimSlack, lb1.delay)
		}
		time.Sleep(time.Second)
	}
}
