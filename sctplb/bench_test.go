package sctplb

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/memory"
)

// countingAMF answers NG Setup and Initial UE Messages and counts the rest.
func countingAMF(ctx context.Context, ln transport.Listener, got *atomic.Int64) {
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		go func() {
			next := uint64(1)
			for {
				m, err := c.Recv(ctx)
				if err != nil {
					return
				}
				got.Add(1)
				k, err := ngapl.NewDecoder(ngapl.DecoderConfig{}).Key(m.Data)
				if err != nil {
					continue
				}
				var reply []byte
				switch k.Procedure {
				case ngapType.ProcedureCodeNGSetup:
					reply, _ = ngapl.NGSetupResponse(ngapl.SetupResponse{AMFName: "amf", Served: []ngapType.ServedGUAMIItem{ngapl.ServedGUAMI(ngapl.GUAMI{PLMN: tPLMN, SetID: 1, Pointer: uint8(next)})},
						PLMNSupport: []ngapType.PLMNSupportItem{ngapl.PLMNSupport(tPLMN, ngapl.SNSSAI{SST: 1})}})
				case ngapType.ProcedureCodeInitialUEMessage:
					reply, _ = ngapl.DownlinkNASTransport(next, k.RANUEID, nil)
					next++
				}
				if reply != nil {
					_ = c.Send(ctx, transport.Message{Stream: m.Stream, PPID: ngapl.PPID, Data: reply})
				}
			}
		}()
	}
}

// BenchmarkUplinkThroughProxy pushes Uplink NAS Transports of 1,000
// established UEs through the whole shell (memory transport, decode, steer,
// per-association queues) and reports messages per second; compare with
// BenchmarkUplinkRawRelay, the same traffic copied without decoding.
func BenchmarkUplinkThroughProxy(b *testing.B) {
	n := memory.New(memory.Config{Queue: 8192})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got atomic.Int64
	cfg := Config{Transport: n, Listen: ep("10.0.0.1", 38412), SetupWait: 50 * time.Millisecond, TickInterval: 10 * time.Millisecond, SendQueue: 8192}
	for i := 0; i < 2; i++ {
		at := ep(fmt.Sprintf("10.1.0.%d", i+1), 38412)
		ln, err := n.Listen(at)
		if err != nil {
			b.Fatal(err)
		}
		go countingAMF(ctx, ln, &got)
		cfg.AMFs = append(cfg.AMFs, AMFEndpoint{Name: fmt.Sprintf("amf%d", i), Address: at})
	}
	p, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = p.Run(ctx) }()
	g := dialGNB(b, n, 1)
	var msgs [][]byte
	for ran := uint32(1); ran <= 1000; ran++ {
		g.send(1)(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: ran, Location: tLoc}))
		k, _ := g.expect(ngapType.ProcedureCodeDownlinkNASTransport, ngapl.Initiating)
		ul, err := ngapl.UplinkNASTransport(k.AMFUEID, ran, nil, tLoc)
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, ul)
	}
	base := got.Load()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		pace(&got, base, i)
		if err := g.c.Send(ctx, transport.Message{Stream: 1, PPID: ngapl.PPID, Data: msgs[i%len(msgs)]}); err != nil {
			b.Fatal(err)
		}
	}
	recv, end := waitCount(&got, base, b.N)
	b.ReportMetric(float64(recv)/end.Sub(start).Seconds(), "msgs/s")
	if recv != int64(b.N) {
		b.Errorf("%d of %d messages arrived", recv, b.N)
	}
}

// window bounds the messages in flight, like an SCTP peer's receive window:
// the benchmarks measure throughput, not how queues overflow.
const window = 2048

func pace(got *atomic.Int64, base int64, sent int) {
	for int64(sent)-(got.Load()-base) >= window {
		time.Sleep(20 * time.Microsecond)
	}
}

// waitCount waits until n messages past base arrived, or until arrivals
// stop for a second; it returns how many arrived and when the last did.
func waitCount(got *atomic.Int64, base int64, n int) (int64, time.Time) {
	last, at := got.Load(), time.Now()
	for last-base < int64(n) && time.Since(at) < time.Second {
		time.Sleep(20 * time.Microsecond)
		if v := got.Load(); v != last {
			last, at = v, time.Now()
		}
	}
	return last - base, at
}

// BenchmarkUplinkRawRelay is the baseline: the same PDUs copied from one
// association to another by a loop that does not look at them.
func BenchmarkUplinkRawRelay(b *testing.B) {
	n := memory.New(memory.Config{Queue: 8192})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	front, back := ep("10.0.0.1", 38412), ep("10.1.0.1", 38412)
	fl, err := n.Listen(front)
	if err != nil {
		b.Fatal(err)
	}
	bl, err := n.Listen(back)
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	go func() {
		c, err := bl.Accept(ctx)
		if err != nil {
			return
		}
		for {
			if _, err := c.Recv(ctx); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	go func() {
		in, err := fl.Accept(ctx)
		if err != nil {
			return
		}
		out, err := n.Dial(ctx, nil, back)
		if err != nil {
			return
		}
		for {
			m, err := in.Recv(ctx)
			if err != nil {
				return
			}
			if out.Send(ctx, m) != nil {
				return
			}
		}
	}()
	c, err := n.Dial(ctx, nil, front)
	if err != nil {
		b.Fatal(err)
	}
	pdu, err := ngapl.UplinkNASTransport(1, 1, nil, tLoc)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		pace(&got, 0, i)
		if err := c.Send(ctx, transport.Message{Stream: 1, PPID: ngapl.PPID, Data: pdu}); err != nil {
			b.Fatal(err)
		}
	}
	recv, end := waitCount(&got, 0, b.N)
	b.ReportMetric(float64(recv)/end.Sub(start).Seconds(), "msgs/s")
}
