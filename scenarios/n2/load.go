package n2

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// BlastResult is one throughput run: Uplink NAS Transports sent and the
// Downlink NAS Transports that answered them.
type BlastResult struct {
	Sent     int64   `json:"sent"`
	Answered int64   `json:"answered"`
	Seconds  float64 `json:"seconds"`
}

// Blast sends Uplink NAS Transports of the registered UEs round robin for
// d, keeping at most window unanswered (an SCTP peer's receive window, so
// the run measures throughput, not queue overflow), and counts the AMFs'
// Downlink NAS answers. Call after Register.
func (g *GNB) Blast(ctx context.Context, d time.Duration, window int) (BlastResult, error) {
	var pdus [][]byte
	var owners []*simUE
	for _, u := range g.ues {
		if !u.res.Registered || u.res.NetworkReleased {
			continue
		}
		b, err := ngapl.UplinkNASTransport(u.amf, u.ran, nil, g.location())
		if err != nil {
			return BlastResult{}, fmt.Errorf("blast: %w", err)
		}
		pdus, owners = append(pdus, b), append(owners, u)
	}
	if len(pdus) == 0 {
		return BlastResult{}, errors.New("blast: no registered UE")
	}
	if window <= 0 {
		window = 256
	}
	g.counting.Store(true)
	defer g.counting.Store(false)
	base := g.answered.Load()
	var sent int64
	start := time.Now()
	end := start.Add(d)
	for time.Now().Before(end) {
		if sent-(g.answered.Load()-base) >= int64(window) {
			time.Sleep(20 * time.Microsecond)
			continue
		}
		i := int(sent) % len(pdus)
		if err := g.sendPDU(ctx, owners[i], pdus[i], nil); err != nil {
			return BlastResult{}, fmt.Errorf("blast: %w", err)
		}
		sent++
	}
	// Collect the answers still in flight, then stop the clock at the last.
	last, at := g.answered.Load(), time.Now()
	for last-base < sent && time.Since(at) < time.Second {
		time.Sleep(100 * time.Microsecond)
		if v := g.answered.Load(); v != last {
			last, at = v, time.Now()
		}
	}
	return BlastResult{Sent: sent, Answered: last - base, Seconds: at.Sub(start).Seconds()}, nil
}

// LatencyResult holds round-trip times of Uplink NAS -> Downlink NAS.
type LatencyResult struct {
	Samples int     `json:"samples"`
	P50us   float64 `json:"p50us"`
	P99us   float64 `json:"p99us"`
}

// PingPong measures n sequential Uplink NAS -> Downlink NAS round trips.
func (g *GNB) PingPong(ctx context.Context, n int) (LatencyResult, error) {
	var ues []*simUE
	for _, u := range g.ues {
		if u.res.Registered && !u.res.NetworkReleased {
			ues = append(ues, u)
		}
	}
	if len(ues) == 0 || n <= 0 {
		return LatencyResult{}, errors.New("pingpong: no registered UE or no samples")
	}
	rtts := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		u := ues[i%len(ues)]
		b, err := ngapl.UplinkNASTransport(u.amf, u.ran, nil, g.location())
		if err != nil {
			return LatencyResult{}, err
		}
		t0 := time.Now()
		if err := g.sendPDU(ctx, u, b, nil); err != nil {
			return LatencyResult{}, err
		}
		if _, err := g.expect(ctx, u, ngapType.ProcedureCodeDownlinkNASTransport, ngapl.Initiating); err != nil {
			return LatencyResult{}, fmt.Errorf("pingpong: %w", err)
		}
		rtts = append(rtts, time.Since(t0))
	}
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	q := func(p float64) float64 { return float64(rtts[int(p*float64(len(rtts)-1))].Nanoseconds()) / 1e3 }
	return LatencyResult{Samples: n, P50us: q(0.50), P99us: q(0.99)}, nil
}
