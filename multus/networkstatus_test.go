package multus

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

const sample = `[{
    "name": "cbr0",
    "interface": "eth0",
    "ips": ["10.244.1.5"],
    "mac": "0a:58:0a:f4:01:05",
    "default": true,
    "dns": {}
},{
    "name": "ran/macvlan-n2",
    "interface": "net1",
    "ips": ["192.168.10.5", "fd00:10::5"],
    "mac": "86:1d:96:ff:55:0d",
    "dns": {"nameservers": ["10.0.0.10"]}
},{
    "name": "ran/macvlan-n3",
    "interface": "net2",
    "ips": ["192.168.20.5/24"]
}]`

func TestParseNetworkStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Network
		wantErr string
	}{
		{"multus sample", sample, []Network{
			{Name: "cbr0", Interface: "eth0", Default: true, Addrs: []netip.Addr{netip.MustParseAddr("10.244.1.5")}},
			{Name: "ran/macvlan-n2", Interface: "net1", Addrs: []netip.Addr{netip.MustParseAddr("192.168.10.5"), netip.MustParseAddr("fd00:10::5")}},
			{Name: "ran/macvlan-n3", Interface: "net2", Addrs: []netip.Addr{netip.MustParseAddr("192.168.20.5")}},
		}, ""},
		{"entry without ips", `[{"name":"a/b"}]`, []Network{{Name: "a/b"}}, ""},
		{"empty list", `[]`, []Network{}, ""},
		{"empty value", ``, nil, "empty"},
		{"not json", `{name: x`, nil, "network-status"},
		{"object not list", `{"name":"x"}`, nil, "cannot unmarshal"},
		{"bad ip", `[{"name":"a/b","ips":["10.0.0.300"]}]`, nil, "ips[0]"},
		{"missing name", `[{"ips":["10.0.0.1"]}]`, nil, "no name"},
		{"ips wrong type", `[{"name":"a","ips":"10.0.0.1"}]`, nil, "cannot unmarshal"},
		{"huge", "[" + strings.Repeat(" ", 300<<10) + "]", nil, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestAddressesMatchesBareAndQualifiedNames(t *testing.T) {
	nets, err := Parse(sample)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		want, ns string
		addrs    []string
		err      error
	}{
		{"macvlan-n2", "ran", []string{"192.168.10.5", "fd00:10::5"}, nil},
		{"ran/macvlan-n3", "other", []string{"192.168.20.5"}, nil},
		{"macvlan-n2", "other", nil, ErrNoNetwork},
		{"cbr0", "ran", []string{"10.244.1.5"}, nil},
		{"nope", "ran", nil, ErrNoNetwork},
	}
	for _, tt := range tests {
		t.Run(tt.ns+"/"+tt.want, func(t *testing.T) {
			got, err := Addresses(nets, tt.want, tt.ns)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, a := range got {
				s = append(s, a.String())
			}
			if !reflect.DeepEqual(s, tt.addrs) {
				t.Fatalf("got %v want %v", s, tt.addrs)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(sample)
	f.Add(`[{"name":"a","ips":["1.2.3.4/33"]}]`)
	f.Add(`[null]`)
	f.Add(`null`)
	f.Fuzz(func(t *testing.T, s string) {
		nets, err := Parse(s)
		if err != nil {
			return
		}
		for _, n := range nets {
			if n.Name == "" {
				t.Fatal("entry without name accepted")
			}
			for _, a := range n.Addrs {
				if !a.IsValid() {
					t.Fatal("invalid address accepted")
				}
			}
			if _, err := Addresses(nets, n.Name, "ns"); err != nil {
				t.Fatalf("own network %q not found: %v", n.Name, err)
			}
		}
	})
}
