package ipam

import (
	"strings"
	"testing"
)

func TestParseRangeAcceptsCIDRsRangesAndAddresses(t *testing.T) {
	tests := []struct {
		in          string
		first, last string
	}{
		{"10.0.0.0/24", "10.0.0.1", "10.0.0.254"},
		{"123.123.123.1/24", "123.123.123.1", "123.123.123.254"},
		{"10.0.0.0/30", "10.0.0.1", "10.0.0.2"},
		{"10.0.0.0/31", "10.0.0.0", "10.0.0.1"},
		{"10.0.0.7/32", "10.0.0.7", "10.0.0.7"},
		{"10.0.0.10-10.0.0.20", "10.0.0.10", "10.0.0.20"},
		{" 10.0.0.10 - 10.0.0.10 ", "10.0.0.10", "10.0.0.10"},
		{"192.0.2.9", "192.0.2.9", "192.0.2.9"},
		{"2001:db8::/126", "2001:db8::1", "2001:db8::3"},
		{"2001:db8::/127", "2001:db8::", "2001:db8::1"},
		{"2001:db8::5/128", "2001:db8::5", "2001:db8::5"},
		// kube-loxilb docs: cidr6Pools=defaultPool=3ffe::1/96; the all-zeros
		// (subnet-router anycast) address is never handed out.
		{"3ffe::1/96", "3ffe::1", "3ffe::ffff:ffff"},
		{"2001:db8::10-2001:db8::1f", "2001:db8::10", "2001:db8::1f"},
		{"::ffff:10.0.0.1-::ffff:10.0.0.2", "10.0.0.1", "10.0.0.2"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRange(tt.in)
			if err != nil {
				t.Fatalf("ParseRange(%q): %v", tt.in, err)
			}
			if r.First.String() != tt.first || r.Last.String() != tt.last {
				t.Fatalf("ParseRange(%q) = %s..%s, want %s..%s", tt.in, r.First, r.Last, tt.first, tt.last)
			}
		})
	}
}

func TestParseRangeRejectsBadInput(t *testing.T) {
	tests := []struct{ in, wantErr string }{
		{"", "empty"},
		{"10.0.0.0/33", "invalid CIDR"},
		{"10.0.0.300/24", "invalid CIDR"},
		{"10.0.0.20-10.0.0.10", "ends before it starts"},
		{"10.0.0.1-2001:db8::1", "mixes IPv4 and IPv6"},
		{"10.0.0.1-", "invalid range end"},
		{"-10.0.0.1", "invalid range start"},
		{"pool", "invalid address range"},
		{"fe80::1%eth0", "zoned"},
		{"::ffff:10.0.0.0/120", "IPv4-mapped"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseRange(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseRange(%q) err = %v, want containing %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestParsePoolFlagGroupsRangesByName(t *testing.T) {
	pools, err := ParsePoolFlag("defaultPool=10.0.0.0/24, pool2=10.1.0.10-10.1.0.20,defaultPool=10.2.0.5", IPv4)
	if err != nil {
		t.Fatal(err)
	}
	if len(pools) != 2 || pools[0].Name != "defaultPool" || len(pools[0].Ranges) != 2 || pools[1].Name != "pool2" {
		t.Fatalf("pools = %+v", pools)
	}
	if got := pools[0].Ranges[1].String(); got != "10.2.0.5" {
		t.Fatalf("second defaultPool range = %s", got)
	}
	empty, err := ParsePoolFlag("", IPv4)
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty flag: %v %v", empty, err)
	}
}

func TestParsePoolFlagRejectsBadEntries(t *testing.T) {
	tests := []struct {
		name, in string
		fam      Family
		wantErr  string
	}{
		{"missing equals", "10.0.0.0/24", IPv4, "want name=CIDR"},
		{"empty name", "=10.0.0.0/24", IPv4, "invalid name"},
		{"bad name", "a b=10.0.0.0/24", IPv4, "invalid name"},
		{"bad range", "p=10.0.0/24", IPv4, `pool "p"`},
		{"v6 in v4 flag", "p=2001:db8::/120", IPv4, "is IPv6, want IPv4"},
		{"v4 in v6 flag", "p=10.0.0.0/24", IPv6, "is IPv4, want IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePoolFlag(tt.in, tt.fam)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParsePoolYAML(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
		ranges  int
	}{
		{"dual stack pool", "pools:\n- name: defaultPool\n  addresses: [\"10.0.0.0/24\", \"2001:db8::/120\"]\n", "", 2},
		{"unknown field", "pools:\n- name: p\n  adresses: [\"10.0.0.0/24\"]\n", "unknown field", 0},
		{"no addresses", "pools:\n- name: p\n", "no addresses", 0},
		{"bad name", "pools:\n- name: \"\"\n  addresses: [\"10.0.0.1\"]\n", "pools[0].name", 0},
		{"bad address", "pools:\n- name: p\n  addresses: [\"10.0.0.1\", \"nope\"]\n", "pools[0].addresses[1]", 0},
		{"not yaml", ":\n\t- [", "pool file", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pools, err := ParsePoolYAML([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(pools) != 1 || len(pools[0].Ranges) != tt.ranges {
				t.Fatalf("pools = %+v", pools)
			}
		})
	}
}

func TestNewRejectsInvalidConfigs(t *testing.T) {
	r := func(s string) Range {
		x, err := ParseRange(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"overlap across pools", Config{Pools: []PoolConfig{{Name: "a", Ranges: []Range{r("10.0.0.0/24")}}, {Name: "b", Ranges: []Range{r("10.0.0.100-10.0.1.5")}}}}, "overlaps"},
		{"overlap in pool", Config{Pools: []PoolConfig{{Name: "a", Ranges: []Range{r("10.0.0.1-10.0.0.5"), r("10.0.0.5")}}}}, "overlaps"},
		{"duplicate name", Config{Pools: []PoolConfig{{Name: "a", Ranges: []Range{r("10.0.0.1")}}, {Name: "a", Ranges: []Range{r("10.0.0.2")}}}}, "defined twice"},
		{"empty pool", Config{Pools: []PoolConfig{{Name: "a"}}}, "no ranges"},
		{"bad name", Config{Pools: []PoolConfig{{Name: "-a", Ranges: []Range{r("10.0.0.1")}}}}, "invalid name"},
		{"zero range", Config{Pools: []PoolConfig{{Name: "a", Ranges: []Range{{}}}}}, "invalid range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
	// v4 and v6 ranges never overlap each other even with equal bytes.
	if _, err := New(Config{Pools: []PoolConfig{{Name: "a", Ranges: []Range{r("0.0.0.1"), r("::1")}}}}); err != nil {
		t.Fatalf("v4+v6: %v", err)
	}
}

func TestMergePoolsJoinsSameName(t *testing.T) {
	v4, _ := ParsePoolFlag("defaultPool=10.0.0.0/24", IPv4)
	v6, _ := ParsePoolFlag("defaultPool=2001:db8::/120,six=2001:db8:1::/120", IPv6)
	m := MergePools(v4, v6)
	if len(m) != 2 || len(m[0].Ranges) != 2 || m[1].Name != "six" {
		t.Fatalf("merged = %+v", m)
	}
	if _, err := New(Config{Pools: m}); err != nil {
		t.Fatal(err)
	}
}

func FuzzParsePoolFlag(f *testing.F) {
	for _, s := range []string{"a=10.0.0.0/24", "a=10.0.0.1-10.0.0.9,b=2001:db8::/64", "=", ",,", "a=::ffff:1.2.3.4/128", "a=1.2.3.4-1.2.3.3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pools, err := ParsePoolFlag(s, 0)
		if err != nil {
			return
		}
		for _, p := range pools {
			for _, r := range p.Ranges {
				if !r.First.IsValid() || r.Last.Less(r.First) || r.First.BitLen() != r.Last.BitLen() {
					t.Fatalf("%q produced invalid range %v", s, r)
				}
				if !r.Contains(r.First) || !r.Contains(r.Last) {
					t.Fatalf("range %v does not contain its ends", r)
				}
			}
		}
		a, err := New(Config{Pools: pools})
		if err != nil {
			return
		}
		for _, p := range pools {
			fam := p.Ranges[0].Family()
			addr, err := a.Allocate(Owner{Service: "x"}, p.Name, fam)
			if err != nil {
				t.Fatalf("first allocation from fresh pool %s: %v", p.Name, err)
			}
			if name, ok := a.PoolOf(addr); !ok || name != p.Name {
				t.Fatalf("allocated %s not in pool %s", addr, p.Name)
			}
		}
	})
}

func FuzzParsePoolYAML(f *testing.F) {
	f.Add([]byte("pools:\n- name: a\n  addresses: [\"10.0.0.0/24\"]\n"))
	f.Add([]byte("pools: 3"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pools, err := ParsePoolYAML(b)
		if err != nil {
			return
		}
		for _, p := range pools {
			if len(p.Ranges) == 0 {
				t.Fatalf("pool %s without ranges accepted", p.Name)
			}
		}
	})
}
