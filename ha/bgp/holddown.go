package bgp

import (
	"context"
	"time"

	gapi "github.com/osrg/gobgp/v3/api"

	"github.com/telcolb/telcolb/ha/bfd"
)

// adminPoll is how often a requested admin state is checked against
// gobgp's, and adminStable how many checks in a row must agree before the
// request counts as done.
const (
	adminPoll   = 100 * time.Millisecond
	adminStable = 5
)

// bfdChanged holds the BGP session down while BFD is down after having
// been up, and releases it when BFD is up again. It reads the current BFD
// state, so callbacks racing each other converge.
func (s *Speaker) bfdChanged(p *peer) {
	s.bfdMu.Lock()
	defer s.bfdMu.Unlock()
	s.mu.Lock()
	if s.closed || p.removed || p.bfd == nil {
		s.mu.Unlock()
		return
	}
	st := p.bfd.Status()
	var enable, disable bool
	switch {
	case st.State == bfd.Up && p.heldDown:
		enable = true
	case st.State == bfd.Down && !p.heldDown && st.LocalDiag != bfd.DiagNone && st.RemoteDiag != bfd.DiagAdminDown:
		// A peer that says AdminDown is not a failure (RFC 5882 §3.2).
		p.lastDownReason = "BFD down: " + st.LocalDiag.String()
		disable = true
	}
	s.mu.Unlock()
	if enable {
		s.log.Info("bfd up: releasing the bgp session", "peer", p.cfg.Name)
		s.setHeldDown(p, false)
	}
	if disable {
		s.log.Warn("bfd down: resetting the bgp session and holding it down", "peer", p.cfg.Name, "diag", st.LocalDiag.String())
		s.setHeldDown(p, true)
	}
}

// setHeldDown records whether the session is to be held down and wakes
// the goroutine that makes gobgp follow.
func (s *Speaker) setHeldDown(p *peer, down bool) {
	s.mu.Lock()
	p.heldDown = down
	s.mu.Unlock()
	select {
	case p.adminKick <- struct{}{}:
	default: // a wake-up is pending; the goroutine reads heldDown
	}
}

// runAdmin makes gobgp's admin state of the peer follow heldDown, for the
// peer's life. A request is not fire and forget: gobgp v3.37.0 takes one
// admin state request per peer at a time and drops one made while the
// previous is not processed yet (a log line, no error). A node thawed
// after a freeze sees BFD go Down and Up again within a millisecond; the
// Enable that followed the Disable was dropped and the session stayed
// administratively down for good. So each request is checked against the
// state gobgp reports and repeated until they agree adminStable times in
// a row (a request still queued in gobgp does not show yet).
func (s *Speaker) runAdmin(p *peer) {
	for {
		select {
		case <-p.bfdStop:
			return
		case <-p.adminKick:
		}
		s.convergeAdmin(p)
	}
}

func (s *Speaker) convergeAdmin(p *peer) {
	agreed := 0
	request := true
	for agreed < adminStable {
		s.mu.Lock()
		down, gone := p.heldDown, s.closed || p.removed
		s.mu.Unlock()
		if gone {
			return
		}
		if request {
			s.requestAdmin(p, down)
			agreed = 0
		}
		select {
		case <-p.bfdStop:
			return
		case <-p.adminKick:
			request = true // heldDown changed: request the new state
			continue
		case <-time.After(adminPoll):
		}
		cur, ok := s.adminDown(p)
		if !ok {
			return // the peer is gone from gobgp (removed, restarted)
		}
		s.mu.Lock()
		down = p.heldDown
		s.mu.Unlock()
		if cur == down {
			agreed++
			request = false
		} else {
			request = true
		}
	}
}

func (s *Speaker) requestAdmin(p *peer, down bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if down {
		if err := s.srv.DisablePeer(ctx, &gapi.DisablePeerRequest{Address: p.addr.String(), Communication: "BFD down"}); err != nil {
			s.log.Error("disable bgp peer", "peer", p.cfg.Name, "error", err)
		}
		return
	}
	if err := s.srv.EnablePeer(ctx, &gapi.EnablePeerRequest{Address: p.addr.String()}); err != nil {
		s.log.Error("enable bgp peer", "peer", p.cfg.Name, "error", err)
	}
}

// adminDown reports whether gobgp holds the peer administratively down;
// ok is false when gobgp does not know the peer.
func (s *Speaker) adminDown(p *peer) (down, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.ListPeer(ctx, &gapi.ListPeerRequest{Address: p.addr.String()}, func(gp *gapi.Peer) {
		if gp.State == nil {
			return
		}
		ok = true
		down = gp.State.AdminState != gapi.PeerState_UP
	})
	return down, ok
}
