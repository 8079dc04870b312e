package sctplb

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/scenarios/bench/figure"
	"github.com/telcolb/telcolb/sctplb/steer"
)

// patchable is a PDU built once by the library with marker IDs whose APER
// octets are overwritten per UE: free5gc's encoder is far too slow to build
// a million PDUs, and IDs of the same octet length encode identically
// elsewhere.
type patchable struct {
	pdu         []byte
	ranAt       int // 4 octets
	amfAt, amfN int
}

const (
	ranMarker = 0x5a6b7c8d
	amfMarker = 0x1a2b3c4d5e
)

func newPatchable(t testing.TB, b []byte, err error, hasAMF bool) patchable {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	p := patchable{pdu: b, amfAt: -1}
	var ran [4]byte
	binary.BigEndian.PutUint32(ran[:], ranMarker)
	if p.ranAt = bytes.Index(b, ran[:]); p.ranAt < 0 || bytes.Count(b, ran[:]) != 1 {
		t.Fatalf("RAN-UE-NGAP-ID marker not found once in %x", b)
	}
	if hasAMF {
		amf := []byte{0x1a, 0x2b, 0x3c, 0x4d, 0x5e}
		if p.amfAt = bytes.Index(b, amf); p.amfAt < 0 {
			t.Fatalf("AMF-UE-NGAP-ID marker not found in %x", b)
		}
		p.amfN = len(amf)
	}
	return p
}

// with returns a copy carrying ran (top octet non-zero) and amf (5 octets,
// top octet non-zero).
func (p patchable) with(ran uint32, amf uint64) []byte {
	b := append([]byte(nil), p.pdu...)
	binary.BigEndian.PutUint32(b[p.ranAt:], ran)
	if p.amfAt >= 0 {
		for i := 0; i < p.amfN; i++ {
			b[p.amfAt+i] = byte(amf >> (8 * (p.amfN - 1 - i)))
		}
	}
	return b
}

// TestBenchN2Memory1MContexts holds a million established UE contexts
// (Initial UE Message steered, first downlink learned) across 3 AMFs in the
// steering state machine and reports the heap they take, over 5 rounds
// each with a fresh machine (TELCOLB_BENCH_N2_UES overrides the count to
// try it out quickly).
func TestBenchN2Memory1MContexts(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the benchmarks")
	}
	ues, label := 1_000_000, "1m"
	if v := os.Getenv("TELCOLB_BENCH_N2_UES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("TELCOLB_BENCH_N2_UES=%q: want a positive count", v)
		}
		ues, label = n, v
	}
	ngapl.SilenceLibraryLogs()
	figure.Heap{Items: ues, Item: "UE contexts",
		Total: "n2_memory_" + label + "_contexts_mib", PerItem: "n2_memory_bytes_per_ue_context", PerItemNs: "n2_steer_initial_ue_plus_downlink_ns",
		Fill: func() (float64, time.Duration, error) {
			mib, elapsed := fillContexts(t, ues)
			return mib, elapsed, nil
		},
	}.Report(t)
}

// fillContexts builds a steering machine holding ues established UE
// contexts and returns the heap they take and the time steering took.
func fillContexts(t *testing.T, ues int) (mib float64, elapsed time.Duration) {
	t.Helper()
	cfg := steer.Config{ProxyName: "proxy"}
	for i := 0; i < 3; i++ {
		cfg.AMFs = append(cfg.AMFs, steer.AMF{Name: fmt.Sprintf("amf%d", i)})
	}
	m, err := steer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	const gnb = steer.AssocID(1)
	upAMF := map[steer.AssocID]int{}
	var queue []steer.Event
	run := func(evs ...steer.Event) []steer.Action {
		var sent []steer.Action
		queue = append(queue, evs...)
		for len(queue) > 0 {
			e := queue[0]
			queue = queue[1:]
			for _, a := range m.Step(now, e) {
				switch a.Kind {
				case steer.Dial:
					upAMF[a.Assoc] = a.AMF
					queue = append(queue, steer.AMFUp{Assoc: a.Assoc, OutStreams: 16})
				case steer.Send:
					sent = append(sent, a)
					k, err := ngapl.NewDecoder(ngapl.DecoderConfig{}).Key(a.Data)
					if err == nil && a.Assoc&steer.UpstreamBit != 0 && k.Procedure == ngapType.ProcedureCodeNGSetup {
						g := ngapl.GUAMI{PLMN: tPLMN, Region: 0xca, SetID: 1, Pointer: uint8(upAMF[a.Assoc] + 1)}
						resp, err := ngapl.NGSetupResponse(ngapl.SetupResponse{AMFName: "amf", Served: []ngapType.ServedGUAMIItem{ngapl.ServedGUAMI(g)},
							PLMNSupport: []ngapType.PLMNSupportItem{ngapl.PLMNSupport(tPLMN, ngapl.SNSSAI{SST: 1})}})
						if err != nil {
							t.Fatal(err)
						}
						queue = append(queue, steer.AMFMessage{Assoc: a.Assoc, Data: resp})
					}
				}
			}
		}
		return sent
	}
	setup, err := ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: tPLMN, GNBID: 1, GNBIDBits: 22, Name: "gnb", TACs: []uint32{1}, Slices: []ngapl.SNSSAI{{SST: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	run(steer.GNBUp{Assoc: gnb, OutStreams: 16}, steer.GNBMessage{Assoc: gnb, Data: setup})
	now = now.Add(2 * time.Second)
	run(steer.Tick{})
	if _, ups := m.AssociationsUp(); ups != 3 {
		t.Fatalf("%d AMF associations up, want 3", ups)
	}
	iu, err := ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: ranMarker, Location: tLoc})
	initial := newPatchable(t, iu, err, false)
	dl, err := ngapl.DownlinkNASTransport(amfMarker, ranMarker, nil)
	downlink := newPatchable(t, dl, err, true)

	before := figure.HeapMiB()
	start := time.Now()
	for i := uint32(0); i < uint32(ues); i++ {
		ran := 0x10000000 + i
		sent := run(steer.GNBMessage{Assoc: gnb, Stream: 1, Data: initial.with(ran, 0)})
		if len(sent) != 1 || sent[0].Assoc&steer.UpstreamBit == 0 {
			t.Fatalf("UE %d: Initial UE Message not steered: %+v", i, sent)
		}
		run(steer.AMFMessage{Assoc: sent[0].Assoc, Stream: 1, Data: downlink.with(ran, 0x1000000000+uint64(i))})
	}
	elapsed = time.Since(start)
	after := figure.HeapMiB()
	total := 0
	for _, n := range m.UEs() {
		total += n
	}
	if total != ues {
		t.Fatalf("%d UE contexts held, want %d", total, ues)
	}
	runtime.KeepAlive(m)
	return after - before, elapsed
}
