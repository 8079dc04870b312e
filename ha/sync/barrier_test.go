package sync

import (
	"fmt"
	"slices"
	"testing"
)

// The barrier a planned drain waits on (barrier.go). sim.barrierDone
// checks at every completion that each marked peer holds what the
// producer had at the barrier; these tests check when it completes.

func (s *sim) isDone(name string, id uint64) bool {
	return slices.Contains(s.nodes[name].done, id)
}

// dropBarrier drops barrier id at name and returns the peers that had not
// acknowledged it.
func (s *sim) dropBarrier(name string, id uint64) []string {
	delete(s.nodes[name].barriers, id)
	return s.nodes[name].m.DropBarrier(id)
}

// deliverAll delivers the queue in order, one message at a time, with
// check after each.
func (s *sim) deliverAll(check func()) {
	for len(s.queue) > 0 {
		s.deliver(0, false)
		if check != nil {
			check()
		}
	}
}

// A barrier completes when the peer has acknowledged the messages carrying
// what was queued before it: not before it received them, not before its
// acknowledgements arrived, and not after changes made since (under load
// the queue never empties: a drain must not wait for that).
func TestBarrierCompletesWhenThePeerAcknowledgesWhatCameBefore(t *testing.T) {
	s := newSim(t, Config{BatchBytes: 128}, "a", "b")
	s.connectAll()
	s.settle()
	for i := range 20 {
		s.put("a", fmt.Sprintf("k%d", i))
	}
	id := s.barrier("a")
	for i := range 20 {
		s.put("a", fmt.Sprintf("n%d", i)) // after the barrier
	}
	s.flush()
	m := s.nodes["a"].m
	if s.isDone("a", id) {
		t.Fatal("barrier complete before the peer received anything")
	}
	if got := m.Unacked(id); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("unacked %v, want [b]", got)
	}
	// b receives everything; its acknowledgements are lost.
	var acks []simMsg
	for len(s.queue) > 0 {
		if s.queue[0].from == "b" {
			acks = append(acks, s.queue[0])
			s.queue = s.queue[1:]
			continue
		}
		s.deliver(0, false)
	}
	if len(acks) < 4 {
		t.Fatalf("%d acknowledgements: want several messages (batches of 128 bytes)", len(acks))
	}
	if s.isDone("a", id) {
		t.Fatal("barrier complete without any acknowledgement")
	}
	// The acknowledgements arrive one by one: the barrier completes while
	// the messages carrying the later changes are still unacknowledged.
	s.queue = acks
	inflightAtDone := -1
	s.deliverAll(func() {
		if s.isDone("a", id) && inflightAtDone < 0 {
			inflightAtDone = len(m.peers["b"].inflight)
		}
	})
	if inflightAtDone == 0 {
		t.Fatal("barrier completed only with the changes made after it acknowledged")
	}
	if !s.isDone("a", id) {
		t.Fatal("barrier not complete after every acknowledgement")
	}
	if m.Unacked(id) != nil {
		t.Errorf("unacked %v after completion", m.Unacked(id))
	}
	s.settle()
}

// With no peer up a barrier completes at once; a peer down when it is
// taken is not waited for; a peer that goes down after keeps it waiting
// until dropped, which names it.
func TestBarrierPeerDown(t *testing.T) {
	s := newSim(t, Config{}, "a", "b", "c")
	if id := s.barrier("a"); !s.isDone("a", id) {
		t.Fatal("barrier with no peer up not complete at once")
	}
	s.connectAll()
	s.settle()
	s.cut("a", "c")
	s.put("a", "k1")
	id := s.barrier("a")
	if got := s.nodes["a"].m.Unacked(id); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("unacked %v, want [b] (c is down)", got)
	}
	s.deliverAll(nil)
	if !s.isDone("a", id) {
		t.Fatal("barrier waits for a peer that was down when it was taken")
	}
	s.put("a", "k2")
	id = s.barrier("a")
	s.queue = nil // lost with the connection
	s.cut("a", "b")
	for range 100 {
		s.advance(50 * s.nodes["a"].m.cfg.RetransmitTimeout)
	}
	if s.isDone("a", id) {
		t.Fatal("barrier complete while its peer is down")
	}
	if got := s.dropBarrier("a", id); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("dropped barrier names %v, want [b]", got)
	}
	if got := s.nodes["a"].m.Unacked(id); got != nil {
		t.Fatalf("dropped barrier still waits for %v", got)
	}
	s.settle()
}

// The messages a barrier waits for are lost with a cut: the reconnection
// resumes the stream, resends them, and their acknowledgement completes it.
func TestBarrierResendAfterACut(t *testing.T) {
	s := newSim(t, Config{}, "a", "b")
	s.connectAll()
	s.settle()
	for i := range 10 {
		s.put("a", fmt.Sprintf("k%d", i))
	}
	id := s.barrier("a")
	s.queue = nil
	s.cut("a", "b")
	if s.isDone("a", id) {
		t.Fatal("barrier complete with its messages lost")
	}
	resumes := s.nodes["a"].m.Stats().Resumes
	s.connect("a", "b")
	s.deliverAll(nil)
	if !s.isDone("a", id) {
		t.Fatal("barrier not complete after the resend")
	}
	if got := s.nodes["a"].m.Stats().Resumes; got != resumes+1 {
		t.Fatalf("resumes %d -> %d: want the stream resumed", resumes, got)
	}
	s.settle()
}

// A peer that restarts after the barrier gets the table in a resync: the
// barrier completes once that snapshot's End is acknowledged, not when the
// first messages of the new stream are.
func TestBarrierCompletesAfterTheResyncOfARestartedPeer(t *testing.T) {
	s := newSim(t, Config{BatchBytes: 128, Window: 2}, "a", "b")
	s.connectAll()
	s.settle()
	for i := range 50 {
		s.put("a", fmt.Sprintf("k%d", i))
	}
	id := s.barrier("a")
	s.restart("b")
	s.connect("a", "b")
	p := s.nodes["a"].m.peers["b"]
	s.deliverAll(func() {
		if s.isDone("a", id) && (p.resyncing || p.endAcked != p.stream) {
			t.Fatal("barrier complete before the resync's End was acknowledged")
		}
		if len(s.queue) == 0 && !s.isDone("a", id) {
			s.advance(p.rtt.rto) // window refills on acks; nothing lost
		}
	})
	if !s.isDone("a", id) {
		t.Fatal("barrier not complete after the resync")
	}
	s.settle()
}

// A barrier taken while a snapshot is under way waits for its End (the
// marked keys may sit in its unsent part), even once the changes queued
// before it are acknowledged.
func TestBarrierDuringASnapshotWaitsForItsEnd(t *testing.T) {
	s := newSim(t, Config{BatchBytes: 128, Window: 2}, "a", "b")
	for i := range 100 {
		s.put("a", fmt.Sprintf("k%d", i))
	}
	s.connectAll()
	p := s.nodes["a"].m.peers["b"]
	for !p.up && len(s.queue) > 0 { // the hellos
		s.deliver(0, false)
	}
	s.put("a", "young")
	id := s.barrier("a")
	if !p.resyncing || p.endSent {
		t.Fatal("no snapshot under way at the barrier")
	}
	s.deliverAll(func() {
		if s.isDone("a", id) && p.endAcked != p.stream {
			t.Fatalf("barrier complete before the snapshot's End was acknowledged (acked counts %d and %d, marks reached)", p.queues[qFresh].acked, p.queues[qChanged].acked)
		}
	})
	if !s.isDone("a", id) {
		t.Fatal("barrier not complete after the snapshot")
	}
	s.settle()
}
