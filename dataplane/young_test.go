package dataplane

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/telcolb/telcolb/bpf"
)

// takenUpCase is one service of the note tests: default mode with round
// robin over four endpoints (a path without the note gets another
// endpoint) and fullnat with one endpoint, as in the HA lab (a path
// without the note gets another SNAT port).
type takenUpCase struct {
	mode Mode
	eps  int
	v6   bool
	// vport is the service's port (the cases share the VIPs).
	vport uint16
}

func takenUpCases() []takenUpCase {
	var out []takenUpCase
	for _, v6 := range []bool{false, true} {
		out = append(out, takenUpCase{ModeDefault, numTestEPs, v6, 0}, takenUpCase{ModeFullNAT, 1, v6, 0})
	}
	for i := range out {
		out[i].vport = 38412 + 2*uint16(i)
	}
	return out
}

func (c takenUpCase) String() string {
	return fmt.Sprintf("%s/%d-endpoints/v6=%v", modeNames[c.mode], c.eps, c.v6)
}

// takeUpFirstPath sets up service id for c and sends a taken-up
// association's first packet (DATA, client address 1 to the VIP, no entry
// here): the endpoint and SNAT port it got.
func (e *env) takeUpFirstPath(id uint32, c takenUpCase, cport uint16, vtag uint32) (netip.Addr, uint16) {
	e.t.Helper()
	a := mhFamily(c.v6)
	vport, eport := c.vport, c.vport+1
	e.upsert(Service{ID: id, VIP: a.vip, SecondaryVIPs: []netip.Addr{a.vip2}, PortStart: vport, Proto: ProtoSCTP,
		Mode: c.mode, Select: SelectRR, Endpoints: testEndpoints(c.v6, c.eps, eport)})
	in := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: a.c1, dst: a.vip, proto: 132, sport: cport, dport: vport, ttl: 64,
		sctpVtag: vtag, sctpChunks: sctpData(40)}
	ret, out := e.run(in.frame())
	if ret != actRedirect {
		e.t.Fatalf("%v: first path: verdict %d", c, ret)
	}
	return natOut(e.t, out, c.v6)
}

// checkNextPath sends the association's first packet on another path
// (client address 2 to the second VIP: no entry of it, nor one of that
// client address through the first VIP to adopt) and wants it byte for
// byte toward ep from port.
func (e *env) checkNextPath(c takenUpCase, cport uint16, vtag uint32, ep netip.Addr, port uint16) {
	e.t.Helper()
	a := mhFamily(c.v6)
	vport, eport := c.vport, c.vport+1
	in := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: a.c2, dst: a.vip2, proto: 132, sport: cport, dport: vport, ttl: 64,
		sctpVtag: vtag, sctpChunks: sctpSimple(4)}
	ret, out := e.run(in.frame())
	if ret != actRedirect {
		e.t.Fatalf("%v: next path: verdict %d", c, ret)
	}
	src := a.c2
	if c.mode == ModeFullNAT {
		src = a.vip2
	}
	w := in
	w.srcMAC, w.dstMAC, w.ttl = lbMAC1, epMAC(epIndex(e.t, ep)), 63
	w.src, w.sport, w.dst, w.dport = src, port, ep, eport
	diffHex(e.t, fmt.Sprintf("%v: next path toward the first path's %s port %d", c, ep, port), out, w.frame())
}

// A daemon restart keeps the pinned conntrack but loads a new, empty note
// map: the taken-up association's next path must still reach the endpoint
// and SNAT port of its first (the note is made again from the entries).
func TestSCTPTakenUpAssociationKeepsItsPathsThroughARestart(t *testing.T) {
	e := newEnv(t)
	e.mhNeighbours()
	type first struct {
		ep   netip.Addr
		port uint16
	}
	firsts := map[int]first{}
	for i, c := range takenUpCases() {
		ep, port := e.takeUpFirstPath(uint32(60+i), c, uint16(54000+i), 0x0c0c0000+uint32(i))
		firsts[i] = first{ep, port}
	}
	e.reload(Config{MaxConns: 4096})
	for i, c := range takenUpCases() {
		e.checkNextPath(c, uint16(54000+i), 0x0c0c0000+uint32(i), firsts[i].ep, firsts[i].port)
	}
}

// A node that imports another node's taken-up association (the HA sync
// carries its entries, not the note: a second takeover, or the old active
// after its rejoin) gives the association's next path the endpoint and
// SNAT port of its first.
func TestSCTPImportedTakenUpAssociationKeepsItsPaths(t *testing.T) {
	e := newEnv(t)
	e.mhNeighbours()
	for i, c := range takenUpCases() {
		id, cport, vtag := uint32(70+i), uint16(55000+i), 0x0d0d0000+uint32(i)
		ep, port := e.takeUpFirstPath(id, c, cport, vtag)
		recs, err := e.d.DumpConntrack()
		if err != nil {
			t.Fatal(err)
		}
		// This node forgets the association (entries and note): what it
		// knows of it comes from the records, as on a peer.
		var keys []bpf.LbCtKey
		if err := e.d.ct().each(func(k bpf.LbCtKey, v *bpf.LbCtVal) {
			if v.Svc == id {
				keys = append(keys, k)
			}
		}); err != nil {
			t.Fatal(err)
		}
		if len(keys) != 2 {
			t.Fatalf("%v: %d entries of the first path, want its orig and reply", c, len(keys))
		}
		for _, k := range keys {
			if err := e.d.ct().delete(&k); err != nil {
				t.Fatal(err)
			}
		}
		var yk bpf.LbYoungKey
		var notes []bpf.LbYoungKey
		yit := e.d.objs.YoungAssocs.Iterate()
		var yv bpf.LbYoungVal
		for yit.Next(&yk, &yv) {
			notes = append(notes, yk)
		}
		for _, yk := range notes {
			if err := e.d.objs.YoungAssocs.Delete(&yk); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.d.ImportConntrack(recs); err != nil {
			t.Fatalf("%v: import: %v", c, err)
		}
		e.checkNextPath(c, cport, vtag, ep, port)
	}
}

// Only a taken-up association's orig entry stands for a note: not its
// reply entry, not an association whose INIT was seen (its client tag is
// known), not another protocol.
func TestTakenUpNoteOnlyFromTakenUpEntries(t *testing.T) {
	k := bpf.LbCtKey{Sport: htons(5000), Dport: htons(38412), Proto: uint8(ProtoSCTP)}
	v := bpf.LbCtVal{Svc: 3, Ep: 2, NatSport: htons(41000), VtagEp: 0xabcd}
	yk, yv, ok := takenUpNote(&k, &v)
	if !ok || yk != (bpf.LbYoungKey{Svc: 3, Vtag: 0xabcd, Cport: htons(5000), Vport: htons(38412)}) || yv != (bpf.LbYoungVal{Ep: 2, NatSport: htons(41000)}) {
		t.Fatalf("taken-up entry: %+v %+v %v", yk, yv, ok)
	}
	for name, change := range map[string]func(*bpf.LbCtKey, *bpf.LbCtVal){
		"reply":     func(_ *bpf.LbCtKey, v *bpf.LbCtVal) { v.Flags |= ctFReply },
		"INIT seen": func(_ *bpf.LbCtKey, v *bpf.LbCtVal) { v.VtagClient = 0x1234 },
		"no tag":    func(_ *bpf.LbCtKey, v *bpf.LbCtVal) { v.VtagEp = 0 },
		"TCP":       func(k *bpf.LbCtKey, _ *bpf.LbCtVal) { k.Proto = uint8(ProtoTCP) },
		"UDP":       func(k *bpf.LbCtKey, _ *bpf.LbCtVal) { k.Proto = uint8(ProtoUDP) },
	} {
		k2, v2 := k, v
		change(&k2, &v2)
		if _, _, ok := takenUpNote(&k2, &v2); ok {
			t.Errorf("%s: noted", name)
		}
	}
}
