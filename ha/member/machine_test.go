package member

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func vipN(i int) netip.Addr {
	if i%2 == 1 {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})
	}
	return netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
}

func vips(n int) []netip.Addr {
	var r []netip.Addr
	for i := 1; i <= n; i++ {
		r = append(r, vipN(i))
	}
	return r
}

// stepper wraps a machine and checks the invariants after every step.
type stepper struct {
	t *testing.T
	m *Machine
}

func (s stepper) do(now time.Time, f func() Output) Output {
	s.t.Helper()
	before := snap(s.m)
	out := f()
	if msg := checkStep(s.m, before, now, out); msg != "" {
		s.t.Fatalf("at %v: invariant: %s", now.Sub(t0), msg)
	}
	return out
}

func (s stepper) tick(at time.Duration) Output {
	return s.do(t0.Add(at), func() Output { return s.m.Tick(t0.Add(at)) })
}

func (s stepper) recv(at time.Duration, h Heartbeat) Output {
	return s.do(t0.Add(at), func() Output { return s.m.Receive(t0.Add(at), h) })
}

// atWakes steps the machine at every wake-up it asks for, from out's, up
// to until, as a shell running on time does; it returns the last output.
func (s stepper) atWakes(out Output, until time.Duration) Output {
	s.t.Helper()
	for !out.Wake.After(t0.Add(until)) {
		out = s.tick(out.Wake.Sub(t0))
	}
	return out
}

func newStepper(t *testing.T, self string, members ...string) stepper {
	t.Helper()
	m, err := New(Config{Self: self, Members: members}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return stepper{t, m}
}

func hb(name string, inc, seq uint64, ready bool) Heartbeat {
	return Heartbeat{Version: 1, Name: name, Incarnation: inc, Seq: seq, Ready: ready, IntervalMs: 100}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, c := range []Config{
		{Self: "a", Members: []string{"b"}},
		{Self: "a", Members: []string{"a", "a"}},
		{Self: "", Members: []string{""}},
		{Self: "a", Members: []string{"a"}, Interval: time.Microsecond},
		{Self: "a", Members: []string{"a"}, DetectMultiplier: 256},
	} {
		if _, err := New(c, 1); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func TestWarmUpThenOwnAlone(t *testing.T) {
	s := newStepper(t, "a", "a", "b")
	s.do(t0, func() Output { return s.m.SetVIPs(t0, vips(8)) })
	out := s.do(t0, func() Output { return s.m.Start(t0) })
	if out.Heartbeat == nil || s.m.Ready() || len(s.m.Owned()) != 0 {
		t.Fatalf("start: heartbeat %v ready %v owned %v", out.Heartbeat != nil, s.m.Ready(), s.m.Owned())
	}
	if h, _ := Unmarshal(out.Heartbeat); h.Ready {
		t.Fatal("first heartbeat says ready during warm-up")
	}
	for at := 100; at < 300; at += 100 {
		s.tick(ms(at))
		if len(s.m.Owned()) != 0 {
			t.Fatalf("owns %v at %dms, during warm-up", s.m.Owned(), at)
		}
	}
	out = s.tick(ms(300))
	if !s.m.Ready() || len(s.m.Owned()) != 8 {
		t.Fatalf("after warm-up with b silent: ready %v owned %d", s.m.Ready(), len(s.m.Owned()))
	}
	if h, _ := Unmarshal(out.Heartbeat); !h.Ready {
		t.Fatal("readiness not announced at once")
	}
}

func TestWarmUpEndsWhenAllHeard(t *testing.T) {
	s := newStepper(t, "a", "a", "b", "c")
	s.do(t0, func() Output { return s.m.SetVIPs(t0, vips(16)) })
	s.do(t0, func() Output { return s.m.Start(t0) })
	s.recv(ms(10), hb("b", 5, 1, true))
	if s.m.Ready() {
		t.Fatal("ready before hearing c")
	}
	s.recv(ms(20), hb("c", 6, 1, true))
	if !s.m.Ready() {
		t.Fatal("not ready after hearing every member")
	}
	want := 0
	for _, v := range vips(16) {
		if pickOwner([]string{"a", "b", "c"}, v) == "a" {
			want++
		}
	}
	if len(s.m.Owned()) != want {
		t.Fatalf("owned %d want %d", len(s.m.Owned()), want)
	}
}

func TestPeerTimeoutAndReturn(t *testing.T) {
	s := newStepper(t, "a", "a", "b")
	s.do(t0, func() Output { return s.m.SetVIPs(t0, vips(16)) })
	s.do(t0, func() Output { return s.m.Start(t0) })
	s.recv(ms(1), hb("b", 5, 1, true))
	bOwns := len(vips(16)) - len(s.m.Owned())
	if bOwns == 0 {
		t.Fatal("b owns nothing of 16 VIPs: hash spread broken")
	}
	out := s.recv(ms(100), hb("b", 5, 2, true))
	// Stepped at every wake-up it asks for (a step after it would be a
	// machine running late, which does not count against b).
	s.atWakes(out, ms(399))
	if len(s.m.Owned()) == 16 {
		t.Fatal("b declared dead before 3 intervals")
	}
	out = s.tick(ms(400))
	if len(s.m.Owned()) != 16 {
		t.Fatalf("b not dead after 3 intervals: owned %d", len(s.m.Owned()))
	}
	if len(out.Liveness) != 1 || out.Liveness[0] != (LivenessChange{Member: "b", Reason: "timeout"}) {
		t.Fatalf("liveness %+v", out.Liveness)
	}
	// A replayed old heartbeat does not revive b; a new one does.
	s.recv(ms(450), hb("b", 5, 2, true))
	if st := s.m.Stats(); st.Stale != 1 || len(s.m.Owned()) != 16 {
		t.Fatalf("replay: stats %+v owned %d", st, len(s.m.Owned()))
	}
	s.recv(ms(460), hb("b", 5, 3, true))
	if len(s.m.Owned()) != 16-bOwns {
		t.Fatalf("b back: owned %d want %d", len(s.m.Owned()), 16-bOwns)
	}
}

func TestPeerRestartNoticed(t *testing.T) {
	s := newStepper(t, "a", "a", "b")
	s.do(t0, func() Output { return s.m.SetVIPs(t0, vips(16)) })
	s.do(t0, func() Output { return s.m.Start(t0) })
	s.recv(ms(1), hb("b", 5, 100, true))
	mine := len(s.m.Owned())
	// b restarts within the detection time: new incarnation, sequence from 1,
	// not ready. a must take b's VIPs until b is ready again, not wait for a
	// timeout that never comes.
	out := s.recv(ms(50), hb("b", 6, 1, false))
	if len(out.Liveness) != 1 || out.Liveness[0].Reason != "restarted" || len(s.m.Owned()) != 16 {
		t.Fatalf("restart: liveness %+v owned %d", out.Liveness, len(s.m.Owned()))
	}
	s.recv(ms(60), hb("b", 5, 101, true)) // late packet of the old incarnation
	if s.m.Stats().Stale != 1 || len(s.m.Owned()) != 16 {
		t.Fatalf("old incarnation accepted: %+v", s.m.Stats())
	}
	s.recv(ms(150), hb("b", 6, 2, true))
	if len(s.m.Owned()) != mine {
		t.Fatalf("b ready again: owned %d want %d", len(s.m.Owned()), mine)
	}
}

// TestStallKeepsOwnVIPsAndPeers: a machine stepped long after the wake-up
// it asked for (a frozen or starved process) did not hear anybody meanwhile:
// b's heartbeats of that time may still be unread. It keeps its own VIPs
// and does not declare b dead for the time it did not run (claiming b's
// VIPs from that stale view would move them); it sends a heartbeat at once
// and announces its VIPs again, which b may have taken over while a was
// silent. b is still judged by the time a does run: not heard for a
// detection time after a runs again, b is dead.
func TestStallKeepsOwnVIPsAndPeers(t *testing.T) {
	s := newStepper(t, "a", "a", "b")
	s.do(t0, func() Output { return s.m.SetVIPs(t0, vips(16)) })
	s.do(t0, func() Output { return s.m.Start(t0) })
	s.recv(ms(1), hb("b", 5, 1, true))
	s.tick(ms(100))
	mine := s.m.Owned()
	if len(mine) == 0 || len(mine) == 16 {
		t.Fatalf("a owns %d of 16 with b alive", len(mine))
	}
	// Frozen for 2 s: b's heartbeats wait unread (or were lost).
	out := s.tick(ms(2100))
	if !s.m.Ready() || !slices.Equal(s.m.Owned(), mine) || len(out.Ownership) != 0 {
		t.Fatalf("after a 2 s stall: ready %v owned %v (want %v), ownership changes %+v", s.m.Ready(), s.m.Owned(), mine, out.Ownership)
	}
	if out.Heartbeat == nil || !slices.Equal(out.Announce, mine) {
		t.Fatalf("on waking: heartbeat %v, announce %v, want a heartbeat and %v", out.Heartbeat != nil, out.Announce, mine)
	}
	if len(out.Liveness) != 0 {
		t.Fatalf("liveness changed by a's own stall: %+v", out.Liveness)
	}
	// b's queued heartbeat: nothing changes.
	if out := s.recv(ms(2101), hb("b", 5, 21, true)); len(out.Ownership) != 0 || len(out.Liveness) != 0 {
		t.Fatalf("b's queued heartbeat changed %+v %+v", out.Ownership, out.Liveness)
	}
	// A second stall, and b is silent after it: a ran on time from b's
	// last heartbeat to its next wake-up, then not for 1.8 s. b is dead
	// once a ran a detection time in all without hearing it, not at once.
	out = s.atWakes(out, ms(2200))
	ranBefore := out.Wake.Sub(t0.Add(ms(2101)))
	if out := s.tick(ms(4000)); len(out.Liveness) != 0 || len(s.m.Owned()) != len(mine) {
		t.Fatalf("b declared dead by a's own stall: %+v, a owns %d", out.Liveness, len(s.m.Owned()))
	}
	deadAt := ms(4000) + ms(300) - ranBefore
	out = s.atWakes(Output{Wake: t0.Add(ms(4000))}, deadAt-ms(1))
	if len(s.m.Owned()) != len(mine) {
		t.Fatalf("b declared dead before a ran 300 ms without hearing it (%v before the stall)", ranBefore)
	}
	out = s.tick(deadAt)
	if len(out.Liveness) != 1 || out.Liveness[0] != (LivenessChange{Member: "b", Reason: "timeout"}) || len(s.m.Owned()) != 16 {
		t.Fatalf("b silent for 300 ms of a's running: liveness %+v, a owns %d", out.Liveness, len(s.m.Owned()))
	}
}

func TestRewarm(t *testing.T) {
	s := newStepper(t, "a", "a", "b")
	s.do(t0, func() Output { return s.m.SetVIPs(t0, vips(16)) })
	s.do(t0, func() Output { return s.m.Start(t0) })
	s.recv(ms(1), hb("b", 5, 1, true))
	mine := len(s.m.Owned())
	s.do(t0.Add(ms(50)), func() Output { return s.m.Rewarm(t0.Add(ms(50))) })
	if s.m.Ready() || len(s.m.Owned()) != 0 {
		t.Fatalf("after Rewarm: ready %v owned %d", s.m.Ready(), len(s.m.Owned()))
	}
	s.recv(ms(60), hb("b", 5, 2, true))
	if !s.m.Ready() || len(s.m.Owned()) != mine {
		t.Fatalf("after hearing b: ready %v owned %d want %d", s.m.Ready(), len(s.m.Owned()), mine)
	}
}

func TestUnknownAndSelfIgnored(t *testing.T) {
	s := newStepper(t, "a", "a", "b")
	s.do(t0, func() Output { return s.m.Start(t0) })
	s.recv(ms(1), hb("zz", 1, 1, true))
	s.recv(ms(2), hb("a", 1, 1, true))
	s.do(t0.Add(ms(3)), func() Output { return s.m.ReceivePacket(t0.Add(ms(3)), []byte("junk")) })
	if st := s.m.Stats(); st != (Stats{Malformed: 1, UnknownMember: 1, FromSelf: 1}) {
		t.Fatalf("stats %+v", st)
	}
}

func TestRendezvousStable(t *testing.T) {
	all := []string{"n1", "n2", "n3", "n4", "n5"}
	moved := 0
	for i := 0; i < 1000; i++ {
		v := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1})
		before := pickOwner(all, v)
		after := pickOwner(all[1:], v)
		if before != "n1" && before != after {
			t.Fatalf("%v moved %s -> %s when n1 left", v, before, after)
		}
		if before == "n1" {
			moved++
		}
	}
	// 1000 VIPs over 5 members: n1 should hold about 200.
	if moved < 120 || moved > 280 {
		t.Fatalf("n1 held %d of 1000 VIPs, want about 200", moved)
	}
}

// FuzzMachine drives two machines with the same random steps: they must
// give the same outputs (determinism) and the invariants must hold after
// every step.
func FuzzMachine(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add([]byte{1, 1, 1, 9, 9, 9, 200, 3, 3, 3, 250, 250, 7})
	f.Add([]byte{5, 17, 33, 2, 0, 255, 128, 64, 4, 4, 4, 4})
	// Warm up alone, then claims by x and y on VIPs 1-3 spaced to confirm.
	f.Add([]byte{0, 200, 0, 200, 6, 0x48, 6, 0x68, 6, 0x49, 6, 0x69, 6, 0x52, 6, 0x72, 6, 0x72, 0, 100, 0, 100, 0, 100})
	f.Fuzz(func(t *testing.T, ops []byte) {
		members := []string{"a", "b", "c"}
		m1, _ := New(Config{Self: "a", Members: members}, 1)
		m2, _ := New(Config{Self: "a", Members: members}, 1)
		now := t0
		step := func(f func(*Machine) Output) {
			before := snap(m1)
			o1, o2 := f(m1), f(m2)
			if !reflect.DeepEqual(o1, o2) {
				t.Fatalf("not deterministic:\n%+v\n%+v", o1, o2)
			}
			if msg := checkStep(m1, before, now, o1); msg != "" {
				t.Fatalf("invariant: %s", msg)
			}
		}
		step(func(m *Machine) Output { return m.SetVIPs(now, vips(6)) })
		step(func(m *Machine) Output { return m.Start(now) })
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i], ops[i+1]
			switch op % 7 {
			case 0, 1: // time passes (up to ~500 ms, sometimes a long freeze)
				d := ms(int(arg) * 2)
				if arg > 250 {
					d = ms(int(arg) * 20)
				}
				now = now.Add(d)
				step(func(m *Machine) Output { return m.Tick(now) })
			case 2, 3: // a heartbeat from b or c
				name := members[1+int(arg&1)]
				inc := uint64(1 + (arg>>1)&1)
				seq := uint64(arg >> 2)
				ready := arg&0x80 != 0
				now = now.Add(ms(1))
				step(func(m *Machine) Output { return m.Receive(now, hb(name, inc, seq, ready)) })
			case 4: // garbage or a truncated heartbeat
				b, _ := hb("b", 1, uint64(arg), true).Marshal(nil)
				b = b[:int(arg)%(len(b)+1)]
				step(func(m *Machine) Output { return m.ReceivePacket(now, b) })
			case 5: // the VIP set changes
				var vs []netip.Addr
				for j := 0; j < 8; j++ {
					if arg&(1<<j) != 0 {
						vs = append(vs, vipN(j+1))
					}
				}
				step(func(m *Machine) Output { return m.SetVIPs(now, vs) })
			case 6: // a claim seen on the segment (fencing), maybe our own
				vip := vipN(1 + int(arg&7))
				theirs := []string{"me", "x", "y", "z"}[(arg>>3)&3]
				now = now.Add(ms(int(arg>>5) * 40))
				step(func(m *Machine) Output { return m.Claim(now, vip, "me", theirs) })
			}
		}
		_ = fmt.Sprint
	})
}
