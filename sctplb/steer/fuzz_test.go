package steer

import (
	"time"

	"testing"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// FuzzMachine drives a set-up proxy (two gNBs, three AMFs, registered UEs)
// with a script read from the fuzz input: PDUs from either side of either
// gNB, association losses, time passing. The simulation checks the
// invariants after every Step (checkInvariants) and every emitted PDU
// decodes; once every gNB and AMF is gone, nothing may be left.
//
// Script: repeated records of one opcode byte then, for messages, a length
// byte and that many PDU bytes. Opcode%8: 0-3 PDU from gNB A/B or from the
// UE's AMF toward gNB A/B; 4 gNB down; 5 AMF down; 6 a second passes; 7 a
// new Initial UE Message.
func FuzzMachine(f *testing.F) {
	seed := newSim(f, 2, RoundRobin)
	pdus := [][]byte{
		seed.must(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: 1, Location: loc})),
		seed.must(ngapl.UplinkNASTransport(1, 1, nil, loc)),
		seed.must(ngapl.UEContextReleaseComplete(1, 1)),
		seed.must(ngapl.NGReset(ngapl.Cause(1, 0), []ngapl.ConnItem{{HasRANUEID: true, RANUEID: 1}})),
		seed.must(ngapl.NGReset(ngapl.Cause(1, 0), nil)),
		seed.must(ngapl.DownlinkNASTransport(1, 1, nil)),
		seed.must(ngapl.Build(ngapl.Initiating, ngapType.ProcedureCodeHandoverResourceAllocation, ngapl.Reject,
			ie(ngapType.ProtocolIEIDAMFUENGAPID, &ngapType.AMFUENGAPID{Value: 1}))),
		seed.must(ngapl.Build(ngapl.Successful, ngapType.ProcedureCodeHandoverResourceAllocation, ngapl.Reject,
			ie(ngapType.ProtocolIEIDAMFUENGAPID, &ngapType.AMFUENGAPID{Value: 1}),
			ie(ngapType.ProtocolIEIDRANUENGAPID, &ngapType.RANUENGAPID{Value: 1}))),
		seed.must(ngapl.PathSwitchRequest(5, 1, loc)),
		seed.must(ngapl.RerouteNASRequest(1, nil, seed.must(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: 1, Location: loc})), amfSet)),
		seed.must(ngapl.OverloadStart(40)),
		seed.must(ngapl.UEContextReleaseCommand(1, nil, ngapl.Cause(1, 0))),
		seed.must(ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: plmn, GNBID: 1, GNBIDBits: 22, TACs: []uint32{1}, Slices: []ngapl.SNSSAI{{SST: 1}}})),
		seed.must(ngapl.WithoutIE(seed.must(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: 0, Location: loc})), ngapType.ProtocolIEIDRANUENGAPID)),
		seed.must(ngapl.AsType(seed.must(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: 0, Location: loc})), ngapl.Successful)),
	}
	for i, b := range pdus {
		for _, op := range []byte{0, 2} {
			f.Add(append([]byte{op, byte(len(b))}, b...))
		}
		// Two messages then losses: exercise the drain paths.
		next := pdus[(i+1)%len(pdus)]
		script := append([]byte{0, byte(len(b))}, b...)
		script = append(script, 2, byte(len(next)))
		script = append(script, next...)
		f.Add(append(script, 5, 4, 6, 6, 6, 6, 6, 6))
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		s := newSim(t, 3, RoundRobin)
		s.addGNB(gnbA)
		s.addGNB(gnbB)
		for ran := uint32(0); ran < 2; ran++ {
			s.initialUE(gnbA, ran, nil)
			s.initialUE(gnbB, ran, nil)
		}
		ran := uint32(100)
		for len(script) > 0 {
			op := script[0] % 8
			script = script[1:]
			g := gnbA
			if op%2 == 1 {
				g = gnbB
			}
			switch op {
			case 0, 1, 2, 3:
				if len(script) == 0 {
					return
				}
				n := min(int(script[0]), len(script)-1)
				b := script[1 : 1+n]
				script = script[1+n:]
				if _, ok := s.m.gnbs[g]; !ok {
					continue
				}
				if op < 2 {
					s.run(GNBMessage{Assoc: g, Stream: 1, Data: b})
				} else if up := s.m.gnbs[g].ups[int(n)%3]; up != 0 {
					s.run(AMFMessage{Assoc: up, Stream: 1, Data: b})
				}
			case 4:
				s.run(GNBDown{Assoc: g})
			case 5:
				s.kill(len(script) % 3)
			case 6:
				s.now = s.now.Add(time.Second)
				s.run(Tick{})
			case 7:
				if gg, ok := s.gnbs[gnbA]; ok && s.m.gnbs[gnbA] != nil {
					gg.ues[ran] = &gnbUE{}
					s.run(GNBMessage{Assoc: gnbA, Stream: 1, Data: s.must(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: ran, Location: loc}))})
					ran++
				}
			}
		}
		// Everything goes away: nothing may be left behind.
		for i := range s.amfs {
			s.kill(i)
		}
		s.run(GNBDown{Assoc: gnbA}, GNBDown{Assoc: gnbB})
		for i := 0; i < 40; i++ {
			s.now = s.now.Add(time.Second)
			s.run(Tick{})
		}
		if msg := checkEmpty(s.m); msg != "" {
			t.Fatal(msg)
		}
	})
}
