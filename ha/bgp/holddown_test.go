package bgp

import (
	"context"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
)

// TestBFDFlapEndsWithTheLastAdminState: BFD going Down and Up again within
// a millisecond (a node thawed after a freeze sees its detection time
// expired, then the peer's next packet) leaves the BGP session in the
// state BFD ended in. gobgp drops an admin request made while the previous
// one is queued, so without checking, the release after a hold-down was
// lost and the session stayed down for good.
func TestBFDFlapEndsWithTheLastAdminState(t *testing.T) {
	ctx := context.Background()
	s, err := New(ctx, api.BGPConfig{ASN: 65001, RouterID: "10.255.0.2", Peers: []api.BGPPeer{
		{Name: "r", Address: "127.0.0.41", ASN: 65000, Port: 9, BFD: &api.BFDProfile{}},
	}}, Options{Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.mu.Lock()
	p := s.peers["r"]
	s.mu.Unlock()
	hold := func(down bool) { s.setHeldDown(p, down) }
	for round, last := range []bool{false, true, false} {
		for i := 0; i < 20; i++ {
			hold(i%2 == 0)
			hold(i%2 != 0)
		}
		hold(last)
		deadline := time.Now().Add(5 * time.Second)
		for {
			down, ok := s.adminDown(p)
			if !ok {
				t.Fatal("peer unknown to gobgp")
			}
			// Converged and staying there: checked past the
			// converger's own settling time.
			if down == last && time.Now().After(deadline.Add(-3*time.Second)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: admin down=%v after the flaps, want %v", round, down, last)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
