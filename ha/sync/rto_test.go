package sync

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// rtoDriver plays peer b against a real machine a over a fake clock:
// a's data messages are read off its output, b's acknowledgements are
// encoded and received, a's timers run when its Output.Wake comes.
type rtoDriver struct {
	t       *testing.T
	m       *Machine
	now     time.Time
	wake    time.Time
	stream  uint32
	last    uint64   // highest seq a sent
	resends int      // data messages a sent again
	again   []uint64 // their sequence numbers, in order
	keys    int
}

// newRTODriver brings b up with the default timeouts (200 ms .. 3.2 s):
// a opens its stream with the (empty) snapshot's Begin+End, now in
// flight, sent at t0.
func newRTODriver(t *testing.T) *rtoDriver {
	m, err := New(Config{Self: "a", Peers: []string{"b"}, KeepaliveInterval: -1, PeerTimeout: -1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := &rtoDriver{t: t, m: m, now: t0}
	d.take(m.Connected(t0, "b"))
	d.take(m.Receive(t0, "b", AppendHello(nil, Hello{Name: "b", Incarnation: 2, Heard: true})))
	if d.last != 1 {
		t.Fatalf("no snapshot message in flight after b came up (last seq %d)", d.last)
	}
	return d
}

func (d *rtoDriver) take(out Output) {
	d.t.Helper()
	for _, s := range out.Sends {
		msg, err := Parse(s.Data)
		if err != nil {
			d.t.Fatal(err)
		}
		if msg.Data == nil {
			continue
		}
		if msg.Data.Seq <= d.last {
			d.resends++
			d.again = append(d.again, msg.Data.Seq)
			continue
		}
		d.last, d.stream = msg.Data.Seq, msg.Data.Stream
	}
	d.wake = out.Wake
}

// send queues a new record and flushes it: one more message in flight.
func (d *rtoDriver) send() {
	d.keys++
	out, err := d.m.Put(d.now, Record{Kind: 1, Key: []byte(fmt.Sprint("k", d.keys)), Value: []byte("v")})
	if err != nil {
		d.t.Fatal(err)
	}
	d.take(out)
	d.take(d.m.Flush(d.now))
}

// wait moves the clock by dt, running a's timers as they come due.
func (d *rtoDriver) wait(dt time.Duration) {
	end := d.now.Add(dt)
	for !d.wake.IsZero() && !d.wake.After(end) {
		d.now = d.wake
		d.take(d.m.Tick(d.now))
	}
	d.now = end
}

// ack acknowledges everything a sent.
func (d *rtoDriver) ack() {
	d.take(d.m.Receive(d.now, "b", AppendAck(nil, Ack{Incarnation: d.m.Incarnation(), Stream: d.stream, Seq: d.last})))
}

func (d *rtoDriver) peer() PeerStats { return d.m.Stats().Peers[0] }

// Steps of a case.
type rtoStep func(*rtoDriver)

// ackAfter: b acknowledges what is in flight dt later.
func ackAfter(dt time.Duration) rtoStep {
	return func(d *rtoDriver) { d.wait(dt); d.ack() }
}

// sendAcked: a sends one message, b acknowledges it dt later.
func sendAcked(dt time.Duration) rtoStep {
	return func(d *rtoDriver) { d.send(); d.wait(dt); d.ack() }
}

// silent: b acknowledges nothing for dt.
func silent(dt time.Duration) rtoStep { return func(d *rtoDriver) { d.wait(dt) } }

func repeat(n int, s rtoStep) rtoStep {
	return func(d *rtoDriver) {
		for range n {
			s(d)
		}
	}
}

// TestRetransmitTimeoutFollowsTheAckDelay is the retransmission timer's
// specification (RFC 6298 with Karn's rule, bounded 200 ms .. 3.2 s):
// SRTT and RTTVAR from the delays of b's acknowledgements, doubled at each
// expiry, no delay taken from a message sent twice. RTO = SRTT + max(100 ms, 4 RTTVAR): the margin is half the floor.
// The first message in flight in every case is the snapshot's
// Begin+End, sent when b came up.
func TestRetransmitTimeoutFollowsTheAckDelay(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		name    string
		steps   []rtoStep
		rto     time.Duration
		srtt    time.Duration // zero: nothing measured
		resends int
	}{
		{name: "before any ack the timeout is the floor", rto: 200 * ms},
		{name: "first sample: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR",
			steps: []rtoStep{ackAfter(100 * ms)}, rto: 300 * ms, srtt: 100 * ms},
		{name: "steady state: RTTVAR decays, the timeout settles half the floor above the delay",
			// 500 ms acks: the timer backs off past them first (the first
			// two messages are resent at 200 and 400 ms and measure
			// nothing), then 18 samples: RTTVAR 250 ms * (3/4)^17, 4
			// RTTVAR 7.5 ms, under the 100 ms margin.
			steps: []rtoStep{ackAfter(500 * ms), repeat(19, sendAcked(500*ms))}, rto: 600 * ms, srtt: 500 * ms, resends: 2},
		{name: "a late ack within the timeout raises it at once (RTTVAR takes a quarter of the surprise)",
			steps: []rtoStep{ackAfter(100 * ms), sendAcked(290 * ms)}, rto: 463*ms + 750*time.Microsecond, srtt: 123*ms + 750*time.Microsecond},
		{name: "a peer slower than the floor costs one resend, not one per message",
			// 250 ms acks: the first message times out at 200 ms and is
			// resent (and measures nothing); the second, under the
			// doubled timeout, measures 250 ms; 20 samples later 4 RTTVAR
			// is under the 100 ms margin.
			steps: []rtoStep{ackAfter(250 * ms), repeat(20, sendAcked(250*ms))}, rto: 350 * ms, srtt: 250 * ms, resends: 1},
		{name: "Karn: the ack of a resent message measures nothing, the backoff stays",
			// The timer fires 300 ms after the send, doubles to 600 ms;
			// the ack 700 ms after the first send may be of either copy.
			steps: []rtoStep{ackAfter(100 * ms), sendAcked(700 * ms)}, rto: 600 * ms, srtt: 100 * ms, resends: 1},
		{name: "after the backoff a new sample sets the timeout from the estimate again",
			steps: []rtoStep{ackAfter(100 * ms), sendAcked(700 * ms), sendAcked(100 * ms)}, rto: 250 * ms, srtt: 100 * ms, resends: 1},
		{name: "backoff: each expiry doubles the timeout (200, 400, 800 ms expire by 1.4 s)",
			steps: []rtoStep{silent(1400 * ms)}, rto: 1600 * ms, resends: 3},
		{name: "backoff stops at 3.2 s",
			steps: []rtoStep{silent(9400 * ms)}, rto: 3200 * ms, resends: 6},
		{name: "clamped at 200 ms however fast the acks",
			steps: []rtoStep{ackAfter(ms), repeat(10, sendAcked(ms))}, rto: 200 * ms, srtt: ms},
		{name: "clamped at 3.2 s however late the acks (each within the timeout before it)",
			steps: []rtoStep{ackAfter(150 * ms), sendAcked(440 * ms), sendAcked(620 * ms), sendAcked(time.Second), sendAcked(1650 * ms), sendAcked(2800 * ms)},
			rto:   3200 * ms, srtt: 787 * ms, resends: 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newRTODriver(t)
			for _, s := range c.steps {
				s(d)
			}
			p := d.peer()
			if !near(p.RTO, c.rto) || !near(p.SRTT, c.srtt) || d.resends != c.resends {
				t.Fatalf("RTO %v SRTT %v (RTTVAR %v) after %d resends, want RTO %v SRTT %v after %d resends",
					p.RTO, p.SRTT, p.RTTVar, d.resends, c.rto, c.srtt, c.resends)
			}
		})
	}
}

// A timeout sends only the newest message in flight again, a probe (RFC
// 8985's tail loss probe): a slow peer gets one duplicate per expiry, not
// the window. A loss the probe reveals (the peer Nacks: it lacks a message
// before the probe) is repaired by resending the window (go-back-N).
func TestTimeoutProbesWithTheNewestMessage(t *testing.T) {
	d := newRTODriver(t)
	for range 4 {
		d.send() // seq 2..5, with the snapshot's seq 1: five in flight
	}
	if d.last != 5 {
		t.Fatalf("last seq %d in flight, want 5", d.last)
	}
	d.wait(250 * time.Millisecond) // past the 200 ms floor: one expiry
	if !slices.Equal(d.again, []uint64{5}) {
		t.Fatalf("a timeout with seqs 1..5 in flight resent %v, want [5] (the newest only)", d.again)
	}
	if st := d.m.Stats(); st.Timeouts != 1 || st.ResentMessages != 1 || st.ResentRecords != 1 {
		t.Fatalf("timeouts %d, resent messages %d records %d; want 1, 1, 1", st.Timeouts, st.ResentMessages, st.ResentRecords)
	}
	// b got 1 and 2 only: the probe (5) is out of order there, and it
	// says so. The window from 3 goes again, the probe's answer.
	d.again = nil
	d.take(d.m.Receive(d.now, "b", AppendAck(nil, Ack{Incarnation: d.m.Incarnation(), Stream: d.stream, Seq: 2, Nack: true})))
	if !slices.Equal(d.again, []uint64{3, 4, 5}) {
		t.Fatalf("a Nack after seq 2 resent %v, want [3 4 5]", d.again)
	}
	// Karn: the acknowledgement of a probed window measures nothing.
	d.ack()
	if p := d.peer(); p.SRTT != 0 {
		t.Fatalf("SRTT %v from the acknowledgement of a probed window, want none", p.SRTT)
	}
}

// near: within a millisecond (the figures above are rounded).
func near(a, b time.Duration) bool { return max(a-b, b-a) < time.Millisecond }
