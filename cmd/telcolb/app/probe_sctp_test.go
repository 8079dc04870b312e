package app

import (
	"context"
	"encoding/binary"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
)

func initAck(tag uint32) []byte {
	c := sctpInitChunk(tag, 9)
	c[0] = sctpChunkInitAck
	return c
}

func TestParseSCTPReply(t *testing.T) {
	good := sctpPacket(38412, 50000, 0x1234, initAck(0xabcd))
	corrupt := append([]byte(nil), good...)
	corrupt[20] ^= 1
	longChunk := sctpPacket(1, 2, 3, []byte{sctpChunkAbort, 0, 0, 40})
	shortAck := sctpPacket(1, 2, 3, []byte{sctpChunkInitAck, 0, 0, 8, 0, 0, 0, 1})
	zeroTag := sctpPacket(1, 2, 3, initAck(0))
	tests := []struct {
		name    string
		pkt     []byte
		want    sctpReply
		wantErr string
	}{
		{"INIT-ACK", good, sctpReply{sport: 38412, dport: 50000, vtag: 0x1234, chunk: sctpChunkInitAck, initTag: 0xabcd}, ""},
		{"ABORT", sctpPacket(38412, 50000, 0x1234, []byte{sctpChunkAbort, 1, 0, 4}), sctpReply{sport: 38412, dport: 50000, vtag: 0x1234, chunk: sctpChunkAbort}, ""},
		{"too short", good[:14], sctpReply{}, "too short"},
		{"bad checksum", corrupt, sctpReply{}, "checksum"},
		{"chunk longer than packet", longChunk, sctpReply{}, "chunk length"},
		{"truncated INIT-ACK", shortAck, sctpReply{}, "too short"},
		{"INIT-ACK with tag 0", zeroTag, sctpReply{}, "initiate tag 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSCTPReply(tt.pkt)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestSCTPProbeINITIsWellFormed(t *testing.T) {
	p := sctpPacket(50000, 38412, 0, sctpInitChunk(0x77, 5))
	if len(p) != 32 || p[12] != sctpChunkInit || binary.BigEndian.Uint32(p[4:]) != 0 {
		t.Fatalf("INIT packet % x", p)
	}
	if _, err := parseSCTPReply(p); err != nil {
		t.Fatalf("own INIT does not parse: %v", err)
	}
}

func FuzzParseSCTPReply(f *testing.F) {
	f.Add(sctpPacket(38412, 50000, 0x1234, initAck(0xabcd)))
	f.Add(sctpPacket(1, 2, 3, []byte{sctpChunkAbort, 0, 0, 4}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseSCTPReply(b)
		if err == nil && r.chunk == sctpChunkInitAck && r.initTag == 0 {
			t.Fatalf("INIT-ACK with tag 0 accepted")
		}
	})
}

// The probe against a real SCTP stack (usrsctp) in a lab namespace: a
// listening endpoint answers INIT-ACK and the probe aborts it; a port
// nothing listens on answers ABORT. No association is ever established.
func TestSCTPProbeAgainstARealStack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and raw sockets")
	}
	for _, tool := range []string{"dumpcap", "tshark"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	l := lab.New(t, lab.Config{Backends: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	be := l.BackendIface(0, 0)
	srv, err := sctppeer.StartServer(ctx, l.Backends[0], sctppeer.ServerOptions{
		Bind: []netip.Addr{be.V4(), be.V6()}, Port: 38412, ID: "be1"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	capt, err := capture.Start(ctx, l.LB, l.LBBackendIface(0).Name, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer capt.Stop()
	tests := []struct {
		name    string
		addr    netip.AddrPort
		wantErr string
	}{
		{"ipv4 listening", netip.AddrPortFrom(be.V4(), 38412), ""},
		{"ipv6 listening", netip.AddrPortFrom(be.V6(), 38412), ""},
		{"ipv4 closed port", netip.AddrPortFrom(be.V4(), 38413), "ABORT"},
		{"ipv6 closed port", netip.AddrPortFrom(be.V6(), 38413), "ABORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := l.LB.Do(func() error {
				return NetProber{}.Probe(ctx, ProbeTarget{Type: api.ProbeSCTP, Addr: tt.addr, Timeout: 2 * time.Second})
			})
			checkProbe(t, err, tt.wantErr)
		})
	}
	if err := capt.Stop(); err != nil {
		t.Fatal(err)
	}
	pkts, err := capture.SCTP(ctx, capt.File)
	if err != nil {
		t.Fatal(err)
	}
	counts := capture.CountChunks(pkts)
	// 4 INITs; 2 INIT-ACKs each followed by the probe's ABORT; 2 ABORTs
	// from the endpoint for the closed port.
	if counts["INIT"] != 4 || counts["INIT_ACK"] != 2 || counts["ABORT"] != 4 || counts["COOKIE_ECHO"] != 0 {
		t.Errorf("chunks %v, want 4 INIT, 2 INIT_ACK, 4 ABORT and no COOKIE_ECHO", counts)
	}
	rep, err := capture.Checksums(ctx, capt.File)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Bad) != 0 || rep.Good == 0 {
		t.Errorf("checksums: %d bad %v, %d good", len(rep.Bad), rep.Bad, rep.Good)
	}
	evs, err := srv.Events()
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Event == "assoc" {
			t.Errorf("a probe established an association: %+v", ev)
		}
	}
}
