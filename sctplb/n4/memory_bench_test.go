package n4_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/wmnsk/go-pfcp/ie"
	"github.com/wmnsk/go-pfcp/message"

	"github.com/telcolb/telcolb/l7parse/pfcp"
	"github.com/telcolb/telcolb/scenarios/bench/figure"
	sims "github.com/telcolb/telcolb/scenarios/pfcp"
	"github.com/telcolb/telcolb/sctplb/n4"
)

// TestBenchN4Memory1MSessions holds a million established PFCP sessions
// (each with its stored Establishment Request, as the SMF simulator builds
// it, for replay) across 3 UPFs in the state machine and reports the heap
// they take, once the retransmission cache has expired: 5 rounds, a fresh
// machine each, reported through the figure harness (median and spread).
func TestBenchN4Memory1MSessions(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmarks")
	}
	const sessions = 1_000_000
	pfcp.SilenceLibraryLogs()
	figure.Heap{Items: sessions, Item: "sessions",
		Total: "pfcp_memory_1m_sessions_mib", PerItem: "pfcp_memory_bytes_per_session", PerItemNs: "pfcp_steer_establishment_ns",
		Fill: func() (float64, time.Duration, error) { return fillN4Sessions(t, sessions) },
	}.Report(t)
}

// fillN4Sessions establishes n sessions through a fresh machine, each
// answered by its UPF, lets the retransmission cache expire, and returns
// the heap the machine holds then (above what it held before) and the time
// the steps took.
func fillN4Sessions(t *testing.T, sessions int) (float64, time.Duration, error) {
	// No heartbeats: nothing answers them here.
	w := newWorld(t, 3, func(c *n4.Config) { c.HeartbeatInterval = 24 * time.Hour })
	w.associate()
	smf := sims.NewSMFSim(smfAddr.Addr(), t0)
	req := smf.Establish(1)
	rm, _ := pfcp.Parse(req)
	reqSEIDAt := rm.FSEIDSpan.Off + 5
	upfIP := net.IP(upfAddr(0).Addr().AsSlice())
	resp := mustMarshal(t, message.NewSessionEstablishmentResponse(0, 0, 0, 0, 0,
		ie.NewNodeID(upfAddr(0).Addr().String(), "", ""), ie.NewCause(ie.CauseRequestAccepted), ie.NewFSEID(1, upfIP, nil),
		ie.NewCreatedPDR(ie.NewPDRID(1), ie.NewFTEID(0x01, 1, upfIP, nil, 0))))
	pm, _ := pfcp.Parse(resp)
	respSEIDAt := pm.FSEIDSpan.Off + 5
	now := w.now
	before := figure.HeapMiB()
	start := time.Now()
	for i := 0; i < sessions; i++ {
		r := append([]byte(nil), req...)
		pfcp.SetSeq(r, uint32(i+1000)&0xffffff) // past the association setup's
		binary.BigEndian.PutUint64(r[reqSEIDAt:], uint64(i+1))
		var to n4Send
		for _, a := range w.m.Step(now, n4.Datagram{From: smfAddr, Data: r}) {
			if a.Kind == n4.Send && a.Side == n4.UPFSide {
				to = n4Send{a.To, a.Data}
			}
		}
		if to.data == nil {
			return 0, 0, fmt.Errorf("session %d not forwarded", i)
		}
		fm, err := pfcp.Parse(to.data)
		if err != nil {
			return 0, 0, err
		}
		a := append([]byte(nil), resp...)
		pfcp.SetSEID(a, fm.FSEID.SEID)
		pfcp.SetSeq(a, fm.Seq)
		binary.BigEndian.PutUint64(a[respSEIDAt:], 0x100+uint64(i))
		w.m.Step(now, n4.Datagram{From: to.addr, Data: a})
		if i%100_000 == 0 {
			now = now.Add(time.Second)
			w.m.Step(now, n4.Tick{})
		}
	}
	elapsed := time.Since(start)
	// Let the retransmission cache expire: what stays is per session.
	now = now.Add(time.Minute)
	w.m.Step(now, n4.Tick{})
	after := figure.HeapMiB()
	total := 0
	for _, n := range w.m.Sessions() {
		total += n
	}
	if total != sessions {
		return 0, 0, fmt.Errorf("%d sessions held, want %d", total, sessions)
	}
	runtime.KeepAlive(w)
	return after - before, elapsed, nil
}

type n4Send struct {
	addr netip.AddrPort
	data []byte
}
