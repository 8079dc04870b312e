package sync

import (
	stdsync "sync"
	"testing"
	"time"
)

// OnPeerLost is the sync's peer-down verdict: a node whose peer's end of
// the connection goes (here: the peer's node closes, as a killed process's
// kernel does) hears it; a node that closed the connection itself (as it
// does to a peer that stops reading) does not: only the other side does.
func TestOnPeerLostOnlyWhenThePeerEndsTheConnection(t *testing.T) {
	var mu stdsync.Mutex
	lost := map[string][]string{}
	g := newGroup(t, Config{}, "a", "b")
	record := func(node, peer string) {
		mu.Lock()
		lost[node] = append(lost[node], peer)
		mu.Unlock()
	}
	g.lost.Store(&record)
	waitUp := func() {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !g.nodes["a"].n.Up("b") || !g.nodes["b"].n.Up("a") {
			if time.Now().After(deadline) {
				t.Fatal("a and b never connected")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitLost := func(node string, n int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			k := len(lost[node])
			mu.Unlock()
			if k >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d peer losses after 30s, want %d", node, k, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitUp()
	// a closes its connection with b: b has lost a, a has lost no one.
	g.nodes["a"].n.dropConnection("b")
	waitLost("b", 1)
	waitUp() // a dials again
	mu.Lock()
	if len(lost["a"]) != 0 {
		t.Errorf("a closed the connection itself and reported losing %v", lost["a"])
	}
	mu.Unlock()
	// b stops: a has lost b.
	if err := g.nodes["b"].n.Close(); err != nil {
		t.Fatal(err)
	}
	waitLost("a", 1)
	mu.Lock()
	defer mu.Unlock()
	if lost["a"][0] != "b" || lost["b"][0] != "a" {
		t.Errorf("losses %v", lost)
	}
}
