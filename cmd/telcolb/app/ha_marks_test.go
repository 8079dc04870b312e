package app

import (
	"testing"
	"time"

	"github.com/telcolb/telcolb/dataplane"
)

// A copy's mark (imported: not this node's, not sent back) must follow the
// entry the datapath holds: an entry held without its mark is taken for
// one of this node's at the next refresh and sent to its owner, whose own
// entry it then competes with (and, its age converted twice with the
// transfer delay each time, wins). Seen in the HA lab as ownership of
// closing SCTP associations passing back and forth between the nodes
// every refresh until the entries aged out.

// TestHAStaleDeletionKeepsTheCopysMark: lb1 owns a flow, lb2 holds its
// copy. lb2's datapath ages the copy out (an ageing round) and, before lb2
// reads that deletion, an import from lb1 writes the copy again. The late
// deletion must not take the mark off the entry now held: lb2 never owns
// the flow and sends it nowhere. (lb1 refreshes only every 5 s here, so
// nothing but the mark keeps lb2's refresh from claiming the entry.)
func TestHAStaleDeletionKeepsTheCopysMark(t *testing.T) {
	pair := newHAPair(t)
	lb1, lb2 := &perKeyCT{newTimedCT(), map[string]int{}}, &perKeyCT{newTimedCT(), map[string]int{}}
	lb1.put("f", "v", time.Now())
	has := map[string]*HA{
		"lb1": pair.startWith("lb1", lb1, func(c *HAConfig) { c.Refresh = 5 * time.Second }),
		"lb2": pair.start("lb2", lb2),
	}
	waitFor(t, "the flow on lb2", func() bool { return lb2.has("f") })
	back := lb1.imported("f")
	// The ageing round, then the import writing the copy again (lb2.put
	// stands for it: the copy's mark is the one the first import set).
	lb2.mu.Lock()
	seen := lb2.seen["f"]
	delete(lb2.table, "f")
	lb2.mu.Unlock()
	lb2.put("f", "v", seen)
	lb2.changes <- []dataplane.Record{{Kind: dataplane.RecordConntrack, Key: []byte("f"), Deleted: true}}
	for range 10 { // ten refresh rounds of lb2
		time.Sleep(100 * time.Millisecond)
		if has["lb2"].owns("f") {
			t.Fatalf("lb2 owns lb1's flow: the late deletion took its copy's mark off the entry written again")
		}
	}
	if n := lb1.imported("f") - back; n > 0 {
		t.Errorf("lb2 sent lb1's flow back to it %d times", n)
	}
	if !has["lb1"].owns("f") {
		t.Errorf("lb1 no longer owns its flow")
	}
}

// deleteDuringDumpCT is a timedCT whose deletions (a peer's, imported)
// happen while a refresh's dump is under way: the import waits until a
// dump has begun, and the dump returns the table as it was when it began.
type deleteDuringDumpCT struct {
	*timedCT
	dumping chan struct{} // a dump began
	dumped  chan struct{} // the deletion was written
}

func (m *deleteDuringDumpCT) DumpConntrack() ([]dataplane.Record, error) {
	recs, err := m.timedCT.DumpConntrack()
	select {
	case m.dumping <- struct{}{}:
		<-m.dumped
	default:
	}
	return recs, err
}

func (m *deleteDuringDumpCT) ImportConntrack(recs []dataplane.Record) error {
	for _, r := range recs {
		if r.Deleted {
			<-m.dumping
			err := m.timedCT.ImportConntrack(recs)
			m.dumped <- struct{}{}
			return err
		}
	}
	return m.timedCT.ImportConntrack(recs)
}

// TestHAPeersDeletionDuringARefresh: lb1 deletes a flow (its entry aged
// out); lb2 applies the deletion while its refresh is dumping the table,
// so the dump still has the entry. The refresh must not take the entry,
// deleted meanwhile, for one of lb2's: lb2 owns nothing and sends nothing
// back, and the flow is gone from both nodes.
func TestHAPeersDeletionDuringARefresh(t *testing.T) {
	pair := newHAPair(t)
	lb1 := &perKeyCT{newTimedCT(), map[string]int{}}
	lb2 := &deleteDuringDumpCT{newTimedCT(), make(chan struct{}), make(chan struct{})}
	lb1.put("f", "v", time.Now())
	has := map[string]*HA{"lb1": pair.start("lb1", lb1), "lb2": pair.start("lb2", lb2)}
	waitFor(t, "the flow on lb2", func() bool { return lb2.has("f") })
	lb1.local(dataplane.Record{Kind: dataplane.RecordConntrack, Key: []byte("f"), Deleted: true})
	waitFor(t, "the deletion on lb2", func() bool { return !lb2.has("f") })
	back := lb1.imported("f")
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		if has["lb2"].owns("f") {
			t.Fatalf("lb2 owns the flow lb1 deleted: its refresh took the entry being deleted for one of its own")
		}
	}
	if n := lb1.imported("f") - back; n > 0 || lb1.has("f") {
		t.Errorf("lb2 sent the deleted flow back to lb1 (%d records; lb1 holds it again: %v)", n, lb1.has("f"))
	}
	// The deletion's mark lasts until a dump lacks the key: no leak.
	has["lb2"].mu.Lock()
	marks := len(has["lb2"].imported)
	has["lb2"].mu.Unlock()
	if held := has["lb2"].snapshot().held; marks != 0 || held != 0 {
		t.Errorf("lb2 after the deletion: %d marks, %d entries held from peers, want none", marks, held)
	}
}

// pausedDumpCT is a timedCT whose next dump, once armed, returns the table
// as it was when the dump began, but only after the test has changed the
// table meanwhile (release).
type pausedDumpCT struct {
	*timedCT
	armed   chan struct{} // a dump may pause
	began   chan struct{} // the paused dump began
	release chan struct{} // let it return
}

func newPausedDumpCT() *pausedDumpCT {
	return &pausedDumpCT{newTimedCT(), make(chan struct{}, 1), make(chan struct{}), make(chan struct{})}
}

func (m *pausedDumpCT) DumpConntrack() ([]dataplane.Record, error) {
	recs, err := m.timedCT.DumpConntrack()
	select {
	case <-m.armed:
		m.began <- struct{}{}
		<-m.release
	default:
	}
	return recs, err
}

// TestHALocalDeletionDuringARefresh: lb1 owns a flow; its datapath deletes
// the entry (an ageing round) while lb1's refresh is dumping the table,
// and lb1 reads the deletion before the refresh looks at its dump, which
// still has the entry. The refresh must not take that stale entry for a
// flow of lb1's: lb1 owns nothing, and lb2, told of the deletion, does not
// get the flow back. (Seen in the HA lab: the closing SCTP associations'
// entries, deleted by the ageing round, sent again and passed back and
// forth between the nodes until they aged out again.)
func TestHALocalDeletionDuringARefresh(t *testing.T) {
	pair := newHAPair(t)
	lb1, lb2 := newPausedDumpCT(), &perKeyCT{newTimedCT(), map[string]int{}}
	lb1.put("f", "v", time.Now())
	has := map[string]*HA{"lb1": pair.start("lb1", lb1), "lb2": pair.start("lb2", lb2)}
	waitFor(t, "the flow on lb2", func() bool { return lb2.has("f") })
	lb1.armed <- struct{}{}
	<-lb1.began
	lb1.local(dataplane.Record{Kind: dataplane.RecordConntrack, Key: []byte("f"), Deleted: true})
	waitFor(t, "lb1 reading its deletion", func() bool { return !has["lb1"].owns("f") })
	waitFor(t, "the deletion on lb2", func() bool { return !lb2.has("f") })
	back := lb2.imported("f")
	close(lb1.release)
	for range 10 { // ten refresh rounds of each node
		time.Sleep(100 * time.Millisecond)
		if has["lb1"].owns("f") {
			t.Fatalf("lb1 owns the flow its datapath deleted: the refresh took its dump's stale entry for one of its own")
		}
	}
	if n := lb2.imported("f") - back; n > 0 || lb2.has("f") {
		t.Errorf("lb1 sent the deleted flow to lb2 again (%d records; lb2 holds it: %v)", n, lb2.has("f"))
	}
}
