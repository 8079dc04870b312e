package diam_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/telcolb/telcolb/l7parse/diameter"
	agent "github.com/telcolb/telcolb/sctplb/diam"
)

// BenchmarkRelayRequestAnswer is the machine's share of one request
// relayed and its answer relayed back, as in the shell's throughput
// benchmark (TestBenchDiameterAgentVsRawRelay): a Credit-Control update
// of one of 1000 bound sessions from an open client to the one server,
// and the server's success answer. ns/op is per request and answer.
func BenchmarkRelayRequestAnswer(b *testing.B) {
	m, err := agent.New(agent.Config{Identity: diameter.Identity{Host: agentHost, Realm: agentRealm},
		Servers: []agent.Server{{Name: "ocs"}}})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Unix(1_000_000, 0)
	const srv, cli agent.ConnID = 1, 2
	sendTo := func(acts []agent.Action, conn agent.ConnID) []byte {
		for _, a := range acts {
			if a.Kind == agent.Send && a.Conn == conn {
				return a.Data
			}
		}
		b.Fatalf("nothing sent to %d: %v", conn, acts)
		return nil
	}
	m.Step(now, agent.Tick{})
	cer := sendTo(m.Step(now, agent.Dialed{Server: 0, Conn: srv}), srv)
	h, _ := diameter.ParseHeader(cer)
	srvID := diameter.Identity{Host: "ocs.bench.example", Realm: agentRealm}
	m.Step(now, agent.Message{Conn: srv, Data: diameter.CEA(h, diameter.Capabilities{Identity: srvID, AuthApps: []uint32{diameter.AppCC}}, diameter.Success)})
	m.Step(now, agent.Accepted{Conn: cli})
	cliID := diameter.Identity{Host: "pgw1.bench.example", Realm: "client.example"}
	if cea := sendTo(m.Step(now, agent.Message{Conn: cli, Data: diameter.CER(diameter.Capabilities{Identity: cliID, AuthApps: []uint32{diameter.AppCC}}, 1, 1)}), cli); len(cea) == 0 {
		b.Fatal("no CEA")
	}
	const sessions = 1000
	reqs := make([][]byte, sessions)
	ans := make([][]byte, sessions)
	for i := range reqs {
		sid := fmt.Sprintf("pgw.bench.example;1;%d", i)
		reqs[i] = diameter.Message(diameter.FlagRequest|diameter.FlagProxiable, diameter.CmdCreditControl, diameter.AppCC, uint32(i+10), uint32(i+10),
			diameter.Str(diameter.AVPSessionID, sid), diameter.Str(diameter.AVPOriginHost, cliID.Host),
			diameter.Str(diameter.AVPOriginRealm, cliID.Realm), diameter.Str(diameter.AVPDestinationRealm, agentRealm),
			diameter.U32(diameter.AVPAuthAppID, diameter.AppCC), diameter.U32(diameter.AVPCCRequestType, diameter.CCUpdate),
			diameter.EncodeAVP(4242, diameter.AVPMandatory, 99999, make([]byte, 64)))
		rh, _ := diameter.ParseHeader(reqs[i])
		ans[i] = diameter.Answer(rh, []byte(sid), srvID, diameter.Success)
	}
	// The machine appends a Route-Record in the buffer's spare capacity,
	// as the shell's read slabs leave room for.
	buf := make([]byte, 0, len(reqs[0])+128)
	b.ReportAllocs()
	cpu0 := processCPU(b)
	for i := 0; b.Loop(); i++ {
		k := i % sessions
		buf = append(buf[:0], reqs[k]...)
		fwd := sendTo(m.Step(now, agent.Message{Conn: cli, Data: buf}), srv)
		fh, _ := diameter.ParseHeader(fwd)
		diameter.SetHopByHop(ans[k], fh.HopByHop)
		if got := sendTo(m.Step(now, agent.Message{Conn: srv, Data: ans[k]}), cli); len(got) != len(ans[k]) {
			b.Fatalf("answer of %d bytes relayed as %d", len(ans[k]), len(got))
		}
	}
	// CPU time rather than ns/op's wall clock: on a shared machine the
	// wall clock counts other processes' turns too.
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU is the process's user and system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
