package steer

import (
	"slices"
	"testing"
	"time"

	"github.com/free5gc/ngap/ngapType"
)

// An AMF association that fails during a takeover (here its dial: the AMF
// is unreachable for a moment) does not cost that AMF's adopted UEs. The
// gNB is told "ues-retained" by the other AMFs; the failed AMF's UEs wait
// for the redial with their uplinks held, no Error Indication, and once
// the AMF confirms them on the new association the held uplink and every
// later one reach it under the UE's AMF-UE-NGAP-ID. An AMF that does not
// come back by the gNB's adoption deadline (Config.SetupTimeout) has its
// UEs released toward the gNB (UE Context Release Command), which holds
// them: never dropped silently. Invariants are checked after every step
// (sim.run).
func TestTakeoverWaitsForAnAMFWhoseAssociationFailed(t *testing.T) {
	const n, late = 60, 1
	for _, tc := range []struct {
		name     string
		comeBack bool
	}{{"amf-comes-back", true}, {"amf-stays-away", false}} {
		t.Run(tc.name, func(t *testing.T) {
			a := newSim(t, 3, RoundRobin)
			a.addGNB(gnbA)
			a.addGNB(gnbB)
			where := register(t, a, n)
			owner := map[uint32]int{}
			for ran, g := range where {
				owner[ran] = a.owner(g, ran)
			}
			a.amfs[late].alive = false // lb2's dial to it fails
			b, moved := takeover(t, a, true, 0)
			for id, g := range moved {
				if !b.gnbs[g].retained {
					t.Fatalf("gNB %d: NG Setup Response does not say ues-retained", id)
				}
			}
			// RAN-UE-NGAP-IDs are unique across both gNBs here; the fake
			// AMF counts a message only on the UE's own association.
			msgs := func(ran uint32) int { return b.amfs[owner[ran]].msgsOf(ran) }
			before := map[uint32]int{}
			waiting := 0
			for ran, g := range where {
				if owner[ran] == late {
					waiting++
				}
				before[ran] = msgs(ran)
				b.uplinkNAS(moved[g], ran)
			}
			for ran := range where {
				if owner[ran] != late && msgs(ran) != before[ran]+1 {
					t.Fatalf("UE %d of AMF %d: uplink not delivered while AMF %d was away", ran, owner[ran], late)
				}
			}
			if waiting == 0 {
				t.Fatal("no UE on the failed AMF: the test proves nothing")
			}
			if got := b.m.heldN; got != waiting {
				t.Fatalf("%d uplinks held, want %d (one per waiting UE)", got, waiting)
			}
			if !tc.comeBack {
				b.now = b.now.Add(b.m.cfg.SetupTimeout)
				b.run(Tick{})
				released := 0
				for _, g := range moved {
					released += b.gnbs[g].inbox[ngapType.ProcedureCodeUEContextRelease]
				}
				if released != waiting {
					t.Errorf("gNBs got %d UE Context Release Commands, want %d (the failed AMF's UEs)", released, waiting)
				}
				if got, want := sum(b.m.UEs()), n-waiting; got != want {
					t.Errorf("proxy holds %d UEs, want %d", got, want)
				}
			} else {
				b.amfs[late].alive = true
				b.now = b.now.Add(b.m.cfg.RedialMin)
				b.run(Tick{})
				for ran, g := range where {
					if owner[ran] != late {
						continue
					}
					if got := msgs(ran); got != before[ran]+1 {
						t.Fatalf("UE %d: held uplink reached AMF %d %d times, want once (msgs %d -> %d)", ran, late, got-before[ran], before[ran], got)
					}
					b.uplinkNAS(moved[g], ran)
					if got := msgs(ran); got != before[ran]+2 {
						t.Fatalf("UE %d: later uplink did not reach AMF %d", ran, late)
					}
				}
				if got := sum(b.m.UEs()); got != n {
					t.Errorf("proxy holds %d UEs, want %d", got, n)
				}
			}
			for id, g := range moved {
				if e := b.gnbs[g].errInd; e != 0 {
					t.Errorf("gNB %d got %d Error Indications", id, e)
				}
			}
			if d := totalMisrouted(b); d != 0 {
				t.Errorf("%d messages misrouted", d)
			}
			if b.m.heldN != 0 || len(b.m.held) != 0 {
				t.Errorf("%d uplinks still held", b.m.heldN)
			}
		})
	}
}

// msgsOf is how many messages the AMF counted for the UE with RAN-UE-NGAP-ID
// ran (-1: none).
func (f *fakeAMF) msgsOf(ran uint32) int {
	for _, u := range f.ues {
		if u.ran == ran {
			return u.msgs
		}
	}
	return -1
}

// FuzzTakeover runs a takeover of 12 registered UEs (the byte's low bits:
// which of three AMFs are unreachable at that moment, never all) and then a
// script of uplinks, AMFs going unreachable and coming back, time passing
// and gNB losses, checking the invariants after every step (sim.run),
// held uplinks included. Once everything goes, nothing may be left.
//
// Script: opcode bytes, opcode%6: 0 an uplink NAS of UE (next byte); 1 AMF
// (next byte %3) unreachable, its associations lost, its UE contexts kept;
// 2 that AMF reachable again; 3 a second passes; 4 gNB A's association
// lost; 5 RedialMin passes.
func FuzzTakeover(f *testing.F) {
	f.Add(byte(2), []byte{0, 1, 0, 3, 3, 2, 1, 5, 0, 1, 0, 3})
	f.Add(byte(1), []byte{0, 5, 1, 1, 5, 2, 1, 5, 0, 7, 3, 3, 3, 3, 3, 3})
	f.Add(byte(4), []byte{0, 2, 4, 5, 2, 2, 5, 3, 3, 3, 3, 3})
	f.Add(byte(0), []byte{1, 0, 0, 9, 2, 0, 5, 0, 9})
	f.Fuzz(func(t *testing.T, dead byte, script []byte) {
		dead %= 7 // never all three
		a := newSim(t, 3, RoundRobin)
		a.addGNB(gnbA)
		a.addGNB(gnbB)
		where := register(t, a, 12)
		rans := make([]uint32, 0, len(where))
		for ran := range where {
			rans = append(rans, ran)
		}
		slices.Sort(rans)
		for i := range a.amfs {
			a.amfs[i].alive = dead&(1<<i) == 0
		}
		b, moved := takeover(t, a, true, 0)
		unreachable := func(i int) {
			b.amfs[i].alive = false
			for up, idx := range b.upAMF {
				if idx == i {
					delete(b.upAMF, up)
					b.queue = append(b.queue, AMFDown{Assoc: up})
				}
			}
			b.run()
		}
		for len(script) > 0 {
			op := script[0] % 6
			script = script[1:]
			arg := 0
			if len(script) > 0 {
				arg = int(script[0])
			}
			switch op {
			case 0:
				ran := rans[arg%len(rans)]
				g := moved[where[ran]]
				if fg := b.gnbs[g]; b.m.gnbs[g] != nil && fg.ues[ran] != nil && fg.ues[ran].ok {
					b.uplinkNAS(g, ran)
				}
			case 1:
				unreachable(arg % 3)
			case 2:
				b.amfs[arg%3].alive = true
			case 3:
				b.now = b.now.Add(time.Second)
				b.run(Tick{})
			case 4:
				if b.m.gnbs[moved[gnbA]] != nil {
					b.run(GNBDown{Assoc: moved[gnbA]})
				}
			case 5:
				b.now = b.now.Add(b.m.cfg.RedialMin)
				b.run(Tick{})
			}
		}
		for i := range b.amfs {
			b.kill(i)
		}
		for _, g := range moved {
			b.run(GNBDown{Assoc: g})
		}
		for i := 0; i < 40; i++ {
			b.now = b.now.Add(time.Second)
			b.run(Tick{})
		}
		if msg := checkEmpty(b.m); msg != "" {
			t.Fatal(msg)
		}
	})
}
