package dataplane

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/bpf"
)

func TestValidateRejectsBadServices(t *testing.T) {
	good := Service{ID: 1, VIP: vipV4, PortStart: 80, Proto: ProtoTCP, Endpoints: testEndpoints(false, 2, 80)}
	for _, tc := range []struct {
		name    string
		mutate  func(*Service)
		wantErr string
	}{
		{"valid", func(*Service) {}, ""},
		{"id zero", func(s *Service) { s.ID = 0 }, "service id 0"},
		{"no vip", func(s *Service) { s.VIP = netip.Addr{} }, "vip"},
		{"icmp proto", func(s *Service) { s.Proto = ProtoICMP }, "proto"},
		{"unknown mode", func(s *Service) { s.Mode = 9 }, "mode"},
		{"unknown select", func(s *Service) { s.Select = 9 }, "select"},
		{"port zero", func(s *Service) { s.PortStart = 0 }, "port"},
		{"reversed range", func(s *Service) { s.PortStart, s.PortEnd = 90, 80 }, "reversed"},
		{"range too wide", func(s *Service) { s.PortStart, s.PortEnd = 1000, 1000+MaxPortRange }, "more than"},
		{"widest range", func(s *Service) { s.PortStart, s.PortEnd = 1000, 1000+MaxPortRange-1 }, ""},
		{"too many endpoints", func(s *Service) { s.Endpoints = testEndpoints(false, MaxEndpoints+1, 80) }, "at most"},
		{"family mismatch", func(s *Service) { s.Endpoints[1].Addr = epAddr(true, 1) }, "endpoints[1]"},
		{"invalid endpoint", func(s *Service) { s.Endpoints[0].Addr = netip.Addr{} }, "endpoints[0]"},
		{"dsr port translation", func(s *Service) { s.Mode = ModeDSR; s.Endpoints[0].Port = 81 }, "dsr"},
		{"negative idle", func(s *Service) { s.IdleTimeout = -time.Second }, "idle"},
		{"v4-mapped vip with v4 endpoints", func(s *Service) { s.VIP = netip.AddrFrom16(vipV4.As16()) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			s.Endpoints = append([]Endpoint(nil), good.Endpoints...)
			tc.mutate(&s)
			err := validate(s)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestSelectionTableIsWeightedAndSkipsDown(t *testing.T) {
	for _, tc := range []struct {
		name string
		eps  []Endpoint
		want map[uint8]int
	}{
		{"equal", []Endpoint{{Weight: 1}, {Weight: 1}}, map[uint8]int{0: 128, 1: 128}},
		{"weighted", []Endpoint{{Weight: 1}, {Weight: 3}}, map[uint8]int{0: 64, 1: 192}},
		{"zero weight counts as one", []Endpoint{{}, {Weight: 1}}, map[uint8]int{0: 128, 1: 128}},
		{"down skipped", []Endpoint{{Weight: 1, Down: true}, {Weight: 1}, {Weight: 1}}, map[uint8]int{1: 128, 2: 128}},
		{"all down", []Endpoint{{Weight: 1, Down: true}}, map[uint8]int{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := selectionTable(tc.eps)
			got := map[uint8]int{}
			if tab.N_up > 0 {
				for _, s := range tab.Slot {
					got[s]++
				}
			}
			if int(tab.N_up) != len(tc.want) || len(got) != len(tc.want) {
				t.Fatalf("n_up %d slots %v, want %v", tab.N_up, got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Fatalf("slots %v, want %v", got, tc.want)
				}
			}
			// Interleaved: equal weights never repeat an endpoint back to back.
			if tc.name == "equal" && tab.Slot[0] == tab.Slot[1] {
				t.Fatalf("not interleaved: %v", tab.Slot[:8])
			}
		})
	}
}

func serviceKeysIn(t *testing.T, d *Datapath) map[bpf.LbSvcKey]uint32 {
	t.Helper()
	var (
		k  bpf.LbSvcKey
		id uint32
	)
	out := map[bpf.LbSvcKey]uint32{}
	it := d.objs.Services.Iterate()
	for it.Next(&k, &id) {
		out[k] = id
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func vipsIn(t *testing.T, d *Datapath) int {
	t.Helper()
	var (
		a bpf.LbAddr16
		v uint32
		n int
	)
	it := d.objs.Vips.Iterate()
	for it.Next(&a, &v) {
		n++
	}
	return n
}

func TestServiceProgrammingLifecycle(t *testing.T) {
	e := newEnv(t)
	s := Service{ID: 30, VIP: vipV4, PortStart: 1000, PortEnd: 1009, Proto: ProtoUDP, Endpoints: testEndpoints(false, 2, 0)}
	e.upsert(s)
	e.upsert(s) // idempotent
	if keys := serviceKeysIn(t, e.d); len(keys) != 10 {
		t.Fatalf("%d keys, want 10", len(keys))
	}
	// Port 0 on the endpoint keeps the client's destination port.
	ret, out := e.run(udpTo(clientV4, vipV4, 5555, 1005).frame())
	if ret != actRedirect {
		t.Fatalf("verdict %d", ret)
	}
	want := udpTo(clientV4, vipV4, 5555, 1005)
	ep := epOf(t, ret, out)
	want.srcMAC, want.dstMAC, want.ttl, want.dst = lbMAC1, epMAC(ep), 63, epAddr(false, ep)
	diffHex(t, "range forward", out, want.frame())

	// Another service may not take a key already owned.
	clash := Service{ID: 31, VIP: vipV4, PortStart: 1009, PortEnd: 1010, Proto: ProtoUDP, Endpoints: testEndpoints(false, 1, 0)}
	if err := e.d.UpsertService(clash); err == nil || !strings.Contains(err.Error(), "already belongs") {
		t.Fatalf("clash error %v", err)
	}
	// Shrinking the range removes the stale keys.
	s.PortEnd = 1001
	e.upsert(s)
	if keys := serviceKeysIn(t, e.d); len(keys) != 2 {
		t.Fatalf("%d keys after shrink, want 2", len(keys))
	}
	e.upsert(Service{ID: 32, VIP: vipV6, PortStart: 1, Proto: ProtoTCP, Endpoints: testEndpoints(true, 1, 0)})
	if n := vipsIn(t, e.d); n != 2 {
		t.Fatalf("%d vips, want 2", n)
	}
	if err := e.d.DeleteService(30); err != nil {
		t.Fatal(err)
	}
	if keys := serviceKeysIn(t, e.d); len(keys) != 1 {
		t.Fatalf("%d keys after delete, want 1", len(keys))
	}
	if n := e.ctEntries(); n != 0 {
		t.Fatalf("%d conntrack entries survive the delete", n)
	}
	if n := vipsIn(t, e.d); n != 1 {
		t.Fatalf("%d vips after delete, want 1", n)
	}
	if ret, _ := e.run(udpTo(clientV4, vipV4, 5556, 1000).frame()); ret != actOK {
		t.Fatalf("deleted service still served: verdict %d", ret)
	}
	if err := e.d.DeleteService(0); err == nil {
		t.Fatal("delete of id 0 accepted")
	}
	if _, err := e.d.ServiceStats(1, MaxEndpoints+1); err == nil {
		t.Fatal("stats for too many endpoints accepted")
	}
}
