package bfd

import (
	"errors"
	"fmt"
	"time"
)

// SlowTxInterval is the least desired transmit interval advertised while a
// session is not Up (RFC 5880 §6.8.3: "not less than one second").
const SlowTxInterval = time.Second

// Config holds a session's local parameters.
type Config struct {
	// LocalDiscr is bfd.LocalDiscr: nonzero, unique among the sessions of
	// one system (the shell allocates it).
	LocalDiscr uint32
	// DesiredMinTx and RequiredMinRx are the configured intervals, used
	// once the session is Up (at least 1 µs; the API asks at least 10 ms).
	DesiredMinTx  time.Duration
	RequiredMinRx time.Duration
	DetectMult    uint8
	// AdminDown starts the session administratively down.
	AdminDown bool
}

func (c Config) validate() error {
	switch {
	case c.LocalDiscr == 0:
		return errors.New("bfd: LocalDiscr must be nonzero")
	case c.DetectMult == 0:
		return errors.New("bfd: DetectMult must be nonzero")
	case c.DesiredMinTx < time.Microsecond || c.RequiredMinRx < time.Microsecond:
		return errors.New("bfd: intervals must be at least 1µs")
	case c.DesiredMinTx > time.Duration(1<<32-1)*time.Microsecond || c.RequiredMinRx > time.Duration(1<<32-1)*time.Microsecond:
		return errors.New("bfd: intervals must fit 32 bits of microseconds")
	}
	return nil
}

// Random is the jitter source: Float64 returns a number in [0, 1).
type Random interface{ Float64() float64 }

// Events a Session handles.
type (
	// Received is a control packet that passed Parse, for this session.
	Received struct{ Packet Packet }
	// TxTimerExpired is the transmit timer of the last ArmTx firing.
	TxTimerExpired struct{}
	// DetectTimerExpired is the detection timer of the last ArmDetect firing.
	DetectTimerExpired struct{}
	// AdminUp and AdminDownEvent enable and disable the session (§6.8.16).
	AdminUp        struct{}
	AdminDownEvent struct{}
	// SetIntervals changes the configured intervals; while Up this runs a
	// Poll Sequence (§6.8.3).
	SetIntervals struct {
		DesiredMinTx, RequiredMinRx time.Duration
	}
)

// Actions a Session asks for. The shell performs them in order.
type (
	// Send transmits a control packet now.
	Send struct{ Packet Packet }
	// ArmTx (re)arms the transmit timer; StopTx stops it.
	ArmTx  struct{ After time.Duration }
	StopTx struct{}
	// ArmDetect (re)arms the detection timer; StopDetect stops it.
	ArmDetect  struct{ After time.Duration }
	StopDetect struct{}
	// StateChanged reports a transition of bfd.SessionState.
	StateChanged struct {
		From, To State
		Diag     Diag
	}
)

// Action is one of Send, ArmTx, StopTx, ArmDetect, StopDetect, StateChanged.
type Action any

// Session is one BFD session's state (RFC 5880 §6.8.1 variables). It does
// no I/O and reads no clock: the shell feeds it events and performs the
// actions it returns. Not safe for concurrent use.
type Session struct {
	rnd Random

	state       State
	remoteState State
	localDiscr  uint32
	remoteDiscr uint32
	localDiag   Diag
	detectMult  uint8

	// Configured intervals (µs), the ones the session uses once Up.
	cfgTx, cfgRx uint32
	// Advertised intervals (µs): what the packets carry. While a Poll
	// Sequence runs they already hold the new values; effTx/effRx are the
	// ones this side uses for its own timing until the Final arrives
	// (§6.8.3: an increased transmit interval and a reduced receive
	// interval take effect only once the peer has acknowledged them).
	advTx, advRx uint32
	effTx, effRx uint32

	remoteMinRx      uint32
	remoteDesiredTx  uint32
	remoteDetectMult uint8
	remoteDemand     bool

	polling bool
	// txOn is whether the transmit timer is armed (periodic transmission).
	txOn bool
	// detectOn is whether the detection timer is armed.
	detectOn bool
	// sentInterval is the last jittered transmit interval asked for
	// (invariant checks).
	sentInterval time.Duration
}

// New builds a session in state Down (AdminDown if cfg.AdminDown) and
// returns the actions that start it (the first packet, the transmit timer).
func New(cfg Config, rnd Random) (*Session, []Action, error) {
	if err := cfg.validate(); err != nil {
		return nil, nil, err
	}
	if rnd == nil {
		return nil, nil, errors.New("bfd: a Random source is required")
	}
	s := &Session{
		rnd:         rnd,
		state:       Down,
		remoteState: Down,
		localDiscr:  cfg.LocalDiscr,
		detectMult:  cfg.DetectMult,
		cfgTx:       micros(cfg.DesiredMinTx),
		cfgRx:       micros(cfg.RequiredMinRx),
		// §6.8.1: bfd.RemoteMinRxInterval starts at 1 µs.
		remoteMinRx: 1,
	}
	if cfg.AdminDown {
		s.state = AdminDown
		s.localDiag = DiagAdminDown
	}
	s.setAdvertised(false)
	var out []Action
	out = s.transmit(out, false)
	return s, out, nil
}

func micros(d time.Duration) uint32 {
	us := d / time.Microsecond
	if us < 1 {
		return 1
	}
	if us > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(us)
}

func dur(us uint32) time.Duration { return time.Duration(us) * time.Microsecond }

// setAdvertised sets the advertised intervals for the current state: the
// configured ones when Up, otherwise a transmit interval of at least one
// second. With poll set (Up and the values change) a Poll Sequence starts
// and the local effective values follow the §6.8.3 rules.
func (s *Session) setAdvertised(poll bool) {
	tx, rx := s.cfgTx, s.cfgRx
	if s.state != Up {
		tx = max(tx, micros(SlowTxInterval))
	}
	if !poll || s.state != Up {
		s.advTx, s.advRx, s.effTx, s.effRx = tx, rx, tx, rx
		s.polling = false
		return
	}
	if tx == s.advTx && rx == s.advRx {
		return
	}
	oldTx, oldRx := s.effTx, s.effRx
	s.advTx, s.advRx = tx, rx
	// A faster transmit rate and a longer receive interval are safe at
	// once; the other way waits for the Final.
	s.effTx = min(oldTx, tx)
	s.effRx = max(oldRx, rx)
	s.polling = true
}

// State reports bfd.SessionState.
func (s *Session) State() State { return s.state }

// LocalDiag reports bfd.LocalDiag.
func (s *Session) LocalDiag() Diag { return s.localDiag }

// RemoteState reports bfd.RemoteSessionState.
func (s *Session) RemoteState() State { return s.remoteState }

// LocalDiscr and RemoteDiscr report the discriminators.
func (s *Session) LocalDiscr() uint32  { return s.localDiscr }
func (s *Session) RemoteDiscr() uint32 { return s.remoteDiscr }

// Polling reports whether a Poll Sequence is in progress.
func (s *Session) Polling() bool { return s.polling }

// TxInterval is the transmit interval before jitter (§6.8.7): the larger of
// this side's desired transmit interval and the peer's required receive
// interval; zero means no periodic transmission.
func (s *Session) TxInterval() time.Duration {
	if s.remoteMinRx == 0 {
		return 0
	}
	// §6.8.7: no periodic packets while the peer is in Demand mode and
	// both sides are Up.
	if s.remoteDemand && s.state == Up && s.remoteState == Up {
		return 0
	}
	return dur(max(s.effTx, s.remoteMinRx))
}

// DetectTime is the asynchronous-mode detection time (§6.8.4): the peer's
// detect multiplier times the larger of this side's required receive
// interval and the peer's desired transmit interval; zero before anything
// was received.
func (s *Session) DetectTime() time.Duration {
	if s.remoteDetectMult == 0 {
		return 0
	}
	return time.Duration(s.remoteDetectMult) * dur(max(s.effRx, s.remoteDesiredTx))
}

// Handle applies one event and returns the actions to perform.
func (s *Session) Handle(ev any) ([]Action, error) {
	var out []Action
	switch e := ev.(type) {
	case Received:
		return s.receive(e.Packet, out)
	case TxTimerExpired:
		if !s.txOn {
			return out, nil // a stale timer the shell could not stop in time
		}
		return s.transmit(out, false), nil
	case DetectTimerExpired:
		if !s.detectOn {
			return out, nil
		}
		s.detectOn = false
		// §6.8.1: bfd.RemoteDiscr is zeroed when the detection time passes
		// without a valid packet.
		s.remoteDiscr = 0
		s.remoteState = Down
		s.remoteDetectMult = 0
		s.remoteDemand = false
		if s.state == Init || s.state == Up {
			out = s.setState(out, Down, DiagDetectTimeExpired)
		}
		return out, nil
	case AdminUp:
		if s.state != AdminDown {
			return out, nil
		}
		return s.setState(out, Down, DiagNone), nil
	case AdminDownEvent:
		if s.state == AdminDown {
			return out, nil
		}
		s.detectOn = false
		out = append(out, StopDetect{})
		return s.setState(out, AdminDown, DiagAdminDown), nil
	case SetIntervals:
		if e.DesiredMinTx < time.Microsecond || e.RequiredMinRx < time.Microsecond {
			return out, errors.New("bfd: intervals must be at least 1µs")
		}
		s.cfgTx, s.cfgRx = micros(e.DesiredMinTx), micros(e.RequiredMinRx)
		wasPolling := s.polling
		s.setAdvertised(true)
		if s.polling && !wasPolling {
			// Start the Poll Sequence at once instead of waiting a period.
			out = s.transmit(out, false)
		} else if !s.polling {
			out = s.rearmTx(out)
		}
		return out, nil
	}
	return out, fmt.Errorf("bfd: unknown event %T", ev)
}

// receive is RFC 5880 §6.8.6 after the checks Parse did.
func (s *Session) receive(p Packet, out []Action) ([]Action, error) {
	if p.YourDisc != 0 && p.YourDisc != s.localDiscr {
		return out, fmt.Errorf("bfd: your discriminator %d is not this session's %d", p.YourDisc, s.localDiscr)
	}
	if p.YourDisc == 0 && p.State != Down && p.State != AdminDown {
		return out, fmt.Errorf("%w (state %s)", ErrYourDisc, p.State)
	}
	if p.Auth {
		return out, ErrAuthNotEnabled
	}
	oldTx := s.TxInterval()
	s.remoteDiscr = p.MyDisc
	s.remoteState = p.State
	s.remoteDemand = p.Demand
	s.remoteMinRx = p.RequiredMinRx
	s.remoteDesiredTx = p.DesiredMinTx
	s.remoteDetectMult = p.DetectMult
	if p.Final && s.polling {
		s.polling = false
		s.effTx, s.effRx = s.advTx, s.advRx
	}
	// Every valid packet restarts the detection timer (armed last, with
	// the detection time of the state the packet leaves us in).
	s.detectOn = true
	if s.state == AdminDown {
		if s.TxInterval() != oldTx || s.txOn != (oldTx != 0) {
			out = s.rearmTx(out)
		}
		return append(out, ArmDetect{After: s.DetectTime()}), nil
	}
	prev := s.state
	switch {
	case p.State == AdminDown:
		if s.state != Down {
			out = s.setState(out, Down, DiagNeighborDown)
		}
	case s.state == Down && p.State == Down:
		out = s.setState(out, Init, s.localDiag)
	case s.state == Down && p.State == Init:
		out = s.setState(out, Up, s.localDiag)
	case s.state == Init && (p.State == Init || p.State == Up):
		out = s.setState(out, Up, s.localDiag)
	case s.state == Up && p.State == Down:
		out = s.setState(out, Down, DiagNeighborDown)
	}
	if p.Poll {
		// §6.8.7: answer a Poll with a Final as soon as practicable,
		// whatever the transmit timer says.
		out = append(out, Send{Packet: s.packet(false, true)})
	}
	if s.state == prev && (s.TxInterval() != oldTx || s.txOn != (oldTx != 0)) {
		out = s.rearmTx(out)
	}
	return append(out, ArmDetect{After: s.DetectTime()}), nil
}

// setState changes bfd.SessionState, sends a packet at once so the peer
// learns it without waiting a period, and rearms the transmit timer with
// the interval of the new state.
func (s *Session) setState(out []Action, to State, diag Diag) []Action {
	from := s.state
	s.state = to
	s.localDiag = diag
	if to == Down || to == AdminDown {
		s.remoteDemand = false
	}
	// Entering or leaving Up changes the advertised intervals; entering Up
	// with a faster configuration than the slow one starts a Poll Sequence.
	if to == Up {
		s.advTx = max(s.cfgTx, micros(SlowTxInterval))
		s.effTx = s.advTx
		s.advRx, s.effRx = s.cfgRx, s.cfgRx
		s.setAdvertised(true)
	} else {
		s.setAdvertised(false)
	}
	out = append(out, StateChanged{From: from, To: to, Diag: diag})
	return s.transmit(out, false)
}

// transmit sends a periodic packet (with the Poll bit while a Poll
// Sequence runs) and arms the transmit timer for the next one.
func (s *Session) transmit(out []Action, final bool) []Action {
	if s.TxInterval() == 0 {
		if s.txOn {
			s.txOn = false
			out = append(out, StopTx{})
		}
		return out
	}
	out = append(out, Send{Packet: s.packet(s.polling, final)})
	return s.armTx(out)
}

func (s *Session) rearmTx(out []Action) []Action {
	if s.TxInterval() == 0 {
		if s.txOn {
			s.txOn = false
			out = append(out, StopTx{})
		}
		return out
	}
	return s.armTx(out)
}

// armTx arms the transmit timer with the §6.8.7 jitter: 0-25% below the
// interval, 10-25% below it when the detect multiplier is 1.
func (s *Session) armTx(out []Action) []Action {
	iv := s.TxInterval()
	f := 0.75 + 0.25*s.rnd.Float64()
	if s.detectMult == 1 {
		f = 0.75 + 0.15*s.rnd.Float64()
	}
	if f < 0.75 || f > 1 {
		f = 0.75 // a broken random source must not break the bounds
	}
	s.sentInterval = time.Duration(float64(iv) * f)
	if s.sentInterval <= 0 {
		s.sentInterval = 1
	}
	s.txOn = true
	return append(out, ArmTx{After: s.sentInterval})
}

func (s *Session) packet(poll, final bool) Packet {
	return Packet{
		Version:       Version,
		Diag:          s.localDiag,
		State:         s.state,
		Poll:          poll && !final,
		Final:         final,
		DetectMult:    s.detectMult,
		Length:        HeaderLen,
		MyDisc:        s.localDiscr,
		YourDisc:      s.remoteDiscr,
		DesiredMinTx:  s.advTx,
		RequiredMinRx: s.advRx,
		// No Echo function: zero tells the peer not to send echoes.
		RequiredMinEchoRx: 0,
	}
}
