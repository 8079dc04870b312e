package bfd

import (
	"fmt"
	"strings"
	"time"
)

// checkInvariants states what must hold after every event, whatever
// arrived (table, fuzz and simulation tests call it after each step):
//   - the state is one of AdminDown, Down, Init, Up, and Init or Up only
//     with a known remote discriminator;
//   - a transition follows RFC 5880 §6.8.6/§6.8.16 edges only: Down->Init,
//     Down->Up, Init->Up, Init->Down, Up->Down, any->AdminDown,
//     AdminDown->Down;
//   - every packet sent is one the peer's Parse accepts: version 1, our
//     nonzero discriminator, the peer's discriminator (zero only while Down
//     or AdminDown), detect multiplier nonzero, no multipoint, no
//     authentication, never Poll and Final together, the session's state;
//   - while not Up the advertised desired transmit interval is at least one
//     second (§6.8.3); while Up it is the configured one;
//   - a Poll bit is sent only while a Poll Sequence runs, and a Final only
//     in answer to a received Poll;
//   - an armed transmit interval lies in [75%, 100%] of TxInterval (90%
//     with detect multiplier 1) (§6.8.7), and is never armed when
//     TxInterval is zero (the peer asked for no packets);
//   - an armed detection time equals DetectTime and is positive.
func checkInvariants(s *Session, prev State, in any, out []Action) string {
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	if s.state > Up {
		bad("state %d out of range", s.state)
	}
	if (s.state == Init || s.state == Up) && s.remoteDiscr == 0 {
		bad("state %s with remote discriminator 0", s.state)
	}
	legal := map[[2]State]bool{
		{Down, Init}: true, {Down, Up}: true, {Init, Up}: true, {Init, Down}: true, {Up, Down}: true,
		{Down, AdminDown}: true, {Init, AdminDown}: true, {Up, AdminDown}: true, {AdminDown, Down}: true,
	}
	cur := prev
	rcvPoll := false
	if r, ok := in.(Received); ok {
		rcvPoll = r.Packet.Poll
	}
	changedAfter := func(i int) bool {
		for _, b := range out[i+1:] {
			if _, ok := b.(StateChanged); ok {
				return true
			}
		}
		return false
	}
	for i, a := range out {
		switch a := a.(type) {
		case StateChanged:
			if a.From != cur || !legal[[2]State{a.From, a.To}] {
				bad("illegal transition %s->%s (state before %s)", a.From, a.To, cur)
			}
			cur = a.To
		case Send:
			p := a.Packet
			if _, err := Parse(p.Marshal()); err != nil {
				bad("sent a packet the peer would discard: %v (%+v)", err, p)
			}
			if p.MyDisc != s.localDiscr || p.State != cur || p.Auth || p.Multipoint || p.DetectMult == 0 {
				bad("sent packet fields wrong: %+v (state %s)", p, cur)
			}
			if p.YourDisc == 0 && p.State != Down && p.State != AdminDown {
				bad("sent state %s with your discriminator 0", p.State)
			}
			if p.State != Up && dur(p.DesiredMinTx) < SlowTxInterval {
				bad("sent desired min tx %dµs while %s (must be >= 1s)", p.DesiredMinTx, p.State)
			}
			if p.Final && !rcvPoll {
				bad("sent Final without a received Poll")
			}
			if p.Poll && !s.polling && !changedAfter(i) {
				bad("sent Poll without a Poll Sequence")
			}
		case ArmTx:
			iv := s.TxInterval()
			lo, hi := time.Duration(float64(iv)*0.75)-1, iv
			if s.detectMult == 1 {
				hi = time.Duration(float64(iv)*0.90) + 1
			}
			if iv == 0 || a.After < lo || a.After > hi {
				bad("tx timer %v outside [%v, %v] (interval %v)", a.After, lo, hi, iv)
			}
		case ArmDetect:
			if a.After <= 0 || a.After != s.DetectTime() {
				bad("detect timer %v, detect time %v", a.After, s.DetectTime())
			}
		}
	}
	if cur != s.state {
		bad("actions end in state %s, session is %s", cur, s.state)
	}
	if s.state == Up && !s.polling && (s.advTx != s.cfgTx || s.advRx != s.cfgRx) {
		bad("Up without poll but advertising %d/%d, configured %d/%d", s.advTx, s.advRx, s.cfgTx, s.cfgRx)
	}
	if s.state != Up && dur(s.advTx) < SlowTxInterval {
		bad("advertising %dµs while %s", s.advTx, s.state)
	}
	if s.txOn && s.TxInterval() == 0 {
		bad("transmit timer on while the peer asked for no packets")
	}
	return strings.Join(errs, "; ")
}
