package app

import (
	"fmt"
	"net/http"
	"net/netip"
	"sort"

	"github.com/telcolb/telcolb/api"
)

// The server's per-write work must not grow with the number of services
// (a cold start programs every service through the same path): IDs come from
// an allocator and overlaps are found through an index by (protocol, VIP).

// idAllocator hands out the lowest free service ID in 1..max.
type idAllocator struct {
	max  uint32
	used []bool
	// hint is at most the lowest free ID: allocation scans from it, so a
	// run of creations costs O(1) each.
	hint uint32
}

func newIDAllocator(max uint32) *idAllocator {
	return &idAllocator{max: max, used: make([]bool, max+1), hint: 1}
}

// lowestFree returns the ID the next allocation would take, without taking
// it; false when every ID is used.
func (a *idAllocator) lowestFree() (uint32, bool) {
	for id := a.hint; id <= a.max; id++ {
		if !a.used[id] {
			a.hint = id
			return id, true
		}
	}
	a.hint = a.max + 1
	return 0, false
}

func (a *idAllocator) take(id uint32) {
	if id >= 1 && id <= a.max {
		a.used[id] = true
	}
}

func (a *idAllocator) release(id uint32) {
	if id >= 1 && id <= a.max {
		a.used[id] = false
		a.hint = min(a.hint, id)
	}
}

// vipKey is one address of one protocol: services sharing one may overlap.
type vipKey struct {
	proto string
	addr  netip.Addr
}

// vipIndex lists the services using each (protocol, VIP).
type vipIndex map[vipKey]map[string]bool

func serviceVIPs(s api.Service) []netip.Addr {
	out := make([]netip.Addr, 0, 1+len(s.SecondaryVIPs))
	for _, v := range append([]string{s.VIP}, s.SecondaryVIPs...) {
		if a, err := netip.ParseAddr(v); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func (x vipIndex) add(s api.Service) {
	for _, a := range serviceVIPs(s) {
		k := vipKey{s.Protocol, a}
		if x[k] == nil {
			x[k] = map[string]bool{}
		}
		x[k][s.Name] = true
	}
}

func (x vipIndex) remove(s api.Service) {
	for _, a := range serviceVIPs(s) {
		k := vipKey{s.Protocol, a}
		delete(x[k], s.Name)
		if len(x[k]) == 0 {
			delete(x, k)
		}
	}
}

// checkOverlap refuses a service that would share a VIP, protocol and port
// with another: the datapath could not tell which rule a packet is for.
// Only the services on the same VIPs are looked at.
func (s *Server) checkOverlap(svc api.Service) error {
	mine := rangeOf(svc)
	for i, a := range serviceVIPs(svc) {
		users := s.byVIP[vipKey{svc.Protocol, a}]
		names := make([]string, 0, len(users))
		for n := range users {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if n == svc.Name {
				continue
			}
			other := s.services[n].Service
			theirs := rangeOf(other)
			if mine.hi < theirs.lo || theirs.hi < mine.lo {
				continue
			}
			field := "vip"
			if i > 0 {
				field = fmt.Sprintf("secondaryVIPs[%d]", i-1)
			}
			return &httpError{code: http.StatusConflict, field: field, msg: fmt.Sprintf(
				"%s ports %d-%d/%s overlap service %q (%s ports %d-%d)", a, mine.lo, mine.hi, svc.Protocol, n, a, theirs.lo, theirs.hi)}
		}
	}
	return nil
}
