package controller

import (
	"math/big"
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/telcolb/telcolb/k8s/apis/v1alpha1"
	"github.com/telcolb/telcolb/k8s/ipam"
)

// FuzzParseIPPool: any IPPool spec (what a user or a mutated object can
// hold) gives either a Valid pool whose ranges overlap neither each other
// nor the pools accepted before, or a problem naming a spec field; never a
// panic. The prefixes advertised for a valid pool cover exactly its ranges
// (CIDRs as written, before the allocator leaves out network/broadcast).
func FuzzParseIPPool(f *testing.F) {
	f.Add("10.0.0.0/24", "10.0.1.1", "10.0.1.9", "edge")
	f.Add("2001:db8::/120", "2001:db8:1::1", "2001:db8:1::ff", "v6")
	f.Add("10.0.0.1/33", "x", "y", "bad")
	f.Add("10.9.0.0/30", "10.9.0.1", "10.9.0.2", "overlap")
	f.Add("::ffff:10.0.0.0/120", "10.0.0.9", "10.0.0.1", "mapped")
	f.Add("10.0.0.0/0", "0.0.0.0", "255.255.255.255", "all")
	accepted := []ipam.PoolConfig{{Name: "flag", Ranges: []ipam.Range{{First: netip.MustParseAddr("10.9.0.1"), Last: netip.MustParseAddr("10.9.0.2")}}}}
	f.Fuzz(func(t *testing.T, cidr, start, end, name string) {
		pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.IPPoolSpec{CIDRs: []string{cidr}, Ranges: []v1alpha1.IPRange{{Start: start, End: end}}}}
		pc, pol, reason, msg := parseIPPool(pool, map[string]bool{"flag": true}, accepted)
		if reason != v1alpha1.ReasonValid {
			if !strings.HasPrefix(msg, "spec") && !strings.HasPrefix(msg, "metadata.name") {
				t.Fatalf("problem %q does not start with the field", msg)
			}
			return
		}
		if _, err := ipam.New(ipam.Config{Pools: append(append([]ipam.PoolConfig(nil), accepted...), pc)}); err != nil {
			t.Fatalf("valid pool %+v refused by the allocator: %v", pc, err)
		}
		if len(pol.prefixes) == 0 {
			t.Fatal("valid pool without prefixes")
		}
		// Every allocator range lies inside the advertised prefixes.
		for _, r := range pc.Ranges {
			for _, a := range []netip.Addr{r.First, r.Last} {
				in := false
				for _, p := range pol.prefixes {
					in = in || p.Contains(a)
				}
				if !in {
					t.Fatalf("%s of range %s not in prefixes %v", a, r, pol.prefixes)
				}
			}
		}
	})
}

// FuzzRangePrefixes: the CIDRs for a range are aligned, ascending,
// contiguous and cover exactly first..last.
func FuzzRangePrefixes(f *testing.F) {
	f.Add([]byte{10, 0, 0, 1}, []byte{10, 0, 0, 200})
	f.Add([]byte{0, 0, 0, 0}, []byte{255, 255, 255, 255})
	f.Add([]byte{0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3}, []byte{0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		first, ok1 := netip.AddrFromSlice(a)
		last, ok2 := netip.AddrFromSlice(b)
		if !ok1 || !ok2 || first.BitLen() != last.BitLen() {
			return
		}
		if last.Less(first) {
			first, last = last, first
		}
		ps := rangePrefixes(ipam.Range{First: first, Last: last})
		if len(ps) == 0 || len(ps) > 2*first.BitLen() {
			t.Fatalf("%s-%s: %d prefixes", first, last, len(ps))
		}
		next := first
		total := new(big.Int)
		for i, p := range ps {
			if p.Masked() != p || p.Addr() != next {
				t.Fatalf("%s-%s: prefix %d %s not aligned at %s (%v)", first, last, i, p, next, ps)
			}
			total.Add(total, new(big.Int).Lsh(big.NewInt(1), uint(first.BitLen()-p.Bits())))
			next = lastOf(p).Next()
		}
		if lastOf(ps[len(ps)-1]) != last {
			t.Fatalf("%s-%s: ends at %s (%v)", first, last, lastOf(ps[len(ps)-1]), ps)
		}
		want := new(big.Int).Sub(new(big.Int).SetBytes(last.AsSlice()), new(big.Int).SetBytes(first.AsSlice()))
		if want.Add(want, big.NewInt(1)).Cmp(total) != 0 {
			t.Fatalf("%s-%s: prefixes hold %s addresses, range %s", first, last, total, want)
		}
	})
}
