package sync

import (
	"slices"
	stdsync "sync"
	"sync/atomic"
	"testing"
	"time"
)

// Over real connections: while b's messages to a (its acknowledgements)
// are dropped, a barrier at a stays open although b holds the record, and
// names b; once they flow again (a resends on its timer, b acknowledges)
// it completes. Released while open, it names the peer that did not ack.
func TestNodeBarrierWaitsForTheAcknowledgement(t *testing.T) {
	var hold atomic.Bool
	g := &group{t: t, ca: newCA(t, "group"), names: []string{"a", "b"}, addrs: map[string]string{}, nodes: map[string]*tnode{},
		mcfg: Config{RetransmitTimeout: 20 * time.Millisecond},
		impair: func(peer string) Fault {
			return Fault{Drop: peer == "a" && hold.Load()} // what b sends a
		}}
	g.start("b", "127.0.0.1:0")
	g.start("a", "127.0.0.1:0")
	g.converged(time.Minute)
	a, b := g.nodes["a"], g.nodes["b"]
	hold.Store(true)
	g.put("a", "young", "v1")
	w, err := a.n.Barrier()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for b.holds("a", "young") == "" {
		if time.Now().After(deadline) {
			t.Fatal("b never received the record")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-w.Done():
		t.Fatal("barrier done while b's acknowledgements are dropped")
	case <-time.After(300 * time.Millisecond):
	}
	if got := w.Unacked(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("unacked %v, want [b]", got)
	}
	hold.Store(false)
	select {
	case <-w.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("barrier not done once b's acknowledgements flow")
	}
	if got := w.Release(); got != nil {
		t.Errorf("released after done: %v, want none", got)
	}
	hold.Store(true)
	g.put("a", "young2", "v1")
	w, err = a.n.Barrier()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := w.Release(); !slices.Equal(got, []string{"b"}) {
		t.Errorf("released while open: %v, want [b]", got)
	}
	hold.Store(false)
	g.converged(time.Minute)
}

func (tn *tnode) holds(from, key string) string {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.got[from][key]
}

// A barrier completes only once the peer's consumer has applied the
// records (its datapath holds them), not when its node received them:
// while b's Apply is held, a's barrier stays open.
func TestNodeBarrierWaitsForThePeersApply(t *testing.T) {
	release := make(chan struct{})
	g := &group{t: t, ca: newCA(t, "group"), names: []string{"a", "b"}, addrs: map[string]string{}, nodes: map[string]*tnode{},
		mcfg: Config{RetransmitTimeout: 20 * time.Millisecond},
		applying: func(name string, as []Applied) {
			for _, a := range as {
				if name == "b" && string(a.Record.Key) == "slow" {
					<-release
				}
			}
		}}
	g.start("b", "127.0.0.1:0")
	g.start("a", "127.0.0.1:0")
	var once stdsync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open) // before the nodes close: b's loop must not stay blocked
	g.converged(time.Minute)
	g.put("a", "slow", "v1")
	w, err := g.nodes["a"].n.Barrier()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Done():
		t.Fatal("barrier done while b's Apply of the record has not returned")
	case <-time.After(500 * time.Millisecond):
	}
	open()
	select {
	case <-w.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("barrier not done once b applied")
	}
	if got := g.nodes["b"].holds("a", "slow"); got != "v1" {
		t.Fatalf("b holds %q after the barrier, want v1", got)
	}
	g.converged(time.Minute)
}
