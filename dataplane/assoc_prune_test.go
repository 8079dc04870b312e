package dataplane

import (
	"net/netip"
	"testing"
	"time"

	"github.com/telcolb/telcolb/bpf"
)

// An SCTP association's record (its paths, tags, endpoint) lives as long
// as an entry of the association does: an ageing round that keeps the
// association keeps the record, one that expires it removes the record
// with its entries, and a flush removes every record. The round judges
// the records from the same conntrack walk it ages from.
func TestAssociationRecordsGoWithTheirEntries(t *testing.T) {
	e := newEnv(t)
	e.mhNeighbours()
	a := mhFamily(false)
	e.upsert(Service{ID: 8, VIP: a.vip, SecondaryVIPs: []netip.Addr{a.vip2}, PortStart: 38412, Proto: ProtoSCTP,
		Endpoints: testEndpoints(false, 2, 38412)})
	records := func() []bpf.LbAssocKey {
		t.Helper()
		keys, err := e.d.assocKeys()
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	open := func(tag uint32, sport uint16) {
		t.Helper()
		init := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: a.c1, dst: a.vip, proto: 132, sport: sport, dport: 38412,
			sctpChunks: sctpInitWith(1, tag, paramAddr(a.c1), paramAddr(a.c2))}
		if ret, _ := e.run(init.frame()); ret != actRedirect {
			t.Fatalf("INIT %#x: verdict %d", tag, ret)
		}
	}
	open(0xa1, 45000)
	open(0xc3, 45001)
	if n := len(records()); n != 2 {
		t.Fatalf("%d association records after two INITs, want 2", n)
	}
	conns := len(e.conns())
	now := e.d.now()
	if _, err := e.d.ageOnce(now); err != nil {
		t.Fatal(err)
	}
	if n := len(records()); n != 2 || len(e.conns()) != conns {
		t.Fatalf("a round that expired nothing left %d records and %d connections, want 2 and %d", n, len(e.conns()), conns)
	}
	if _, err := e.d.ageOnce(now + uint64(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, c := len(records()), len(e.conns()); n != 0 || c != 0 {
		t.Fatalf("a round past every timeout left %d records and %d connections, want none", n, c)
	}

	open(0xa1, 45000)
	if n := len(records()); n != 1 {
		t.Fatalf("%d association records after a new INIT, want 1", n)
	}
	if err := e.d.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	if n := len(records()); n != 0 {
		t.Fatalf("%d association records after a flush, want none", n)
	}
}
