package member

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// claimants returns an identity that beats ours for vip and one that loses.
func claimants(t *testing.T, vip netip.Addr, ours string) (winner, loser string) {
	t.Helper()
	for i := 0; i < 10000 && (winner == "" || loser == ""); i++ {
		c := fmt.Sprintf("id%d:mac", i)
		if ClaimWinner(vip, ours, c) == c {
			winner = c
		} else {
			loser = c
		}
	}
	if winner == "" || loser == "" {
		t.Fatal("no winning and losing identities found")
	}
	return winner, loser
}

// ticks steps time from a to b in 50 ms ticks (a machine not stepped for
// longer than its detection time believes it was suspended).
func (s stepper) ticks(a, b time.Duration) Output {
	var out Output
	for at := a + ms(50); at <= b; at += ms(50) {
		out = s.tick(at)
	}
	return out
}

func (s stepper) claim(at time.Duration, vip netip.Addr, ours, theirs string) Output {
	return s.do(t0.Add(at), func() Output { return s.m.Claim(t0.Add(at), vip, ours, theirs) })
}

// readyAlone returns a machine of group {a, b} that has warmed up without
// hearing b (after the detection time) and owns every VIP.
func readyAlone(t *testing.T) stepper {
	s := newStepper(t, "a", "a", "b")
	s.do(t0, func() Output { return s.m.SetVIPs(t0, vips(4)) })
	s.do(t0, func() Output { return s.m.Start(t0) })
	s.tick(ms(300))
	if len(s.m.Owned()) != 4 {
		t.Fatalf("a owns %v after its warm-up alone", s.m.Owned())
	}
	return s
}

func TestFenceLoserStopsUntilClaimsStop(t *testing.T) {
	s := readyAlone(t)
	vip := vipN(1)
	win, _ := claimants(t, vip, "a:mac")
	if out := s.claim(ms(310), vip, "a:mac", win); len(out.Fencing) != 0 || !slices.Contains(s.m.Owned(), vip) {
		t.Fatalf("first claim fenced at once: %+v", out)
	}
	// Within the settle time (a hand-over's overlap): still nothing.
	if out := s.claim(ms(390), vip, "a:mac", win); len(out.Fencing) != 0 {
		t.Fatalf("claim within the settle time fenced: %+v", out)
	}
	out := s.claim(ms(410), vip, "a:mac", win)
	want := []FenceChange{{VIP: vip, Fenced: true, Claimant: win, Reason: "lost"}}
	if !slices.Equal(out.Fencing, want) || slices.Contains(s.m.Owned(), vip) {
		t.Fatalf("confirmed conflict lost: fencing %+v, owned %v", out.Fencing, s.m.Owned())
	}
	if s.m.Owner(vip) != "a" || !slices.Equal(s.m.Fenced(), []netip.Addr{vip}) {
		t.Fatalf("owner %q fenced %v: the rules still make a the owner", s.m.Owner(vip), s.m.Fenced())
	}
	// The winner answers the probes: the fence is held.
	s.ticks(ms(410), ms(700))
	s.claim(ms(700), vip, "a:mac", win)
	if out := s.ticks(ms(700), ms(1150)); len(out.Fencing) != 0 || slices.Contains(s.m.Owned(), vip) {
		t.Fatalf("fence ended %v after the last claim: %+v", ms(400), out)
	}
	out = s.ticks(ms(1150), ms(1200))
	if !slices.Equal(out.Fencing, []FenceChange{{VIP: vip, Reason: "expired"}}) || !slices.Contains(s.m.Owned(), vip) {
		t.Fatalf("hold time passed without claims: fencing %+v, owned %v", out.Fencing, s.m.Owned())
	}
}

func TestFenceWinnerAnnouncesAgain(t *testing.T) {
	s := readyAlone(t)
	vip := vipN(2)
	_, lose := claimants(t, vip, "a:mac")
	s.claim(ms(310), vip, "a:mac", lose)
	out := s.claim(ms(420), vip, "a:mac", lose)
	if !slices.Equal(out.Announce, []netip.Addr{vip}) || len(out.Fencing) != 0 {
		t.Fatalf("won conflict: %+v", out)
	}
	// At most once per hold time.
	s.ticks(ms(420), ms(600))
	if out := s.claim(ms(600), vip, "a:mac", lose); len(out.Announce) != 0 {
		t.Fatalf("announced again within the hold time: %+v", out)
	}
	if !slices.Contains(s.m.Owned(), vip) || s.m.Stats().Conflicts != 2 {
		t.Fatalf("owned %v, stats %+v", s.m.Owned(), s.m.Stats())
	}
}

func TestFenceIgnoresHandOverAndOthersVIPs(t *testing.T) {
	s := readyAlone(t)
	vip := vipN(3)
	win, _ := claimants(t, vip, "a:mac")
	// Two claims one latency apart, as in a hand-over, then none.
	s.claim(ms(310), vip, "a:mac", win)
	s.claim(ms(311), vip, "a:mac", win)
	// One much later: the first is older than the hold time, so this one
	// starts a new observation instead of confirming.
	s.ticks(ms(311), ms(2000))
	if out := s.claim(ms(2000), vip, "a:mac", win); len(out.Fencing) != 0 {
		t.Fatalf("claims %v apart fenced: %+v", ms(1689), out)
	}
	if s.m.Stats().Conflicts != 0 {
		t.Fatalf("stats %+v", s.m.Stats())
	}
	// Our own frames and claims for VIPs we do not own are no conflict.
	s.claim(ms(2001), vip, "a:mac", "a:mac")
	s.recv(ms(2002), hb("b", 1, 1, true))
	var bs netip.Addr
	for _, v := range vips(4) {
		if s.m.Owner(v) == "b" {
			bs = v
		}
	}
	if !bs.IsValid() {
		t.Fatal("b owns no VIP of the four")
	}
	s.claim(ms(2010), bs, "a:mac", "b:mac")
	s.ticks(ms(2010), ms(2200))
	s.claim(ms(2200), bs, "a:mac", "b:mac")
	if st := s.m.Stats(); st.Conflicts != 0 || st.ClaimsIgnored != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFenceEndsWhenOwnershipMoves(t *testing.T) {
	s := readyAlone(t)
	var bs netip.Addr
	for _, v := range vips(4) {
		if Owner([]string{"a", "b"}, v) == "b" {
			bs = v
		}
	}
	if !bs.IsValid() {
		t.Fatal("b would own none of the four VIPs")
	}
	win, _ := claimants(t, bs, "a:mac")
	s.claim(ms(310), bs, "a:mac", win)
	if out := s.claim(ms(420), bs, "a:mac", win); len(out.Fencing) != 1 {
		t.Fatalf("not fenced: %+v", out)
	}
	// b is heard again and owns the VIP by the rules: the fence is moot.
	out := s.recv(ms(430), hb("b", 1, 1, true))
	if !slices.Equal(out.Fencing, []FenceChange{{VIP: bs, Reason: "not owner"}}) || len(s.m.Fenced()) != 0 {
		t.Fatalf("fencing %+v, fenced %v", out.Fencing, s.m.Fenced())
	}
}

func TestClaimWinnerSymmetric(t *testing.T) {
	for _, v := range vips(64) {
		a, b := "02:00:00:00:00:01", "02:00:00:00:00:02"
		w1, w2 := ClaimWinner(v, a, b), ClaimWinner(v, b, a)
		if w1 != w2 || (w1 != a && w1 != b) {
			t.Fatalf("vip %v: winner %q from (a, b), %q from (b, a)", v, w1, w2)
		}
	}
}
