package kdiag

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"syscall"
	"testing"
)

// The replies here are built field by field after the kernel's layout
// (net/sctp/diag.c inet_sctp_diag_fill: inet_diag_msg, INET_DIAG_INFO with
// struct sctp_info, INET_DIAG_LOCALS, INET_DIAG_PEERS as sockaddr_storage
// arrays); a reply of the kernel itself is in testdata (real_test.go), and
// the kernel's answers are read live in the 6.1 VM (sctplb/transport/kernel's
// tests, run by scenarios/vm).

func attr(typ uint16, v []byte) []byte {
	b := make([]byte, align4(4+len(v)))
	binary.NativeEndian.PutUint16(b[0:], uint16(4+len(v)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[4:], v)
	return b
}

func sockaddrs(addrs ...netip.AddrPort) []byte {
	var out []byte
	for _, a := range addrs {
		s := make([]byte, sockaddrStorageLen)
		binary.BigEndian.PutUint16(s[2:], a.Port())
		if a.Addr().Is4() {
			binary.NativeEndian.PutUint16(s, syscall.AF_INET)
			ip := a.Addr().As4()
			copy(s[4:], ip[:])
		} else {
			binary.NativeEndian.PutUint16(s, syscall.AF_INET6)
			ip := a.Addr().As16()
			copy(s[8:], ip[:])
		}
		out = append(out, s...)
	}
	return out
}

// sctpInfo is a struct sctp_info of 6.1's size (192 bytes) with the tags.
func sctpInfo(tag, peerTag uint32) []byte {
	b := make([]byte, 192)
	binary.NativeEndian.PutUint32(b[0:], tag)
	binary.NativeEndian.PutUint32(b[4:], 3) // sctpi_state
	binary.NativeEndian.PutUint16(b[16:], 16)
	binary.NativeEndian.PutUint16(b[18:], 16)
	binary.NativeEndian.PutUint32(b[48:], peerTag)
	return b
}

type rec struct {
	family      uint8
	state       uint8
	sport       uint16
	dport       uint16
	inode       uint32
	attrs       [][]byte
	trimMsgTail int
}

func (r rec) body() []byte {
	m := make([]byte, diagMsgLen)
	m[0], m[1] = r.family, r.state
	binary.BigEndian.PutUint16(m[4:], r.sport)
	binary.BigEndian.PutUint16(m[6:], r.dport)
	binary.NativeEndian.PutUint32(m[68:], r.inode)
	m = m[:diagMsgLen-r.trimMsgTail]
	for _, a := range r.attrs {
		m = append(m, a...)
	}
	return m
}

func nlmsg(typ uint16, seq uint32, body []byte) []byte {
	b := make([]byte, align4(nlmsgHdrLen+len(body)))
	binary.NativeEndian.PutUint32(b[0:], uint32(nlmsgHdrLen+len(body)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], syscall.NLM_F_MULTI)
	binary.NativeEndian.PutUint32(b[8:], seq)
	copy(b[nlmsgHdrLen:], body)
	return b
}

func errBody(code int32) []byte {
	b := make([]byte, 4+nlmsgHdrLen)
	binary.NativeEndian.PutUint32(b, uint32(code))
	return b
}

var (
	gnb1 = netip.MustParseAddrPort("10.77.1.2:40001")
	gnb2 = netip.MustParseAddrPort("10.77.11.2:40001")
	vip1 = netip.MustParseAddrPort("10.77.100.1:38412")
	vip2 = netip.MustParseAddrPort("10.77.100.2:38412")
	gnb6 = netip.MustParseAddrPort("[fd00:77:1::2]:40002")
	vip6 = netip.MustParseAddrPort("[fd00:77:100::1]:38412")
)

func assocRec() rec {
	return rec{family: syscall.AF_INET, state: 3, sport: 38412, dport: 40001, inode: 4711,
		attrs: [][]byte{attr(attrInfo, sctpInfo(0x11223344, 0xa1b2c3d4)), attr(attrLocals, sockaddrs(vip1, vip2)),
			attr(4, []byte("reno\x00")), attr(attrPeers, sockaddrs(gnb1, gnb2))}}
}

func TestParseReplyReadsAssociations(t *testing.T) {
	v6 := rec{family: syscall.AF_INET6, state: 5, sport: 38412, dport: 40002, inode: 4712,
		attrs: [][]byte{attr(attrInfo, sctpInfo(1, 2)), attr(attrLocals, sockaddrs(vip6)), attr(attrPeers, sockaddrs(gnb6))}}
	// A listening endpoint's record: locals, no peers; skipped.
	ep := rec{family: syscall.AF_INET, state: 10, sport: 38412,
		attrs: [][]byte{attr(attrInfo, sctpInfo(0, 0)), attr(attrLocals, sockaddrs(vip1))}}
	dgram := append(append(nlmsg(sockDiagByFamily, 7, assocRec().body()), nlmsg(sockDiagByFamily, 7, ep.body())...), nlmsg(sockDiagByFamily, 7, v6.body())...)
	r, err := ParseReply(dgram, 7)
	if err != nil {
		t.Fatal(err)
	}
	if r.Done || len(r.Assocs) != 2 {
		t.Fatalf("reply %+v, want 2 associations, not done", r)
	}
	a := r.Assocs[0]
	want := Assoc{Family: syscall.AF_INET, State: StateEstablished, LocalPort: 38412, PeerPort: 40001,
		Locals: []netip.Addr{vip1.Addr(), vip2.Addr()}, Peers: []netip.Addr{gnb1.Addr(), gnb2.Addr()},
		Tag: 0x11223344, PeerTag: 0xa1b2c3d4, Inode: 4711}
	if !equal(a, want) {
		t.Errorf("association %+v, want %+v", a, want)
	}
	b := r.Assocs[1]
	if b.Family != syscall.AF_INET6 || b.State != StateShutdownSent || b.Tag != 1 || b.PeerTag != 2 ||
		!slices.Equal(b.Peers, []netip.Addr{gnb6.Addr()}) || !slices.Equal(b.Locals, []netip.Addr{vip6.Addr()}) {
		t.Errorf("IPv6 association %+v", b)
	}
	if b.State.String() != "SHUTDOWN_SENT" || State(42).String() != "state(42)" {
		t.Errorf("state names %q %q", b.State, State(42))
	}
	done, err := ParseReply(nlmsg(nlmsgDone, 7, []byte{0, 0, 0, 0}), 7)
	if err != nil || !done.Done || len(done.Assocs) != 0 {
		t.Errorf("DONE: %+v %v", done, err)
	}
}

func equal(a, b Assoc) bool {
	return a.Family == b.Family && a.State == b.State && a.LocalPort == b.LocalPort && a.PeerPort == b.PeerPort &&
		slices.Equal(a.Locals, b.Locals) && slices.Equal(a.Peers, b.Peers) && a.Tag == b.Tag && a.PeerTag == b.PeerTag && a.Inode == b.Inode
}

func TestParseReplyReturnsTheKernelsError(t *testing.T) {
	// What a kernel without sctp_diag answers (inet_diag finds no handler).
	_, err := ParseReply(nlmsg(nlmsgError, 1, errBody(-int32(syscall.ENOENT))), 1)
	if !errors.Is(err, syscall.ENOENT) || errors.Is(err, ErrMalformed) {
		t.Errorf("error message: %v, want ENOENT", err)
	}
	d := make([]byte, 4)
	eintr := -int32(syscall.EINTR)
	binary.NativeEndian.PutUint32(d, uint32(eintr))
	if _, err := ParseReply(nlmsg(nlmsgDone, 1, d), 1); !errors.Is(err, syscall.EINTR) {
		t.Errorf("DONE with an error: %v", err)
	}
	if r, err := ParseReply(nlmsg(nlmsgError, 1, errBody(0)), 1); err != nil || r.Done {
		t.Errorf("acknowledgement: %+v %v", r, err)
	}
}

func TestParseRejectsMalformedReplies(t *testing.T) {
	good := nlmsg(sockDiagByFamily, 1, assocRec().body())
	with := func(f func(r *rec)) []byte {
		r := assocRec()
		f(&r)
		return nlmsg(sockDiagByFamily, 1, r.body())
	}
	lenField := func(n uint32) []byte {
		b := append([]byte(nil), good...)
		binary.NativeEndian.PutUint32(b, n)
		return b
	}
	cases := map[string][]byte{
		"short header":      good[:10],
		"length too long":   lenField(uint32(len(good) + 4)),
		"length too short":  lenField(8),
		"other sequence":    nlmsg(sockDiagByFamily, 2, assocRec().body()),
		"unknown type":      nlmsg(99, 1, nil),
		"short error":       nlmsg(nlmsgError, 1, []byte{1}),
		"positive error":    nlmsg(nlmsgError, 1, errBody(5)),
		"short diag msg":    with(func(r *rec) { r.trimMsgTail = 8; r.attrs = nil }),
		"no info":           with(func(r *rec) { r.attrs = r.attrs[1:] }),
		"short info":        with(func(r *rec) { r.attrs[0] = attr(attrInfo, sctpInfo(1, 2)[:40]) }),
		"no locals":         with(func(r *rec) { r.attrs = append(r.attrs[:1], r.attrs[2:]...) }),
		"locals not array":  with(func(r *rec) { r.attrs[1] = attr(attrLocals, sockaddrs(vip1)[:100]) }),
		"peer family":       with(func(r *rec) { s := sockaddrs(gnb1); s[0], s[1] = 99, 0; r.attrs[3] = attr(attrPeers, s) }),
		"no peer address":   with(func(r *rec) { r.attrs[3] = attr(attrPeers, nil) }),
		"socket family":     with(func(r *rec) { r.family = 1 }),
		"attribute overrun": nlmsg(sockDiagByFamily, 1, append(assocRec().body(), 0xff, 0x00, 0x02, 0x00)),
		"attribute stub":    nlmsg(sockDiagByFamily, 1, append(assocRec().body(), 0x01, 0x00)),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			r, err := ParseReply(b, 1)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("got %+v, %v; want a malformed-reply error", r, err)
			}
		})
	}
	if _, err := ParseReply(good, 1); err != nil {
		t.Fatalf("the unaltered reply: %v", err)
	}
}

func TestRequestAsksForSCTPInfoByPorts(t *testing.T) {
	b := Request(Query{Family: syscall.AF_INET6, LocalPort: 38412, PeerPort: 40001}, 9)
	if len(b) != 72 || binary.NativeEndian.Uint32(b) != 72 || binary.NativeEndian.Uint16(b[4:]) != sockDiagByFamily ||
		binary.NativeEndian.Uint16(b[6:]) != syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP || binary.NativeEndian.Uint32(b[8:]) != 9 {
		t.Fatalf("header % x", b[:16])
	}
	r := b[16:]
	if r[0] != syscall.AF_INET6 || r[1] != syscall.IPPROTO_SCTP || r[2] != 2 ||
		binary.NativeEndian.Uint32(r[4:])&(1<<10) != 0 || binary.NativeEndian.Uint32(r[4:])&(1<<1) == 0 ||
		binary.BigEndian.Uint16(r[8:]) != 38412 || binary.BigEndian.Uint16(r[10:]) != 40001 ||
		binary.NativeEndian.Uint32(r[48:]) != ^uint32(0) || binary.NativeEndian.Uint32(r[52:]) != ^uint32(0) {
		t.Errorf("inet_diag_req_v2 % x", r)
	}
	if _, err := Dump(Query{Family: 1}); err == nil {
		t.Error("Dump of family 1 did not fail")
	}
}

func FuzzParseReply(f *testing.F) {
	f.Add(nlmsg(sockDiagByFamily, 1, assocRec().body()))
	f.Add(append(nlmsg(sockDiagByFamily, 1, assocRec().body()), nlmsg(nlmsgDone, 1, []byte{0, 0, 0, 0})...))
	f.Add(nlmsg(nlmsgError, 1, errBody(-2)))
	for _, d := range realDump(f) {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReply(b, 1)
		if err != nil {
			return
		}
		for _, a := range r.Assocs {
			if len(a.Peers) == 0 || (a.Family != syscall.AF_INET && a.Family != syscall.AF_INET6) {
				t.Fatalf("accepted association %+v", a)
			}
		}
	})
}
