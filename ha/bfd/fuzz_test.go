package bfd

import (
	"testing"
	"time"
)

// FuzzParse: Parse never panics, and what it accepts re-encodes to the same
// fields and is accepted again.
func FuzzParse(f *testing.F) {
	f.Add(valid().Marshal())
	p := valid()
	p.State, p.YourDisc = Down, 0
	f.Add(p.Marshal())
	f.Add([]byte{0x20, 0x40, 3, 24})
	// Shaped like the first packet bird2 or frr send (Down, your discriminator 0, 1 s slow start);
	// the labs (scenarios/bgp) run real sessions against both.
	f.Add([]byte{0x20, 0x40, 0x05, 0x18, 0x4b, 0x1e, 0x6f, 0x3a, 0, 0, 0, 0, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x01, 0x86, 0xa0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		q, err := Parse(p.Marshal())
		if err != nil {
			t.Fatalf("re-encoded packet rejected: %v", err)
		}
		p.Length = HeaderLen
		if p != q {
			t.Fatalf("round trip\n%+v\n%+v", p, q)
		}
	})
}

// FuzzSession drives a session with events chosen by the input (packets
// built from the bytes, timers, admin changes, interval changes) and checks
// the invariants after every step.
func FuzzSession(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 1, 3, 0, 3, 2, 4, 5, 0, 6})
	f.Add([]byte{0, 1, 0, 2, 0, 3, 7, 0, 1, 2, 2, 0, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		s, out, err := New(fastCfg, fixedRand(0.3))
		if err != nil {
			t.Fatal(err)
		}
		if msg := checkInvariants(s, Down, nil, out); msg != "" {
			t.Fatal(msg)
		}
		for i := 0; i+1 < len(in); i += 2 {
			op, arg := in[i]%8, in[i+1]
			var ev any
			switch op {
			case 0, 1:
				p := Packet{Version: 1, State: State(arg & 3), DetectMult: 1 + arg>>5, Length: 24, MyDisc: remoteD,
					DesiredMinTx: uint32(arg) * 1000, RequiredMinRx: uint32(arg>>2) * 3000,
					Poll: arg&0x04 != 0, Final: arg&0x08 != 0 && arg&0x04 == 0, Demand: arg&0x10 != 0}
				if p.State == Init || p.State == Up || op == 1 {
					p.YourDisc = localD
				}
				if _, err := Parse(p.Marshal()); err != nil {
					continue
				}
				ev = Received{p}
			case 2:
				ev = TxTimerExpired{}
			case 3:
				ev = DetectTimerExpired{}
			case 4:
				ev = AdminDownEvent{}
			case 5:
				ev = AdminUp{}
			default:
				ev = SetIntervals{DesiredMinTx: time.Duration(1+int(arg)) * time.Millisecond, RequiredMinRx: time.Duration(1+int(arg>>1)) * time.Millisecond}
			}
			prev := s.State()
			out, err := s.Handle(ev)
			if err != nil {
				t.Fatalf("Handle(%+v): %v", ev, err)
			}
			if msg := checkInvariants(s, prev, ev, out); msg != "" {
				t.Fatalf("step %d %T %+v: %s", i/2, ev, ev, msg)
			}
		}
	})
}
