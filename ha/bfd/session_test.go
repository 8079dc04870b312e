package bfd

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

type fixedRand float64

func (f fixedRand) Float64() float64 { return float64(f) }

const (
	localD  = 7
	remoteD = 99
)

var fastCfg = Config{LocalDiscr: localD, DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond, DetectMult: 3}

// step applies ev and checks the invariants.
func step(t *testing.T, s *Session, ev any) []Action {
	t.Helper()
	prev := s.State()
	out, err := s.Handle(ev)
	if err != nil {
		t.Fatalf("Handle(%T %+v): %v", ev, ev, err)
	}
	if msg := checkInvariants(s, prev, ev, out); msg != "" {
		t.Fatalf("after %T %+v: %s", ev, ev, msg)
	}
	return out
}

func peerPkt(st State, your uint32) Packet {
	return Packet{Version: 1, State: st, DetectMult: 3, Length: 24, MyDisc: remoteD, YourDisc: your,
		DesiredMinTx: 100_000, RequiredMinRx: 100_000}
}

// sessionIn builds a session in the given state by the protocol's own path.
func sessionIn(t *testing.T, st State) *Session {
	t.Helper()
	cfg := fastCfg
	cfg.AdminDown = st == AdminDown
	s, out, err := New(cfg, fixedRand(0.5))
	if err != nil {
		t.Fatal(err)
	}
	if msg := checkInvariants(s, s.State(), nil, out); msg != "" {
		t.Fatal(msg)
	}
	switch st {
	case Init:
		step(t, s, Received{peerPkt(Down, 0)})
	case Up:
		step(t, s, Received{peerPkt(Init, localD)})
	}
	if s.State() != st {
		t.Fatalf("setup: state %s, want %s", s.State(), st)
	}
	return s
}

func stateChange(out []Action) *StateChanged {
	for _, a := range out {
		if c, ok := a.(StateChanged); ok {
			return &c
		}
	}
	return nil
}

// TestReceptionTable is RFC 5880 §6.8.6 for every local state x received
// state.
func TestReceptionTable(t *testing.T) {
	type want struct {
		state State
		diag  Diag
		moved bool
	}
	table := map[State]map[State]want{
		AdminDown: {AdminDown: {AdminDown, DiagAdminDown, false}, Down: {AdminDown, DiagAdminDown, false}, Init: {AdminDown, DiagAdminDown, false}, Up: {AdminDown, DiagAdminDown, false}},
		Down:      {AdminDown: {Down, DiagNone, false}, Down: {Init, DiagNone, true}, Init: {Up, DiagNone, true}, Up: {Down, DiagNone, false}},
		Init:      {AdminDown: {Down, DiagNeighborDown, true}, Down: {Init, DiagNone, false}, Init: {Up, DiagNone, true}, Up: {Up, DiagNone, true}},
		Up:        {AdminDown: {Down, DiagNeighborDown, true}, Down: {Down, DiagNeighborDown, true}, Init: {Up, DiagNone, false}, Up: {Up, DiagNone, false}},
	}
	for local, row := range table {
		for rx, w := range row {
			t.Run(local.String()+"/rx"+rx.String(), func(t *testing.T) {
				s := sessionIn(t, local)
				out := step(t, s, Received{peerPkt(rx, localD)})
				if s.State() != w.state || s.LocalDiag() != w.diag {
					t.Fatalf("state %s diag %s, want %s %s", s.State(), s.LocalDiag(), w.state, w.diag)
				}
				if c := stateChange(out); (c != nil) != w.moved {
					t.Fatalf("state change %+v, want moved=%v", c, w.moved)
				}
				if s.RemoteState() != rx || s.RemoteDiscr() != remoteD {
					t.Fatalf("remote state %s discr %d not learnt", s.RemoteState(), s.RemoteDiscr())
				}
			})
		}
	}
}

func TestDetectionTimerExpiry(t *testing.T) {
	for _, tc := range []struct {
		local, want State
		diag        Diag
	}{
		{AdminDown, AdminDown, DiagAdminDown},
		{Down, Down, DiagNone},
		{Init, Down, DiagDetectTimeExpired},
		{Up, Down, DiagDetectTimeExpired},
	} {
		t.Run(tc.local.String(), func(t *testing.T) {
			s := sessionIn(t, tc.local)
			// Every state has heard a packet except AdminDown/Down: give one.
			if tc.local == Down {
				step(t, s, Received{peerPkt(AdminDown, 0)})
			}
			if tc.local == AdminDown {
				step(t, s, Received{peerPkt(Down, 0)})
			}
			step(t, s, DetectTimerExpired{})
			if s.State() != tc.want || s.LocalDiag() != tc.diag {
				t.Fatalf("state %s diag %s, want %s %s", s.State(), s.LocalDiag(), tc.want, tc.diag)
			}
			if s.RemoteDiscr() != 0 {
				t.Fatalf("remote discriminator %d kept after the detection time", s.RemoteDiscr())
			}
		})
	}
}

func TestDetectTimeAndSlowStart(t *testing.T) {
	s := sessionIn(t, Down)
	out := step(t, s, Received{peerPkt(Down, 0)})
	var sent *Packet
	for _, a := range out {
		if p, ok := a.(Send); ok {
			sent = &p.Packet
		}
	}
	if sent == nil || sent.State != Init || dur(sent.DesiredMinTx) != time.Second {
		t.Fatalf("Init packet %+v: want state Init and the 1 s desired tx while not Up", sent)
	}
	// Detection time: remote mult 3 x max(our rx 100ms, remote tx 100ms).
	if s.DetectTime() != 300*time.Millisecond {
		t.Fatalf("detect time %v", s.DetectTime())
	}
	out = step(t, s, Received{peerPkt(Up, localD)})
	if s.State() != Up || !s.Polling() {
		t.Fatalf("state %s polling %v: going Up must poll the fast interval in", s.State(), s.Polling())
	}
	var poll *Packet
	for _, a := range out {
		if p, ok := a.(Send); ok && p.Packet.Poll {
			poll = &p.Packet
		}
	}
	if poll == nil || poll.DesiredMinTx != 100_000 {
		t.Fatalf("no Poll with the configured 100 ms: %+v", out)
	}
	fin := peerPkt(Up, localD)
	fin.Final = true
	step(t, s, Received{fin})
	if s.Polling() || s.TxInterval() != 100*time.Millisecond {
		t.Fatalf("after Final polling=%v tx %v", s.Polling(), s.TxInterval())
	}
}

func TestPollAnsweredWithFinal(t *testing.T) {
	s := sessionIn(t, Up)
	p := peerPkt(Up, localD)
	p.Poll = true
	out := step(t, s, Received{p})
	n := 0
	for _, a := range out {
		if sp, ok := a.(Send); ok && sp.Packet.Final && !sp.Packet.Poll {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("want exactly one Final, got %d in %+v", n, out)
	}
}

// TestPollSequenceTimers checks §6.8.3: a slower transmit interval and a
// shorter receive interval apply only once the Final arrives.
func TestPollSequenceTimers(t *testing.T) {
	s := sessionIn(t, Up)
	fin := peerPkt(Up, localD)
	fin.Final = true
	step(t, s, Received{fin}) // end the going-Up poll
	out := step(t, s, SetIntervals{DesiredMinTx: 500 * time.Millisecond, RequiredMinRx: 50 * time.Millisecond})
	if !s.Polling() {
		t.Fatal("no Poll Sequence for changed intervals")
	}
	var p *Packet
	for _, a := range out {
		if sp, ok := a.(Send); ok {
			p = &sp.Packet
		}
	}
	if p == nil || !p.Poll || p.DesiredMinTx != 500_000 || p.RequiredMinRx != 50_000 {
		t.Fatalf("poll packet %+v", p)
	}
	if s.TxInterval() != 100*time.Millisecond {
		t.Fatalf("tx interval %v changed before the Final", s.TxInterval())
	}
	if s.DetectTime() != 300*time.Millisecond {
		t.Fatalf("detect time %v changed before the Final", s.DetectTime())
	}
	// Periodic packets keep the Poll bit until the Final.
	out = step(t, s, TxTimerExpired{})
	if sp, ok := out[0].(Send); !ok || !sp.Packet.Poll {
		t.Fatalf("periodic packet during the poll: %+v", out)
	}
	step(t, s, Received{fin})
	if s.TxInterval() != 500*time.Millisecond || s.DetectTime() != 300*time.Millisecond {
		t.Fatalf("after Final tx %v detect %v", s.TxInterval(), s.DetectTime())
	}
	p2 := peerPkt(Up, localD)
	p2.DesiredMinTx = 10_000
	step(t, s, Received{p2})
	if s.DetectTime() != 150*time.Millisecond {
		t.Fatalf("detect time %v, want 3 x max(50ms, 10ms)", s.DetectTime())
	}
}

func TestJitter(t *testing.T) {
	for _, tc := range []struct {
		mult   uint8
		r      float64
		lo, hi time.Duration
	}{
		{3, 0, 75 * time.Millisecond, 75 * time.Millisecond},
		{3, 0.9999, 99 * time.Millisecond, 100 * time.Millisecond},
		{1, 0, 75 * time.Millisecond, 75 * time.Millisecond},
		{1, 0.9999, 89 * time.Millisecond, 90 * time.Millisecond},
	} {
		cfg := fastCfg
		cfg.DetectMult = tc.mult
		s, _, err := New(cfg, fixedRand(tc.r))
		if err != nil {
			t.Fatal(err)
		}
		step(t, s, Received{peerPkt(Init, localD)})
		fin := peerPkt(Up, localD)
		fin.Final = true
		step(t, s, Received{fin})
		out := step(t, s, TxTimerExpired{})
		a := out[len(out)-1].(ArmTx)
		if a.After < tc.lo || a.After > tc.hi {
			t.Errorf("mult %d rand %v: armed %v, want [%v, %v]", tc.mult, tc.r, a.After, tc.lo, tc.hi)
		}
	}
}

func TestAdminDownAndUp(t *testing.T) {
	s := sessionIn(t, Up)
	out := step(t, s, AdminDownEvent{})
	if s.State() != AdminDown || s.LocalDiag() != DiagAdminDown {
		t.Fatalf("state %s diag %s", s.State(), s.LocalDiag())
	}
	found := false
	for _, a := range out {
		if sp, ok := a.(Send); ok && sp.Packet.State == AdminDown && sp.Packet.Diag == DiagAdminDown {
			found = true
		}
	}
	if !found {
		t.Fatal("the peer was not told AdminDown")
	}
	step(t, s, AdminUp{})
	if s.State() != Down {
		t.Fatalf("after AdminUp: %s", s.State())
	}
}

func TestRejectsForeignDiscriminator(t *testing.T) {
	s := sessionIn(t, Up)
	if _, err := s.Handle(Received{peerPkt(Up, localD+1)}); err == nil {
		t.Fatal("packet for another session accepted")
	}
	if s.State() != Up {
		t.Fatal("state changed by a discarded packet")
	}
}

func TestNoTransmitWhenPeerAsksNone(t *testing.T) {
	s := sessionIn(t, Up)
	p := peerPkt(Up, localD)
	p.RequiredMinRx = 0
	out := step(t, s, Received{p})
	stopped := false
	for _, a := range out {
		if _, ok := a.(StopTx); ok {
			stopped = true
		}
	}
	if !stopped || s.TxInterval() != 0 {
		t.Fatalf("still transmitting to a peer with required min rx 0: %+v", out)
	}
	if out := step(t, s, TxTimerExpired{}); len(out) != 0 {
		t.Fatalf("stale tx timer sent %+v", out)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, c := range []Config{
		{DesiredMinTx: time.Second, RequiredMinRx: time.Second, DetectMult: 3},
		{LocalDiscr: 1, DesiredMinTx: time.Second, RequiredMinRx: time.Second},
		{LocalDiscr: 1, RequiredMinRx: time.Second, DetectMult: 3},
	} {
		if _, _, err := New(c, fixedRand(0)); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	if _, _, err := New(fastCfg, nil); err == nil {
		t.Error("New without a random source accepted")
	}
}

// TestTwoSessionsSimulated runs two sessions against each other on a
// virtual clock: they come Up, then one side stops hearing the other and
// goes Down within the detection time.
func TestTwoSessionsSimulated(t *testing.T) {
	sim := newSim(t, rand.New(rand.NewPCG(1, 2)))
	sim.run(5 * time.Second)
	if sim.s[0].State() != Up || sim.s[1].State() != Up {
		t.Fatalf("after 5s: %s / %s", sim.s[0].State(), sim.s[1].State())
	}
	if sim.s[0].TxInterval() != 100*time.Millisecond || sim.s[0].Polling() {
		t.Fatalf("fast interval not in force: %v polling %v", sim.s[0].TxInterval(), sim.s[0].Polling())
	}
	sim.cut = true
	cutAt := sim.now
	sim.run(2 * time.Second)
	down := sim.downAt[0]
	if sim.s[0].State() != Down || down.Sub(cutAt) > 300*time.Millisecond || down.Before(cutAt) {
		t.Fatalf("state %s, went down %v after the cut (detect time 300ms)", sim.s[0].State(), down.Sub(cutAt))
	}
	sim.cut = false
	sim.run(5 * time.Second)
	if sim.s[0].State() != Up || sim.s[1].State() != Up {
		t.Fatalf("no recovery: %s / %s", sim.s[0].State(), sim.s[1].State())
	}
}

var _ = errors.Is
