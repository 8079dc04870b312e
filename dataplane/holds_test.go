package dataplane

import (
	"net/netip"
	"testing"
)

// TestHoldsRecordFollowsTheTables: HoldsRecord says whether a record's key
// is in the datapath now, for both kinds (conntrack entry, SCTP
// association): true for what an SCTP INIT created and a peer imported,
// false once deleted, and an error naming a kind it does not know. The HA
// sync asks it when a deletion is read after an import may have written
// the key again.
func TestHoldsRecordFollowsTheTables(t *testing.T) {
	h := newHAPair(t)
	a := mhFamily(false)
	h.upsert(Service{ID: 9, VIP: a.vip, SecondaryVIPs: []netip.Addr{a.vip2}, PortStart: 38412, Proto: ProtoSCTP,
		Endpoints: testEndpoints(false, 1, 38412)})
	init := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: a.c1, dst: a.vip, proto: 132, sport: 45001, dport: 38412,
		sctpChunks: sctpInitWith(1, 0xa1, paramAddr(a.c1), paramAddr(a.c2))}
	if ret, _ := h.a.run(init.frame()); ret != actRedirect {
		t.Fatalf("INIT verdict %d", ret)
	}
	recs, err := h.a.d.DumpConntrack()
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[uint16]int{}
	for _, r := range recs {
		kinds[r.Kind]++
		for _, d := range []*Datapath{h.a.d, h.b.d} {
			held, err := d.HoldsRecord(r)
			if err != nil {
				t.Fatalf("HoldsRecord(%s): %v", DescribeKey(r), err)
			}
			want := d == h.a.d
			if held != want {
				t.Errorf("HoldsRecord(%s) on %s = %v before the import, want %v", DescribeKey(r), map[bool]string{true: "A", false: "B"}[d == h.a.d], held, want)
			}
		}
	}
	if kinds[RecordConntrack] == 0 || kinds[RecordAssoc] == 0 {
		t.Fatalf("A's dump has %v records by kind, want entries and an association", kinds)
	}
	if err := h.b.d.ImportConntrack(recs); err != nil {
		t.Fatal(err)
	}
	var dels []Record
	for _, r := range recs {
		if held, err := h.b.d.HoldsRecord(r); err != nil || !held {
			t.Errorf("HoldsRecord(%s) on B after the import = %v %v, want true", DescribeKey(r), held, err)
		}
		dels = append(dels, Record{Kind: r.Kind, Key: r.Key, Deleted: true})
	}
	if err := h.b.d.ImportConntrack(dels); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if held, err := h.b.d.HoldsRecord(r); err != nil || held {
			t.Errorf("HoldsRecord(%s) on B after the deletion = %v %v, want false", DescribeKey(r), held, err)
		}
	}
	if _, err := h.b.d.HoldsRecord(Record{Kind: 99, Key: recs[0].Key}); err == nil {
		t.Errorf("HoldsRecord of kind 99: no error")
	}
}
