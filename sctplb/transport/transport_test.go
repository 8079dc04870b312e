package transport

import (
	"net/netip"
	"testing"
)

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in      string
		want    Endpoint
		wantErr bool
	}{
		{"10.0.0.1:38412", Endpoint{Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Port: 38412}, false},
		{"10.0.0.1,10.1.0.1:38412", Endpoint{Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.1.0.1")}, Port: 38412}, false},
		{"[fd00::1]:38412", Endpoint{Addrs: []netip.Addr{netip.MustParseAddr("fd00::1")}, Port: 38412}, false},
		{"[fd00::1],10.0.0.1:1", Endpoint{Addrs: []netip.Addr{netip.MustParseAddr("fd00::1"), netip.MustParseAddr("10.0.0.1")}, Port: 1}, false},
		{":38412", Endpoint{Port: 38412}, false},
		{"*:38412", Endpoint{Port: 38412}, false},
		{"10.0.0.1", Endpoint{}, true},
		{"10.0.0.1:0", Endpoint{}, true},
		{"10.0.0.1:70000", Endpoint{}, true},
		{"[fd00::1]", Endpoint{}, true},
		{"bogus:1", Endpoint{}, true},
		{"10.0.0.1,:1", Endpoint{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseEndpoint(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if got.Port != tc.want.Port || len(got.Addrs) != len(tc.want.Addrs) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got.Addrs {
				if got.Addrs[i] != tc.want.Addrs[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"10.0.0.1:38412", "[fd00::1],10.0.0.1:1", ":1", "]:", "[:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEndpoint(s)
		if err == nil && e.Port == 0 {
			t.Fatalf("accepted %q with port 0", s)
		}
	})
}
