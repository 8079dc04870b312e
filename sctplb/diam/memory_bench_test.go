package diam_test

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/telcolb/telcolb/l7parse/diameter"
	"github.com/telcolb/telcolb/scenarios/bench/figure"
	agent "github.com/telcolb/telcolb/sctplb/diam"
)

// TestBenchDiameterMemory1MSessions binds a million Session-Ids (CCR-I
// forwarded and answered) across 3 servers in the agent machine and
// reports the heap the bindings take, over 5 rounds with a fresh machine
// each (TELCOLB_BENCH_DIAMETER_SESSIONS overrides the count).
func TestBenchDiameterMemory1MSessions(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmarks")
	}
	n, label := 1_000_000, "1m"
	if v := os.Getenv("TELCOLB_BENCH_DIAMETER_SESSIONS"); v != "" {
		k, err := strconv.Atoi(v)
		if err != nil || k < 1 {
			t.Fatalf("TELCOLB_BENCH_DIAMETER_SESSIONS=%q: want a positive count", v)
		}
		n, label = k, v
	}
	figure.Heap{Items: n, Item: "bindings",
		Total: "diameter_memory_" + label + "_sessions_mib", PerItem: "diameter_memory_bytes_per_session", PerItemNs: "diameter_steer_ccr_initial_plus_answer_ns",
		Fill: func() (float64, time.Duration, error) { return fillSessions(n) },
	}.Report(t)
}

// fillSessions runs n CCR-I requests through a fresh machine, each
// answered by its server, and returns the heap the machine holds then
// (above what it held before) and the time the steps took.
func fillSessions(n int) (float64, time.Duration, error) {
	cfg := agent.Config{Identity: diameter.Identity{Host: "dra.example", Realm: "example"}, SessionIdle: 24 * time.Hour}
	for i := range 3 {
		cfg.Servers = append(cfg.Servers, agent.Server{Name: fmt.Sprintf("s%d", i)})
	}
	base := figure.HeapMiB()
	m, err := agent.New(cfg)
	if err != nil {
		return 0, 0, err
	}
	now := time.Unix(1_700_000_000, 0)
	srvConn := map[agent.ConnID]int{}
	next := agent.ConnID(100)
	var pending []agent.Action
	drive := func(ev agent.Event) {
		pending = append(pending[:0], m.Step(now, ev)...)
	}
	drive(agent.Tick{})
	dials := append([]agent.Action(nil), pending...)
	for _, a := range dials {
		if a.Kind == agent.Dial {
			next++
			srvConn[next] = a.Server
			drive(agent.Dialed{Server: a.Server, Conn: next})
			for _, s := range pending {
				if s.Kind == agent.Send {
					h, _ := diameter.ParseHeader(s.Data)
					caps := diameter.Capabilities{Identity: diameter.Identity{Host: fmt.Sprintf("ocs%d.example", a.Server), Realm: "example"}, AuthApps: []uint32{diameter.AppCC}}
					c := s.Conn
					drive(agent.Message{Conn: c, Data: diameter.CEA(h, caps, diameter.Success)})
				}
			}
		}
	}
	const client = agent.ConnID(1)
	drive(agent.Accepted{Conn: client})
	cer := diameter.CER(diameter.Capabilities{Identity: diameter.Identity{Host: "pgw.example", Realm: "client.example"}, AuthApps: []uint32{diameter.AppCC}}, 1, 1)
	drive(agent.Message{Conn: client, Data: cer})
	ids := diameter.Identity{Host: "pgw.example", Realm: "client.example"}
	start := time.Now()
	for i := range n {
		sid := "pgw.example;1700000000;" + strconv.Itoa(i)
		req := diameter.Message(diameter.FlagRequest|diameter.FlagProxiable, diameter.CmdCreditControl, diameter.AppCC, uint32(i), uint32(i),
			diameter.Str(diameter.AVPSessionID, sid), diameter.Str(diameter.AVPOriginHost, ids.Host), diameter.Str(diameter.AVPOriginRealm, ids.Realm),
			diameter.Str(diameter.AVPDestinationRealm, "example"), diameter.U32(diameter.AVPAuthAppID, diameter.AppCC),
			diameter.U32(diameter.AVPCCRequestType, diameter.CCInitial), diameter.U32(diameter.AVPCCRequestNumber, 0))
		drive(agent.Message{Conn: client, Data: req})
		var fwd agent.Action
		for _, a := range pending {
			if a.Kind == agent.Send {
				fwd = a
			}
		}
		if fwd.Data == nil {
			return 0, 0, fmt.Errorf("session %d not forwarded", i)
		}
		h, _ := diameter.ParseHeader(fwd.Data)
		drive(agent.Message{Conn: fwd.Conn, Data: diameter.Answer(h, []byte(sid), diameter.Identity{Host: "ocs.example", Realm: "example"}, diameter.Success)})
	}
	elapsed := time.Since(start)
	// Past RequestTimeout: the timeout queue of the answered requests
	// empties, as it does in a running agent; the bindings stay.
	now = now.Add(time.Minute)
	drive(agent.Tick{})
	total := 0
	for _, k := range m.Sessions() {
		total += k
	}
	if total != n {
		return 0, 0, fmt.Errorf("%d bindings, want %d", total, n)
	}
	mib := figure.HeapMiB() - base
	runtime.KeepAlive(m)
	return mib, elapsed, nil
}
