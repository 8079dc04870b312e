package ipam

import (
	"net/netip"
	"testing"
)

// IPPool objects come and go while Services hold addresses: replacing the
// pool set must never free or hand out twice an address a Service holds.
func TestSetPoolsKeepsHeldAddresses(t *testing.T) {
	a := newAlloc(t, "a=10.0.0.1-10.0.0.2", "")
	o1, o2 := Owner{Service: "ns/one"}, Owner{Service: "ns/two"}
	x, err := a.Allocate(o1, "a", IPv4)
	if err != nil || x != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("allocate: %v %v", x, err)
	}
	// Pool a removed, pool b covers the held address and one more.
	r, _ := ParseRange("10.0.0.1-10.0.0.3")
	if err := a.SetPools(Config{Pools: []PoolConfig{{Name: "b", Ranges: []Range{r}}}}); err != nil {
		t.Fatal(err)
	}
	if a.HasPool("a") || !a.HasPool("b") {
		t.Fatalf("pools after SetPools: %+v", a.Pools())
	}
	if got := a.IPs("ns/one"); len(got) != 1 || got[0] != x {
		t.Fatalf("held addresses after SetPools: %v", got)
	}
	y, err := a.Allocate(o2, "b", IPv4)
	if err != nil || y != netip.MustParseAddr("10.0.0.2") {
		t.Fatalf("allocate from the new pool: %v %v (must skip the held 10.0.0.1)", y, err)
	}
	// An overlapping set is refused and the old one stays.
	if err := a.SetPools(Config{Pools: []PoolConfig{{Name: "b", Ranges: []Range{r}}, {Name: "c", Ranges: []Range{r}}}}); err == nil {
		t.Fatal("overlapping pools accepted")
	}
	if !a.HasPool("b") || a.HasPool("c") {
		t.Fatalf("failed SetPools changed the pools: %+v", a.Pools())
	}
}

func TestAvoidBuggyIPsSkipsDotZeroAndDot255(t *testing.T) {
	r, _ := ParseRange("10.0.0.254-10.0.1.1")
	r6, _ := ParseRange("2001:db8::ff-2001:db8::100")
	for _, avoid := range []bool{false, true} {
		a, err := New(Config{Pools: []PoolConfig{{Name: "p", Ranges: []Range{r, r6}, AvoidBuggyIPs: avoid}}})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for i := 0; ; i++ {
			x, err := a.Allocate(Owner{Service: "ns/s" + string(rune('a'+i))}, "p", IPv4)
			if err != nil {
				break
			}
			got = append(got, x.String())
		}
		want := []string{"10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"}
		if avoid {
			want = []string{"10.0.0.254", "10.0.1.1"}
		}
		if len(got) != len(want) {
			t.Fatalf("avoid=%v: allocated %v, want %v", avoid, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("avoid=%v: allocated %v, want %v", avoid, got, want)
			}
		}
		// IPv6 has no such addresses: ::ff and ::100 are both given.
		n := 0
		for i := 0; i < 3; i++ {
			if _, err := a.Allocate(Owner{Service: "ns/v6-" + string(rune('a'+i))}, "p", IPv6); err == nil {
				n++
			}
		}
		if n != 2 {
			t.Fatalf("avoid=%v: %d IPv6 addresses, want 2", avoid, n)
		}
		// A static address is still accepted.
		if err := a.Assign(Owner{Service: "ns/static"}, netip.MustParseAddr("10.0.1.0")); err != nil && avoid {
			t.Fatalf("static .0 refused: %v", err)
		}
	}
}
