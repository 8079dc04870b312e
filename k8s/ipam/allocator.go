package ipam

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"sort"
	"strings"
	"sync"
)

// ErrExhausted matches (errors.Is) every *ExhaustedError.
var ErrExhausted = errors.New("address pool exhausted")

// ErrUnknownPool is returned for a pool name that is not configured.
var ErrUnknownPool = errors.New("unknown address pool")

// ErrConflict matches (errors.Is) every *ConflictError.
var ErrConflict = errors.New("address in use")

// ExhaustedError says a pool has no address of the family left for the
// requester (free, or shareable under its sharing key without a port clash).
type ExhaustedError struct {
	Pool   string
	Family Family
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("pool %q has no free %s address", e.Pool, e.Family)
}

// Is makes errors.Is(err, ErrExhausted) true.
func (e *ExhaustedError) Is(target error) bool { return target == ErrExhausted }

// ConflictError says a specific address cannot be given to a Service because
// another Service holds it and the sharing rules forbid sharing.
type ConflictError struct {
	IP      netip.Addr
	Holder  string
	Service string
	Reason  string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s is held by %s, cannot give it to %s: %s", e.IP, e.Holder, e.Service, e.Reason)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Port is one protocol/port a Service exposes on its VIP; two Services can
// share an address only if none of their Ports are equal.
type Port struct {
	Protocol string
	Port     uint16
}

func (p Port) String() string { return fmt.Sprintf("%d/%s", p.Port, p.Protocol) }

// Owner describes who asks for an address. Service is a unique key (the
// controller uses "namespace/name").
type Owner struct {
	Service string
	// SharingKey, when non-empty, lets Services with the same key share an
	// address as long as their ports do not clash. Empty means exclusive.
	SharingKey string
	// BackendKey, when both sides set it, must match for sharing: Services
	// with externalTrafficPolicy Local answer only where their pods run, so
	// two of them on one VIP must select the same pods (MetalLB's rule).
	BackendKey string
	Ports      []Port
}

type holder struct {
	sharingKey string
	backendKey string
	ports      []Port
}

type pool struct {
	name   string
	ranges []Range
	avoid  bool // AvoidBuggyIPs
	// lowFree[i] is where the search for a free address in ranges[i]
	// starts: every address below it is held. Without it, allocating N
	// addresses scans past every held one each time (quadratic at a cold
	// start with thousands of Services).
	lowFree []netip.Addr
}

// Allocator hands out VIPs from named pools. It is safe for concurrent use.
type Allocator struct {
	mu    sync.Mutex
	pools map[string]*pool
	// used maps each held address to its holders by Service key.
	used map[netip.Addr]map[string]*holder
	// byService lists what each Service holds, for release on delete.
	byService map[string]map[netip.Addr]bool
}

// New validates cfg (names, ranges, no overlap between any two ranges) and
// returns an empty allocator.
func New(cfg Config) (*Allocator, error) {
	if err := validate(cfg); err != nil {
		return nil, fmt.Errorf("ipam config: %w", err)
	}
	a := &Allocator{
		used:      map[netip.Addr]map[string]*holder{},
		byService: map[string]map[netip.Addr]bool{},
	}
	a.pools = buildPools(cfg)
	return a, nil
}

// SetPools replaces the pool set (IPPool objects changed). Held addresses
// stay held, also those no pool contains any more: a Service keeps its VIPs
// until it is changed or deleted, and no address is handed out twice.
func (a *Allocator) SetPools(cfg Config) error {
	if err := validate(cfg); err != nil {
		return fmt.Errorf("ipam config: %w", err)
	}
	pools := buildPools(cfg)
	a.mu.Lock()
	a.pools = pools
	a.mu.Unlock()
	return nil
}

// Pools lists the configured pools (names and ranges), sorted by name.
func (a *Allocator) Pools() []PoolConfig {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]PoolConfig, 0, len(a.pools))
	for _, p := range a.pools {
		out = append(out, PoolConfig{Name: p.name, Ranges: append([]Range(nil), p.ranges...), AvoidBuggyIPs: p.avoid})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func buildPools(cfg Config) map[string]*pool {
	pools := map[string]*pool{}
	for _, p := range cfg.Pools {
		rs := append([]Range(nil), p.Ranges...)
		sort.Slice(rs, func(i, j int) bool {
			if rs[i].First.BitLen() != rs[j].First.BitLen() {
				return rs[i].First.BitLen() < rs[j].First.BitLen()
			}
			return rs[i].First.Less(rs[j].First)
		})
		low := make([]netip.Addr, len(rs))
		for i, r := range rs {
			low[i] = r.First
		}
		pools[p.Name] = &pool{name: p.Name, ranges: rs, lowFree: low, avoid: p.AvoidBuggyIPs}
	}
	return pools
}

// buggy: an IPv4 address ending in .0 or .255.
func buggy(addr netip.Addr) bool {
	if !addr.Is4() {
		return false
	}
	b := addr.As4()
	return b[3] == 0 || b[3] == 255
}

// HasPool reports whether name is configured.
func (a *Allocator) HasPool(name string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.pools[name]
	return ok
}

// HasFamily reports whether pool name has ranges of family f.
func (a *Allocator) HasFamily(name string, f Family) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pools[name]
	if !ok {
		return false
	}
	for _, r := range p.ranges {
		if r.Family() == f {
			return true
		}
	}
	return false
}

// PoolOf names the pool containing addr ("" and false when it is in none).
func (a *Allocator) PoolOf(addr netip.Addr) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.poolOf(addr.Unmap())
	if p == nil {
		return "", false
	}
	return p.name, true
}

func (a *Allocator) poolOf(addr netip.Addr) *pool {
	for _, p := range a.pools {
		for _, r := range p.ranges {
			if r.Contains(addr) {
				return p
			}
		}
	}
	return nil
}

// Allocate gives o one address of family f from pool name. With a sharing
// key it first reuses the lowest address already shared under that key whose
// holders' ports do not clash with o's, so sharing Services converge on one
// VIP; otherwise it takes the lowest free address. An address o already
// holds is never returned again (a Service asking for secondaries gets
// distinct ones).
func (a *Allocator) Allocate(o Owner, name string, f Family) (netip.Addr, error) {
	if o.Service == "" {
		return netip.Addr{}, errors.New("allocate: empty service key")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pools[name]
	if !ok {
		return netip.Addr{}, fmt.Errorf("%w %q", ErrUnknownPool, name)
	}
	hasFamily := false
	for _, r := range p.ranges {
		if r.Family() == f {
			hasFamily = true
		}
	}
	if !hasFamily {
		return netip.Addr{}, fmt.Errorf("pool %q has no %s range", name, f)
	}
	if o.SharingKey != "" {
		var candidates []netip.Addr
		for addr, hs := range a.used {
			if FamilyOf(addr) != f || hs[o.Service] != nil || !p.contains(addr) || p.avoid && buggy(addr) {
				continue
			}
			if _, why := compatible(hs, o); why == "" {
				candidates = append(candidates, addr)
			}
		}
		if len(candidates) > 0 {
			sort.Slice(candidates, func(i, j int) bool { return candidates[i].Less(candidates[j]) })
			a.hold(candidates[0], o)
			return candidates[0], nil
		}
	}
	for i, r := range p.ranges {
		if r.Family() != f {
			continue
		}
		// Terminates after at most len(a.used)+1 steps per range, even for
		// an IPv6 /64: only held addresses are skipped.
		for addr := p.lowFree[i]; addr.IsValid() && addr.Compare(r.Last) <= 0; addr = addr.Next() {
			if len(a.used[addr]) == 0 && !(p.avoid && buggy(addr)) {
				a.hold(addr, o)
				p.lowFree[i] = addr.Next()
				return addr, nil
			}
		}
		p.lowFree[i] = r.Last.Next()
	}
	return netip.Addr{}, &ExhaustedError{Pool: name, Family: f}
}

func (p *pool) contains(addr netip.Addr) bool {
	for _, r := range p.ranges {
		if r.Contains(addr) {
			return true
		}
	}
	return false
}

// Assign gives o the specific address addr, inside a pool or not (static IPs
// and loadBalancerIP may lie outside every pool). It is also how recorded
// allocations are reserved again at start. Re-assigning an address o already
// holds updates o's ports and keys, checked against the other holders.
func (a *Allocator) Assign(o Owner, addr netip.Addr) error {
	if o.Service == "" {
		return errors.New("assign: empty service key")
	}
	if !addr.IsValid() {
		return errors.New("assign: invalid address")
	}
	addr = addr.Unmap()
	a.mu.Lock()
	defer a.mu.Unlock()
	if holderName, why := compatible(a.used[addr], o); why != "" {
		return &ConflictError{IP: addr, Holder: holderName, Service: o.Service, Reason: why}
	}
	a.hold(addr, o)
	return nil
}

// compatible checks o against the holders of one address; it returns the
// first holder that forbids sharing and why ("" when sharing is fine).
func compatible(hs map[string]*holder, o Owner) (string, string) {
	names := make([]string, 0, len(hs))
	for n := range hs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if n == o.Service {
			continue
		}
		h := hs[n]
		switch {
		case h.sharingKey == "" || o.SharingKey == "":
			return n, "not shared (no sharing key on both Services)"
		case h.sharingKey != o.SharingKey:
			return n, fmt.Sprintf("sharing key %q differs from %q", h.sharingKey, o.SharingKey)
		case h.backendKey != "" && o.BackendKey != "" && h.backendKey != o.BackendKey:
			return n, "Services with externalTrafficPolicy Local must select the same pods to share an address"
		}
		if clash := clashes(h.ports, o.Ports); len(clash) > 0 {
			return n, "port clash on " + strings.Join(clash, ", ")
		}
	}
	return "", ""
}

func clashes(a, b []Port) []string {
	var out []string
	for _, x := range a {
		for _, y := range b {
			if strings.EqualFold(x.Protocol, y.Protocol) && x.Port == y.Port {
				out = append(out, x.String())
			}
		}
	}
	return out
}

func (a *Allocator) hold(addr netip.Addr, o Owner) {
	hs := a.used[addr]
	if hs == nil {
		hs = map[string]*holder{}
		a.used[addr] = hs
	}
	hs[o.Service] = &holder{sharingKey: o.SharingKey, backendKey: o.BackendKey, ports: append([]Port(nil), o.Ports...)}
	s := a.byService[o.Service]
	if s == nil {
		s = map[netip.Addr]bool{}
		a.byService[o.Service] = s
	}
	s[addr] = true
}

// Release drops service's hold on addr; it reports whether there was one.
// The address is free again once its last holder releases it.
func (a *Allocator) Release(service string, addr netip.Addr) bool {
	addr = addr.Unmap()
	a.mu.Lock()
	defer a.mu.Unlock()
	hs := a.used[addr]
	if hs[service] == nil {
		return false
	}
	delete(hs, service)
	if len(hs) == 0 {
		delete(a.used, addr)
		a.lowerFree(addr)
	}
	delete(a.byService[service], addr)
	if len(a.byService[service]) == 0 {
		delete(a.byService, service)
	}
	return true
}

// lowerFree moves the search start of addr's range back to a freed addr.
func (a *Allocator) lowerFree(addr netip.Addr) {
	p := a.poolOf(addr)
	if p == nil {
		return
	}
	for i, r := range p.ranges {
		if r.Contains(addr) && (!p.lowFree[i].IsValid() || addr.Less(p.lowFree[i])) {
			p.lowFree[i] = addr
		}
	}
}

// ReleaseService drops every hold of service and returns the addresses.
func (a *Allocator) ReleaseService(service string) []netip.Addr {
	addrs := a.IPs(service)
	for _, addr := range addrs {
		a.Release(service, addr)
	}
	return addrs
}

// IPs lists the addresses service holds, sorted.
func (a *Allocator) IPs(service string) []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]netip.Addr, 0, len(a.byService[service]))
	for addr := range a.byService[service] {
		out = append(out, addr)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// Services lists every Service key holding at least one address, sorted.
func (a *Allocator) Services() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.byService))
	for s := range a.byService {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// Holders lists the Services holding addr, sorted.
func (a *Allocator) Holders(addr netip.Addr) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for s := range a.used[addr.Unmap()] {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// PoolStats is the size and use of one family of one pool. Size saturates
// at MaxUint64 (an IPv6 /64 is 2^64 addresses).
type PoolStats struct {
	Pool   string
	Family Family
	Size   uint64
	InUse  uint64
}

// Stats reports every pool's size and addresses in use, per family, sorted
// by pool then family. Addresses held outside every pool are not counted.
func (a *Allocator) Stats() []PoolStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []PoolStats
	for _, p := range a.pools {
		for _, f := range []Family{IPv4, IPv6} {
			size := new(big.Int)
			has := false
			for _, r := range p.ranges {
				if r.Family() != f {
					continue
				}
				has = true
				n := new(big.Int).Sub(new(big.Int).SetBytes(r.Last.AsSlice()), new(big.Int).SetBytes(r.First.AsSlice()))
				size.Add(size, n.Add(n, big.NewInt(1)))
			}
			if !has {
				continue
			}
			st := PoolStats{Pool: p.name, Family: f, Size: math.MaxUint64}
			if size.IsUint64() {
				st.Size = size.Uint64()
			}
			for addr := range a.used {
				if FamilyOf(addr) == f && p.contains(addr) {
					st.InUse++
				}
			}
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pool != out[j].Pool {
			return out[i].Pool < out[j].Pool
		}
		return out[i].Family < out[j].Family
	})
	return out
}
