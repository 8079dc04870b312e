package steer

import (
	"testing"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// FuzzMachine feeds arbitrary bytes from both sides of a set-up proxy (and
// real PDUs as seeds): the machine must answer or drop, never panic, and
// every PDU it emits must decode.
func FuzzMachine(f *testing.F) {
	seed := newSim(f, 2, RoundRobin)
	for _, b := range [][]byte{
		seed.must(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: 1, Location: loc})),
		seed.must(ngapl.UplinkNASTransport(1, 1, nil, loc)),
		seed.must(ngapl.UEContextReleaseComplete(1, 1)),
		seed.must(ngapl.NGReset(ngapl.Cause(1, 0), []ngapl.ConnItem{{HasRANUEID: true, RANUEID: 1}})),
		seed.must(ngapl.DownlinkNASTransport(1, 1, nil)),
	} {
		f.Add(false, b)
		f.Add(true, b)
	}
	f.Fuzz(func(t *testing.T, fromAMF bool, b []byte) {
		s := newSim(t, 2, RoundRobin)
		s.addGNB(gnbA)
		s.initialUE(gnbA, 1, nil)
		if fromAMF {
			s.run(AMFMessage{Assoc: s.upstreamOf(gnbA, 0), Stream: 1, Data: b})
		} else {
			s.run(GNBMessage{Assoc: gnbA, Stream: 1, Data: b})
		}
	})
}
