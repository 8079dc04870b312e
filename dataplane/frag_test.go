package dataplane

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"testing"
)

// fragment splits an IP datagram (no IPv6 extension headers) into
// fragments of at most size payload bytes (a multiple of 8) with the given
// identification, each in an Ethernet frame from src to dst MAC. Checksums
// are computed from scratch.
func fragment(ip []byte, id uint32, size int, srcMAC, dstMAC net.HardwareAddr) [][]byte {
	v6 := ip[0]>>4 == 6
	hl := 20
	if v6 {
		hl = 40
	}
	payload := ip[hl:]
	var out [][]byte
	for off := 0; off < len(payload); off += size {
		chunk := payload[off:min(off+size, len(payload))]
		more := off+size < len(payload)
		h := append([]byte(nil), ip[:hl]...)
		f := append(append([]byte(nil), dstMAC...), srcMAC...)
		if v6 {
			f = binary.BigEndian.AppendUint16(f, 0x86dd)
			nh := h[6]
			h[6] = 44
			binary.BigEndian.PutUint16(h[4:], uint16(8+len(chunk)))
			fo := uint16(off)
			if more {
				fo |= 1
			}
			h = append(h, nh, 0)
			h = binary.BigEndian.AppendUint16(h, fo)
			h = binary.BigEndian.AppendUint32(h, id)
		} else {
			f = binary.BigEndian.AppendUint16(f, 0x0800)
			binary.BigEndian.PutUint16(h[2:], uint16(20+len(chunk)))
			binary.BigEndian.PutUint16(h[4:], uint16(id))
			fo := uint16(off / 8)
			if more {
				fo |= 0x2000
			}
			binary.BigEndian.PutUint16(h[6:], fo)
			h[10], h[11] = 0, 0
			binary.BigEndian.PutUint16(h[10:], csumFold(csumAdd(0, h)))
		}
		out = append(out, append(append(f, h...), chunk...))
	}
	return out
}

func (e *env) fragEntries() int {
	e.t.Helper()
	n := 0
	var k, v []byte
	it := e.d.objs.Frags.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// TestFragmentsFollowTheFirstOne: the fragments of a UDP datagram to a VIP
// (3,000 bytes in fragments of 1,232) reach the endpoint translated byte
// for byte like the whole datagram would be (addresses in every fragment,
// port and checksum in the first), in order and when the last fragment
// overtakes the others; a later fragment whose first fragment never came
// (or came after it) passes unchanged and leaves no state.
func TestFragmentsFollowTheFirstOne(t *testing.T) {
	e := newEnv(t)
	for _, v6 := range []bool{false, true} {
		fam := "v4"
		vip, client := vipV4, clientV4
		if v6 {
			fam, vip, client = "v6", vipV6, clientV6
		}
		id := uint32(1)
		if v6 {
			id = 2
		}
		e.upsert(Service{ID: id, VIP: vip, PortStart: 5000, Proto: ProtoUDP, Endpoints: testEndpoints(v6, 1, 8080)})
		payload := make([]byte, 3000)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		// frames gives the fragments as sent and as the endpoint must get them.
		frames := func(sport uint16, ipid uint32) (sent, want [][]byte) {
			p := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: client, dst: vip, proto: 17, sport: sport, dport: 5000, payload: payload}
			w := p
			w.dst, w.dport, w.ttl = epAddr(v6, 0), 8080, 63
			return fragment(p.ip(), ipid, 1232, clientMAC, lbMAC0), fragment(w.ip(), ipid, 1232, lbMAC1, epMAC(0))
		}
		expect := func(t *testing.T, what string, frame, want []byte) {
			t.Helper()
			ret, out := e.run(frame)
			if ret != actRedirect {
				t.Fatalf("%s: verdict %d, want redirect", what, ret)
			}
			if !bytes.Equal(out, want) {
				t.Fatalf("%s:\n got %x\nwant %x", what, out, want)
			}
		}
		passes := func(t *testing.T, what string, frame []byte) {
			t.Helper()
			ret, out := e.run(frame)
			if ret != actOK || !bytes.Equal(out, frame) {
				t.Fatalf("%s: verdict %d (want %d, pass), changed %v", what, ret, actOK, !bytes.Equal(out, frame))
			}
		}
		t.Run(fam+" in order", func(t *testing.T) {
			e := e.sub(t)
			sent, want := frames(40001, 0x1111)
			if len(sent) != 3 {
				t.Fatalf("%d fragments, want 3", len(sent))
			}
			for i := range sent {
				expect(t, fmt.Sprintf("fragment %d", i), sent[i], want[i])
			}
			// The next datagram of the flow (a new ID) too.
			sent, want = frames(40001, 0x1112)
			for i := range sent {
				expect(t, fmt.Sprintf("second datagram, fragment %d", i), sent[i], want[i])
			}
			_ = e
		})
		t.Run(fam+" last fragment first", func(t *testing.T) {
			e := e.sub(t)
			sent, want := frames(40002, 0x2222)
			passes(t, "last fragment ahead of the first", sent[2])
			expect(t, "first fragment", sent[0], want[0])
			expect(t, "middle fragment", sent[1], want[1])
			expect(t, "last fragment again", sent[2], want[2])
			_ = e
		})
		t.Run(fam+" first fragment lost", func(t *testing.T) {
			e := e.sub(t)
			ct, fr := e.ctEntries(), e.fragEntries()
			sent, _ := frames(40003, 0x3333)
			passes(t, "middle fragment", sent[1])
			passes(t, "last fragment", sent[2])
			if n := e.ctEntries(); n != ct {
				t.Fatalf("conntrack entries %d, want %d: a later fragment created state", n, ct)
			}
			if n := e.fragEntries(); n != fr {
				t.Fatalf("fragment notes %d, want %d", n, fr)
			}
			// Of an established flow (40001 above): same.
			sent, _ = frames(40001, 0x3334)
			passes(t, "established flow, middle fragment", sent[1])
			if n := e.fragEntries(); n != fr {
				t.Fatalf("fragment notes %d, want %d", n, fr)
			}
		})
	}
}
