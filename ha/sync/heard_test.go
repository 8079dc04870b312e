package sync

import (
	"testing"
	"time"
)

// HeardAt is when a peer was last heard: zero for a name never heard,
// advancing with the peer's keepalives while it is up, and frozen once it
// is gone (here: its node closed).
func TestHeardAtFollowsThePeersMessages(t *testing.T) {
	g := newGroup(t, Config{KeepaliveInterval: 50 * time.Millisecond, PeerTimeout: time.Second}, "a", "b")
	a := g.nodes["a"].n
	if at := a.HeardAt("nobody"); !at.IsZero() {
		t.Errorf("HeardAt(nobody) = %v, want zero", at)
	}
	deadline := time.Now().Add(time.Minute)
	for !a.Up("b") || a.HeardAt("b").IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("a never heard b")
		}
		time.Sleep(10 * time.Millisecond)
	}
	first := a.HeardAt("b")
	// Idle connection: only b's keepalives, 50 ms apart, move it.
	for !a.HeardAt("b").After(first) {
		if time.Now().After(deadline) {
			t.Fatalf("HeardAt(b) still %v: b's keepalives not counted", first)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := g.nodes["b"].n.Close(); err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	time.Sleep(300 * time.Millisecond) // six keepalive intervals
	if at := a.HeardAt("b"); at.After(closed) {
		t.Errorf("HeardAt(b) = %v, after b closed at %v", at, closed)
	}
}
