package member

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// TestNodesOverLoopback runs three nodes over real UDP sockets on loopback:
// they agree on owners, and when one is closed the others take its VIPs.
func TestNodesOverLoopback(t *testing.T) {
	names := []string{"a", "b", "c"}
	var peers []Peer
	for i, n := range names {
		peers = append(peers, Peer{Name: n, Addr: netip.MustParseAddrPort("127.0.0.1:0")})
		_ = i
	}
	// Bind first on port 0 to learn free ports, then configure everyone.
	var nodes []*Node
	for i := range peers {
		cfg := NodeConfig{Self: names[i], Members: peers, Interval: 20 * time.Millisecond}
		n, err := Listen(cfg)
		if err != nil {
			t.Fatal(err)
		}
		peers[i].Addr = n.conn.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		for _, p := range peers {
			n.peers[p.Name] = p.Addr
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		n.SetVIPs(vips(12))
		go func() { errs <- n.Run(ctx) }()
	}
	agree := func(alive ...string) bool {
		for _, n := range nodes {
			if !contains(alive, n.cfg.Self) {
				continue
			}
			o := n.Owners()
			for _, v := range vips(12) {
				if o[v] != pickOwner(alive, v) {
					return false
				}
			}
		}
		return true
	}
	waitFor(t, 10*time.Second, func() bool { return agree(names...) })
	nodes[0].Close()
	waitFor(t, 10*time.Second, func() bool { return agree("b", "c") })
	cancel()
	for range nodes {
		<-errs
	}
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if x == y {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, d time.Duration, f func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !f() {
		if time.Now().After(end) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Members' LastHeard is a time on the local clock, between the node's
// start and now, that advances with the peer's heartbeats; it stops once
// the peer is closed.
func TestMembersLastHeardIsOnTheLocalClock(t *testing.T) {
	peers := []Peer{{Name: "a", Addr: netip.MustParseAddrPort("127.0.0.1:0")}, {Name: "b", Addr: netip.MustParseAddrPort("127.0.0.1:0")}}
	var nodes []*Node
	for i := range peers {
		n, err := Listen(NodeConfig{Self: peers[i].Name, Members: peers, Interval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		peers[i].Addr = n.conn.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		for _, p := range peers {
			n.peers[p.Name] = p.Addr
		}
	}
	started := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() { errs <- n.Run(ctx) }()
	}
	lastHeard := func() time.Time {
		for _, m := range nodes[0].Members() {
			if m.Name == "b" {
				return m.LastHeard
			}
		}
		t.Fatal("b is not among a's members")
		return time.Time{}
	}
	waitFor(t, 10*time.Second, func() bool { return !lastHeard().IsZero() })
	first := lastHeard()
	if first.Before(started.Add(-time.Second)) || first.After(time.Now()) {
		t.Fatalf("LastHeard %v, want between the start %v and now %v", first, started, time.Now())
	}
	waitFor(t, 10*time.Second, func() bool { return lastHeard().After(first) })
	nodes[1].Close()
	closed := time.Now()
	time.Sleep(200 * time.Millisecond) // ten heartbeat intervals
	if at := lastHeard(); at.After(closed) {
		t.Errorf("LastHeard %v after b closed at %v", at, closed)
	}
	cancel()
	for range nodes {
		<-errs
	}
}
