package main

import (
	"strings"
	"testing"

	"github.com/telcolb/telcolb/api"
)

func TestWideListingShowsN2ServicesWithUEsPerAMF(t *testing.T) {
	st := api.ServiceStatus{
		Service: api.Service{Name: "amf", VIP: "10.96.0.38", Port: 38412, Protocol: api.ProtocolSCTP, N2: true,
			Endpoints: []api.Endpoint{{Address: "10.0.1.1", Port: 38412}, {Address: "10.0.1.2", Port: 38412}}},
		Endpoints: []api.EndpointStatus{
			{Address: "10.0.1.1", Port: 38412, Weight: 1, Healthy: true, ActiveConnections: 7},
			{Address: "10.0.1.2", Port: 38412, Weight: 1, Healthy: true, ActiveConnections: 5},
		},
		ActiveConnections: 12,
	}
	tests := []struct {
		name string
		wide bool
		want []string
	}{
		{"narrow", false, []string{"amf | 10.96.0.38 | 38412 | sctp | n2 | rr | 2/2 up | 12 | 0 | 0"}},
		{"wide", true, []string{
			"amf | 10.96.0.38 | 38412 | sctp | n2 | rr | none | 10.0.1.1:38412 | 1 | up | 0 | 0 | 0 | 7",
			"amf | 10.96.0.38 | 38412 | sctp | n2 | rr | none | 10.0.1.2:38412 | 1 | up | 0 | 0 | 0 | 5",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := printServices(&b, []api.ServiceStatus{st}, tt.wide); err != nil {
				t.Fatal(err)
			}
			got := lines(b.String())
			if len(got) != len(tt.want)+1 {
				t.Fatalf("got %q", got)
			}
			for i, w := range tt.want {
				if got[i+1] != w {
					t.Errorf("row %d = %q, want %q", i, got[i+1], w)
				}
			}
		})
	}
}

func TestWideListingShowsPFCPServicesWithSessionsPerUPF(t *testing.T) {
	st := api.ServiceStatus{
		Service: api.Service{Name: "n4", VIP: "10.96.0.88", Port: 8805, Protocol: api.ProtocolUDP, PFCP: true,
			Endpoints: []api.Endpoint{{Address: "10.0.2.1", Port: 8805}, {Address: "10.0.2.2", Port: 8805}}},
		Endpoints: []api.EndpointStatus{
			{Address: "10.0.2.1", Port: 8805, Weight: 1, Healthy: true, ActiveConnections: 3300},
			{Address: "10.0.2.2", Port: 8805, Weight: 1, Healthy: false, ActiveConnections: 0},
		},
		ActiveConnections: 3300,
	}
	var b strings.Builder
	if err := printServices(&b, []api.ServiceStatus{st}, true); err != nil {
		t.Fatal(err)
	}
	got := lines(b.String())
	want := []string{
		"n4 | 10.96.0.88 | 8805 | udp | pfcp | rr | none | 10.0.2.1:8805 | 1 | up | 0 | 0 | 0 | 3300",
		"n4 | 10.96.0.88 | 8805 | udp | pfcp | rr | none | 10.0.2.2:8805 | 1 | down | 0 | 0 | 0 | 0",
	}
	if len(got) != 3 || got[1] != want[0] || got[2] != want[1] {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestWideListingShowsDiameterServicesWithSessionsPerServer(t *testing.T) {
	st := api.ServiceStatus{
		Service: api.Service{Name: "gy", VIP: "10.96.0.68", Port: 3868, Protocol: api.ProtocolTCP,
			Diameter:  &api.DiameterSpec{OriginHost: "dra.example", OriginRealm: "example"},
			Endpoints: []api.Endpoint{{Address: "10.0.3.1", Port: 3868}, {Address: "10.0.3.2", Port: 3868}}},
		Endpoints: []api.EndpointStatus{
			{Address: "10.0.3.1", Port: 3868, Weight: 1, Healthy: true, ActiveConnections: 5001},
			{Address: "10.0.3.2", Port: 3868, Weight: 1, Healthy: true, ActiveConnections: 4999},
		},
		ActiveConnections: 10000,
	}
	var b strings.Builder
	if err := printServices(&b, []api.ServiceStatus{st}, true); err != nil {
		t.Fatal(err)
	}
	got := lines(b.String())
	want := []string{
		"gy | 10.96.0.68 | 3868 | tcp | diameter | rr | none | 10.0.3.1:3868 | 1 | up | 0 | 0 | 0 | 5001",
		"gy | 10.96.0.68 | 3868 | tcp | diameter | rr | none | 10.0.3.2:3868 | 1 | up | 0 | 0 | 0 | 4999",
	}
	if len(got) != len(want)+1 || got[1] != want[0] || got[2] != want[1] {
		t.Fatalf("got %q, want %q", got, want)
	}
}
