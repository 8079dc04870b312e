package sync

import (
	"fmt"
	"testing"
)

// TestLocalDeletionSendsNothing: a Local deletion (a conntrack expiry,
// which every peer makes itself) of a record sent live removes it from
// this node's table without a message: the peer keeps its copy (its own
// expiry's job), and a peer that later resyncs from this node is not
// given the record. A deletion that is not Local still goes to the peer.
func TestLocalDeletionSendsNothing(t *testing.T) {
	s := newSim(t, Config{}, "a", "b")
	s.settle() // connected, the join's resyncs (of empty tables) done
	for i := range 10 {
		s.put("a", fmt.Sprintf("k%d", i))
	}
	s.settle()
	sent := s.nodes["a"].m.Stats().SentMessages
	for i := range 5 {
		s.local("a", fmt.Sprintf("k%d", i))
	}
	s.flush()
	if n := s.nodes["a"].m.Stats().SentMessages - sent; n != 0 || len(s.queue) != 0 {
		t.Fatalf("5 local deletions sent %d data messages (%d queued), want none", n, len(s.queue))
	}
	if got := len(s.nodes["b"].applied["a"]); got != 10 {
		t.Fatalf("b holds %d of a's records after a's local deletions, want its 10 copies", got)
	}
	if got := s.nodes["a"].m.Len(); got != 5 {
		t.Fatalf("a's table holds %d records after 5 of 10 left it, want 5", got)
	}
	// b restarts: its resync from a carries the 5 records a holds.
	s.cut("a", "b")
	s.restart("b")
	s.settle() // checks b holds exactly a's table
	// A deletion that is not Local reaches b.
	s.del("a", "k5")
	s.settle()
}

// TestLocalDeletionOfASnapshotsKeyIsSent: a value a resync's snapshot
// carried reached the peer later than it was put (the peer may take it
// for younger than it is), so its Local deletion is sent; once the key is
// put again (sent live), its Local deletion is not.
func TestLocalDeletionOfASnapshotsKeyIsSent(t *testing.T) {
	s := newSim(t, Config{}, "a", "b")
	s.settle()
	s.put("a", "k0")
	s.put("a", "k1")
	s.settle()
	// b restarts: a's whole table goes to it in a snapshot.
	s.cut("a", "b")
	s.restart("b")
	s.settle()
	s.local("a", "k0")
	s.settle()       // checks b no longer holds k0
	s.put("a", "k1") // put again: sent live
	s.settle()
	sent := s.nodes["a"].m.Stats().SentMessages
	s.local("a", "k1")
	s.flush()
	if n := s.nodes["a"].m.Stats().SentMessages - sent; n != 0 {
		t.Fatalf("the local deletion of a key sent live since the snapshot went out in %d messages, want none", n)
	}
	if got := len(s.nodes["b"].applied["a"]); got != 1 {
		t.Fatalf("b holds %d of a's records, want its copy of k1 (its own expiry's to remove)", got)
	}
}

// local is a Local deletion of key at name: gone from its producer's
// table, left to the peers to make themselves.
func (s *sim) local(name, key string) {
	delete(s.nodes[name].own, key)
	s.step(name, func(m *Machine) Output {
		out, err := m.Put(s.now, Record{Kind: 7, Key: []byte(key), Deleted: true, Local: true})
		if err != nil {
			s.tb.Fatal(err)
		}
		return out
	})
}
