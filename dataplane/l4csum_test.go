package dataplane

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// kernelAtLeast says whether the running kernel is major.minor or newer.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatalf("uname: %v", err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		t.Fatalf("kernel release %q", rel)
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		t.Fatalf("kernel release %q", rel)
	}
	return ma > major || ma == major && mi >= minor
}

// TestDirectL4CsumChosenByKernel: the fast path writes TCP/UDP checksums
// itself exactly where the kernel has bpf_cast_to_kern_ctx (6.2 and later),
// and keeps bpf_l4_csum_replace on older kernels (the 6.1 guest of
// scenarios/vm) and when the configuration asks for it.
func TestDirectL4CsumChosenByKernel(t *testing.T) {
	e := newEnv(t)
	if want := kernelAtLeast(t, 6, 2); e.d.DirectL4Csum() != want {
		t.Fatalf("direct checksum writes %v on this kernel, want %v (6.2+ has %s)", e.d.DirectL4Csum(), want, castKfunc)
	}
	if h := e.peerWith(Config{MaxConns: 4096, HelperL4Csum: true}); h.d.DirectL4Csum() {
		t.Fatal("HelperL4Csum: direct checksum writes still on")
	}
}

// TestDirectL4CsumMatchesHelpers: established TCP and UDP packets leave the
// fast path with the same bytes whether it writes their checksums itself or
// through bpf_l4_csum_replace (BPF_PROG_TEST_RUN hands in CHECKSUM_NONE
// skbs; TestFastPathChecksumsWithOffloads covers CHECKSUM_PARTIAL on veth):
// address changes only (default mode), addresses and ports (fullnat), a
// UDP datagram without checksum (left zero), and one whose rewritten
// checksum comes to zero (sent as 0xffff).
func TestDirectL4CsumMatchesHelpers(t *testing.T) {
	e := newEnv(t)
	if !e.d.DirectL4Csum() {
		t.Skipf("no %s on this kernel: both variants are the helpers", castKfunc)
	}
	h := e.peerWith(Config{MaxConns: 4096, HelperL4Csum: true})
	id := uint32(0)
	type tc struct {
		name    string
		mode    Mode
		proto   Proto
		v6      bool
		zero    bool // UDP without checksum
		wrapped bool // UDP whose rewritten checksum folds to zero
	}
	var cases []tc
	for _, mode := range []Mode{ModeDefault, ModeFullNAT} {
		for _, proto := range []Proto{ProtoTCP, ProtoUDP} {
			for _, v6 := range []bool{false, true} {
				cases = append(cases, tc{mode: mode, proto: proto, v6: v6})
			}
		}
	}
	cases = append(cases, tc{mode: ModeDefault, proto: ProtoUDP, zero: true}, tc{mode: ModeDefault, proto: ProtoUDP, wrapped: true},
		tc{mode: ModeDefault, proto: ProtoUDP, v6: true, wrapped: true})
	for _, c := range cases {
		id++
		fam, client, vip := "v4", clientV4, vipV4
		if c.v6 {
			fam, client, vip = "v6", clientV6, vipV6
		}
		name := fmt.Sprintf("%s/%s/%s", modeNames[c.mode], protoNames[c.proto], fam)
		if c.zero {
			name += "/no-checksum"
		}
		if c.wrapped {
			name += "/checksum-folds-to-zero"
		}
		// No subtests: BPF_PROG_TEST_RUN runs in the calling thread's
		// network namespace, which only this goroutine has entered.
		func() {
			vport := uint16(300 + id)
			first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: client, dst: vip, proto: uint8(c.proto), sport: 40000, dport: vport, ttl: 64}
			if c.proto == ProtoTCP {
				first.tcpFlags = tcpACK
			}
			est := first
			est.payload = make([]byte, 33) // odd: the last byte pads
			if c.proto == ProtoTCP {
				est.tcpFlags = tcpACK | tcpPSH
			}
			est.udpZeroCsum = c.zero
			if c.wrapped {
				// A payload word equal to the checksum the endpoint-side
				// datagram would have makes its sum 0xffff: checksum 0.
				out := est
				out.dst, out.dport = epAddr(c.v6, 0), 8080
				f := out.frame()
				off := 14 + 20
				if c.v6 {
					off = 14 + 40
				}
				binary.BigEndian.PutUint16(est.payload, binary.BigEndian.Uint16(f[off+6:]))
			}
			svc := Service{ID: id, VIP: vip, PortStart: vport, Proto: c.proto, Mode: c.mode, Endpoints: testEndpoints(c.v6, 1, 8080)}
			var outs [2][]byte
			for i, x := range []*env{e, h} {
				x.upsert(svc)
				if ret, _ := x.run(first.frame()); ret != actRedirect {
					t.Fatalf("%s: datapath %d, first packet: verdict %d", name, i, ret)
				}
				// The first established packet fills the flow's next-hop
				// cache (ct_established); the fast path takes the next.
				for n := 0; n < 2; n++ {
					ret, out := x.run(est.frame())
					if ret != actRedirect {
						t.Fatalf("%s: established packet %d: verdict %d", name, n, ret)
					}
					outs[i] = out
				}
			}
			if !bytes.Equal(outs[0], outs[1]) {
				t.Fatalf("%s: direct and helper checksums differ\ndirect: %s\nhelper: %s", name, hex.EncodeToString(outs[0]), hex.EncodeToString(outs[1]))
			}
			if c.wrapped || c.zero {
				off := 14 + 20
				if c.v6 {
					off = 14 + 40
				}
				want := uint16(0xffff)
				if c.zero {
					want = 0
				}
				if got := binary.BigEndian.Uint16(outs[0][off+6:]); got != want {
					t.Fatalf("%s: UDP checksum %#04x, want %#04x", name, got, want)
				}
			}
		}()
	}
}
