package diameter

import "testing"

// benchCCR is a Credit-Control request like the agent's throughput
// benchmark sends: the routing AVPs, a CC-Request-Type and a 64-byte
// vendor AVP.
func benchCCR() []byte {
	return Message(FlagRequest|FlagProxiable, CmdCreditControl, AppCC, 7, 7,
		Str(AVPSessionID, "pgw.bench.example;1;42"), Str(AVPOriginHost, "pgw1.bench.example"),
		Str(AVPOriginRealm, "client.example"), Str(AVPDestinationRealm, "bench.example"),
		U32(AVPAuthAppID, AppCC), U32(AVPCCRequestType, CCUpdate),
		EncodeAVP(4242, AVPMandatory, 99999, make([]byte, 64)))
}

// BenchmarkParseInto is the agent's per-message parse (ns/op, 0 allocs).
func BenchmarkParseInto(b *testing.B) {
	req := benchCCR()
	ans := Answer(Header{Flags: FlagRequest | FlagProxiable, Code: CmdCreditControl, AppID: AppCC, HopByHop: 7, EndToEnd: 7},
		[]byte("pgw.bench.example;1;42"), Identity{Host: "ocs.bench.example", Realm: "bench.example"}, Success)
	var m Msg
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		msg := req
		if i&1 == 1 {
			msg = ans
		}
		if err := m.ParseInto(msg); err != nil {
			b.Fatal(err)
		}
	}
}
