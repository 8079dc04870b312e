// Package ipam is the controller's VIP allocator: named pools of IPv4/IPv6
// CIDRs and ranges, exclusive or key-shared addresses, and typed errors the
// controller turns into Service conditions. It is pure (no Kubernetes, no
// I/O) so every allocation rule is covered by table tests.
package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Family is an IP address family.
type Family int

const (
	// IPv4 pools hand out IPv4 addresses.
	IPv4 Family = 4
	// IPv6 pools hand out IPv6 addresses.
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	default:
		return fmt.Sprintf("Family(%d)", int(f))
	}
}

// FamilyOf returns the family of addr (IPv4-mapped IPv6 counts as IPv4).
func FamilyOf(addr netip.Addr) Family {
	if addr.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

// Range is an inclusive run of addresses of one family.
type Range struct {
	First netip.Addr
	Last  netip.Addr
}

func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// Family of the range's addresses.
func (r Range) Family() Family { return FamilyOf(r.First) }

// Contains reports whether addr lies in r.
func (r Range) Contains(addr netip.Addr) bool {
	addr = addr.Unmap()
	return addr.BitLen() == r.First.BitLen() && r.First.Compare(addr) <= 0 && addr.Compare(r.Last) <= 0
}

func (r Range) overlaps(o Range) bool {
	return r.First.BitLen() == o.First.BitLen() && r.First.Compare(o.Last) <= 0 && o.First.Compare(r.Last) <= 0
}

// PoolConfig is one named pool; one name may hold both families, which is
// how a dual-stack Service gets one address of each from the same pool.
type PoolConfig struct {
	Name   string  `json:"name"`
	Ranges []Range `json:"-"`
	// AvoidBuggyIPs: Allocate never returns an IPv4 address ending in .0
	// or .255 (some clients and routers take them for network or
	// broadcast addresses). Assign still accepts them (static IPs).
	AvoidBuggyIPs bool `json:"-"`
}

// Config is the allocator's pool set.
type Config struct {
	Pools []PoolConfig
}

var poolNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)

// ParseRange parses "CIDR", "start-end" or a single address. A CIDR is masked
// to its network ("10.0.0.1/24" means 10.0.0.0/24, as kube-loxilb users write
// it); an IPv4 CIDR shorter than /31 leaves out its network and broadcast
// addresses, which many routers will not forward to as a VIP; an IPv6 CIDR
// shorter than /127 leaves out its all-zeros address, the subnet-router
// anycast address (RFC 4291 2.6.1) that routers on the link answer (RFC 6164
// exempts /127 point-to-point links). An explicit start-end range is taken
// exactly.
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Range{}, errors.New("empty address range")
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Range{}, fmt.Errorf("invalid CIDR %q: %w", s, err)
		}
		if p.Addr().Is4In6() {
			return Range{}, fmt.Errorf("CIDR %q: write IPv4-mapped prefixes as IPv4", s)
		}
		if p.Addr().Zone() != "" {
			return Range{}, fmt.Errorf("CIDR %q: zoned addresses are not VIPs", s)
		}
		p = p.Masked()
		first := p.Addr()
		last := lastAddr(p)
		if first.Is4() && p.Bits() < 31 {
			first = first.Next()
			last = last.Prev()
		}
		if first.Is6() && p.Bits() < 127 {
			first = first.Next()
		}
		return Range{First: first, Last: last}, nil
	}
	if a, b, ok := strings.Cut(s, "-"); ok {
		first, err := netip.ParseAddr(strings.TrimSpace(a))
		if err != nil {
			return Range{}, fmt.Errorf("invalid range start in %q: %w", s, err)
		}
		last, err := netip.ParseAddr(strings.TrimSpace(b))
		if err != nil {
			return Range{}, fmt.Errorf("invalid range end in %q: %w", s, err)
		}
		first, last = first.Unmap(), last.Unmap()
		if first.Zone() != "" || last.Zone() != "" {
			return Range{}, fmt.Errorf("range %q: zoned addresses are not VIPs", s)
		}
		if first.BitLen() != last.BitLen() {
			return Range{}, fmt.Errorf("range %q mixes IPv4 and IPv6", s)
		}
		if last.Less(first) {
			return Range{}, fmt.Errorf("range %q ends before it starts", s)
		}
		return Range{First: first, Last: last}, nil
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return Range{}, fmt.Errorf("invalid address range %q: want CIDR, start-end or an address: %w", s, err)
	}
	if addr.Zone() != "" {
		return Range{}, fmt.Errorf("address %q: zoned addresses are not VIPs", s)
	}
	addr = addr.Unmap()
	return Range{First: addr, Last: addr}, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// ParsePoolFlag parses the --cidr-pools / --cidr6-pools syntax:
// "name=CIDR|start-end,name2=...". A name may repeat to give a pool several
// ranges. family restricts every range to that family, so an IPv6 range in
// --cidr-pools is reported instead of silently accepted.
func ParsePoolFlag(value string, family Family) ([]PoolConfig, error) {
	var pools []PoolConfig
	index := map[string]int{}
	for _, item := range strings.Split(value, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, rng, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("pool %q: want name=CIDR or name=start-end", item)
		}
		name = strings.TrimSpace(name)
		if !poolNameRE.MatchString(name) {
			return nil, fmt.Errorf("pool %q: invalid name %q (want 1-63 of [A-Za-z0-9._-], alphanumeric at both ends)", item, name)
		}
		r, err := ParseRange(rng)
		if err != nil {
			return nil, fmt.Errorf("pool %q: %w", name, err)
		}
		if family != 0 && r.Family() != family {
			return nil, fmt.Errorf("pool %q: range %s is %s, want %s", name, r, r.Family(), family)
		}
		i, seen := index[name]
		if !seen {
			i = len(pools)
			index[name] = i
			pools = append(pools, PoolConfig{Name: name})
		}
		pools[i].Ranges = append(pools[i].Ranges, r)
	}
	return pools, nil
}

// yamlFile is the pool file format:
//
//	pools:
//	- name: defaultPool
//	  addresses: ["192.0.2.0/24", "198.51.100.10-198.51.100.20", "2001:db8::/120"]
type yamlFile struct {
	Pools []struct {
		Name      string   `json:"name"`
		Addresses []string `json:"addresses"`
	} `json:"pools"`
}

// ParsePoolYAML parses a pool file (format on yamlFile). Unknown fields are
// errors so a typo does not silently drop a pool.
func ParsePoolYAML(data []byte) ([]PoolConfig, error) {
	var f yamlFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("pool file: %w", err)
	}
	var pools []PoolConfig
	for i, p := range f.Pools {
		if !poolNameRE.MatchString(p.Name) {
			return nil, fmt.Errorf("pools[%d].name: invalid name %q", i, p.Name)
		}
		if len(p.Addresses) == 0 {
			return nil, fmt.Errorf("pools[%d] (%s): no addresses", i, p.Name)
		}
		pc := PoolConfig{Name: p.Name}
		for j, s := range p.Addresses {
			r, err := ParseRange(s)
			if err != nil {
				return nil, fmt.Errorf("pools[%d].addresses[%d]: %w", i, j, err)
			}
			pc.Ranges = append(pc.Ranges, r)
		}
		pools = append(pools, pc)
	}
	return pools, nil
}

// MergePools joins pool lists (flags and file): ranges of the same name are
// combined. Overlaps are checked later by New.
func MergePools(lists ...[]PoolConfig) []PoolConfig {
	var out []PoolConfig
	index := map[string]int{}
	for _, l := range lists {
		for _, p := range l {
			i, ok := index[p.Name]
			if !ok {
				i = len(out)
				index[p.Name] = i
				out = append(out, PoolConfig{Name: p.Name})
			}
			out[i].Ranges = append(out[i].Ranges, p.Ranges...)
			out[i].AvoidBuggyIPs = out[i].AvoidBuggyIPs || p.AvoidBuggyIPs
		}
	}
	return out
}

// Overlaps returns a description of the first overlap between a range of
// pools and one of other ("" when none), for callers that accept pools one
// at a time and must say which one clashes with which.
func Overlaps(r Range, pools []PoolConfig) string {
	for _, p := range pools {
		for _, o := range p.Ranges {
			if r.overlaps(o) {
				return fmt.Sprintf("pool %q range %s", p.Name, o)
			}
		}
	}
	return ""
}

// ValidName reports whether name is a valid pool name.
func ValidName(name string) bool { return poolNameRE.MatchString(name) }

func validate(cfg Config) error {
	type owned struct {
		pool string
		r    Range
	}
	var all []owned
	seen := map[string]bool{}
	for _, p := range cfg.Pools {
		if !poolNameRE.MatchString(p.Name) {
			return fmt.Errorf("pool %q: invalid name", p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("pool %q defined twice (merge its ranges instead)", p.Name)
		}
		seen[p.Name] = true
		if len(p.Ranges) == 0 {
			return fmt.Errorf("pool %q has no ranges", p.Name)
		}
		for _, r := range p.Ranges {
			if !r.First.IsValid() || !r.Last.IsValid() || r.First.BitLen() != r.Last.BitLen() || r.Last.Less(r.First) {
				return fmt.Errorf("pool %q: invalid range %s", p.Name, r)
			}
			all = append(all, owned{p.Name, r})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].r.First.BitLen() != all[j].r.First.BitLen() {
			return all[i].r.First.BitLen() < all[j].r.First.BitLen()
		}
		return all[i].r.First.Less(all[j].r.First)
	})
	for i := 1; i < len(all); i++ {
		if all[i-1].r.overlaps(all[i].r) {
			return fmt.Errorf("pool %q range %s overlaps pool %q range %s", all[i-1].pool, all[i-1].r, all[i].pool, all[i].r)
		}
	}
	return nil
}
