package sync

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

func TestTwoNodesConverge(t *testing.T) {
	s := newSim(t, Config{}, "a", "b")
	s.connectAll()
	for i := range 1000 {
		s.put("a", fmt.Sprintf("k%d", i))
		s.put("b", fmt.Sprintf("b%d", i%10))
	}
	s.del("a", "k5")
	s.settle()
	if !s.nodes["b"].m.Synced("a") {
		t.Fatal("b not synced")
	}
}

// A key changed several times before a flush is sent once, latest value.
func TestChangesAreCoalesced(t *testing.T) {
	s := newSim(t, Config{}, "a", "b")
	s.connectAll()
	s.settle()
	before := s.nodes["a"].m.Stats().SentRecords
	for range 10 {
		s.put("a", "k")
	}
	s.settle()
	st := s.nodes["a"].m.Stats()
	if got := st.SentRecords - before; got != 1 {
		t.Fatalf("10 changes of one key sent as %d records, want 1", got)
	}
	if st.Coalesced != 9 {
		t.Fatalf("coalesced %d, want 9", st.Coalesced)
	}
}

// A joiner is synced only once End is applied, and what the sender deleted
// while the joiner was away is gone from it afterwards.
func TestRejoinResyncsAndSweeps(t *testing.T) {
	s := newSim(t, Config{BatchBytes: 256}, "a", "b")
	s.connectAll()
	for i := range 200 {
		s.put("a", fmt.Sprintf("k%d", i))
	}
	s.settle()
	s.cut("a", "b")
	s.restart("b")
	for i := range 100 {
		s.del("a", fmt.Sprintf("k%d", i))
	}
	s.connect("a", "b")
	s.flush()
	steps := 0
	for len(s.queue) > 0 {
		msg := s.queue[0]
		s.deliver(0, false)
		steps++
		if p, _ := Parse(msg.data); p.Data != nil && msg.to == "b" && msg.from == "a" && !p.Data.End && s.nodes["b"].m.Synced("a") {
			t.Fatalf("b synced with a before End (message %d)", steps)
		}
	}
	s.settle()
	if st := s.nodes["b"].m.Stats(); st.ResyncsCompleted == 0 {
		t.Fatal("no resync completed")
	}
	// b kept nothing from a's old life: a was never restarted; but b was.
	// Now a rejoins after a restart: b drops what a no longer has.
	s.cut("a", "b")
	for i := 100; i < 150; i++ {
		delete(s.nodes["a"].own, fmt.Sprintf("k%d", i))
	}
	s.restart("a")
	s.settle()
	if st := s.nodes["b"].m.Stats(); st.Swept != 50 {
		t.Fatalf("swept %d, want the 50 records a lost", st.Swept)
	}
}

// A short cut resumes the stream without a resync.
func TestShortCutResumes(t *testing.T) {
	s := newSim(t, Config{}, "a", "b")
	s.connectAll()
	s.settle()
	for i := range 50 {
		s.put("a", fmt.Sprintf("k%d", i))
	}
	s.flush()
	s.queue = nil // lost with the connection
	s.cut("a", "b")
	for i := 50; i < 80; i++ {
		s.put("a", fmt.Sprintf("k%d", i))
	}
	resyncs := s.nodes["a"].m.Stats().Resyncs
	s.settle()
	st := s.nodes["a"].m.Stats()
	if st.Resyncs != resyncs || st.Resumes != 1 {
		t.Fatalf("resyncs %d -> %d, resumes %d: want a resume", resyncs, st.Resyncs, st.Resumes)
	}
}

// A peer far behind is switched to a resync instead of queueing without
// bound (back-pressure), and catches up.
func TestSlowPeerSwitchesToResync(t *testing.T) {
	s := newSim(t, Config{MaxPending: 100, Window: 2, BatchBytes: 128}, "a", "b")
	s.connectAll()
	s.settle()
	for i := range 1000 {
		s.put("a", fmt.Sprintf("k%d", i)) // nothing delivered meanwhile
	}
	st := s.nodes["a"].m.Stats()
	if st.Overflows == 0 {
		t.Fatal("no overflow with 1000 changes and a bound of 100")
	}
	s.settle()
}

// Losses and reordering are repaired by resends.
func TestLossyLinkRepairs(t *testing.T) {
	s := newSim(t, Config{BatchBytes: 200}, "a", "b")
	s.connectAll()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		s.put("a", fmt.Sprintf("k%d", i%300))
		if i%10 == 0 {
			s.flush()
		}
		for len(s.queue) > 0 && rng.IntN(3) > 0 {
			switch rng.IntN(20) {
			case 0:
				s.queue = s.queue[1:]
			case 1:
				s.deliver(rng.IntN(len(s.queue)), false)
			default:
				s.deliver(0, false)
			}
		}
		s.advance(time.Millisecond)
	}
	s.settle()
	st := s.nodes["a"].m.Stats()
	if st.ResentMessages == 0 || s.nodes["b"].m.Stats().OutOfOrder == 0 {
		t.Fatalf("no resend (%d) or no gap seen (%d): the loss did not happen", st.ResentMessages, s.nodes["b"].m.Stats().OutOfOrder)
	}
}

func TestGarbageClosesAndAppliesNothing(t *testing.T) {
	s := newSim(t, Config{}, "a", "b")
	s.connectAll()
	s.put("a", "k")
	s.flush()
	rng := rand.New(rand.NewPCG(3, 4))
	for len(s.queue) > 0 {
		s.sendGarbage(rng)
		s.queue = s.queue[1:]
	}
	if s.closes == 0 || s.nodes["b"].m.Stats().Malformed == 0 {
		t.Fatal("garbage not refused")
	}
	s.settle()
}

func TestHelloNamingAnotherPeerIsRefused(t *testing.T) {
	m, err := New(Config{Self: "a", Peers: []string{"b", "c"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	out := m.Receive(t0, "b", AppendHello(nil, Hello{Name: "c", Incarnation: 5}))
	if len(out.Close) != 1 || m.Up("b") || m.Up("c") {
		t.Fatalf("hello naming c on b's connection: %+v", out)
	}
}

func TestChaosThreeNodes(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := newSim(t, Config{Window: 4, BatchBytes: 128, MaxPending: 16, RetransmitTimeout: 50 * time.Millisecond}, "a", "b", "c")
			s.connectAll()
			s.chaos(rand.New(rand.NewPCG(seed, 99)), 3000, 40)
			s.settle()
		})
	}
}

func TestConfigIsChecked(t *testing.T) {
	for _, c := range []Config{
		{Self: ""}, {Self: "a", Peers: []string{"a"}}, {Self: "a", Peers: []string{"b", "b"}},
		{Self: "a", Window: -1}, {Self: "a", BatchBytes: 10},
	} {
		if _, err := New(c, 1); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if _, err := New(Config{Self: "a"}, 0); err == nil {
		t.Error("incarnation 0 accepted")
	}
}

// A producer outrunning a peer that is being resynced does not restart
// the snapshot while it is under way: changed keys are folded into its
// tail (deleted ones sent as deletions). Once End is out, a peer still
// behind is resynced again; that is the back-pressure.
func TestOverloadDuringResyncDoesNotRestartIt(t *testing.T) {
	s := newSim(t, Config{MaxPending: 50, Window: 2, BatchBytes: 256}, "a", "b")
	for i := range 2000 {
		s.put("a", fmt.Sprintf("k%d", i))
	}
	s.connectAll()
	for i := range 3000 {
		s.put("a", fmt.Sprintf("n%d", i))
		s.del("a", fmt.Sprintf("k%d", i%2000))
		if len(s.queue) > 0 && i%8 == 0 {
			s.deliver(0, false)
		}
	}
	s.settle()
	st := s.nodes["a"].m.Stats()
	if st.Folded == 0 {
		t.Fatalf("%d overflows, none folded, %d resyncs: every snapshot was restarted", st.Overflows, st.Resyncs)
	}
	t.Logf("%d overflows, %d folded, %d resyncs", st.Overflows, st.Folded, st.Resyncs)
}

// Repeated timeouts back off: a peer that does not acknowledge gets the
// window again after 2, 4, 8 ... times the timeout, up to 16, not every
// timeout.
func TestRetransmissionBacksOff(t *testing.T) {
	s := newSim(t, Config{RetransmitTimeout: 10 * time.Millisecond}, "a", "b")
	s.connectAll()
	s.settle()
	s.put("a", "k")
	s.flush()
	s.queue = nil
	for range 2000 { // 2 s without any acknowledgement
		s.queue = nil
		s.advance(time.Millisecond)
	}
	got := s.nodes["a"].m.Stats().Timeouts
	// 20, 40, 80, 160, 160, ... ms: about 14 timeouts in 2 s; without back-off 200.
	if got < 8 || got > 20 {
		t.Fatalf("%d timeouts in 2 s at a 10 ms timeout: want back-off to about 14", got)
	}
	s.settle()
}
