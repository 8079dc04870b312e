package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/telcolb/telcolb/k8s/annotations"
	"github.com/telcolb/telcolb/k8s/ipam"
)

// Allocation is what the controller records on a Service (AllocationAnnotation)
// before it uses the addresses anywhere, so a restarted controller reserves
// exactly these again before allocating anything new.
type Allocation struct {
	// IPs are the primary VIPs, at most one per family.
	IPs []string `json:"ips"`
	// Secondary are the SCTP multi-homing VIPs.
	Secondary []string `json:"secondary,omitempty"`
	// SharingKey is the key the addresses are held under, so a restart
	// reserves them as they were shared even if the annotation is no longer
	// read.
	SharingKey string `json:"sharingKey,omitempty"`
	// Generation and Inputs fingerprint the Service (spec, and the
	// annotations under telcolb.io/ and loxilb.io/) when the addresses were
	// chosen. While both are unchanged the user did not ask for anything
	// new, so an address the configuration no longer allows was disallowed
	// by a controller configuration change alone: it is kept.
	Generation int64  `json:"generation,omitempty"`
	Inputs     string `json:"inputs,omitempty"`
}

func (a Allocation) addrs() ([]netip.Addr, []netip.Addr, error) {
	parse := func(list []string) ([]netip.Addr, error) {
		var out []netip.Addr
		for _, s := range list {
			x, err := netip.ParseAddr(s)
			if err != nil {
				return nil, err
			}
			out = append(out, x.Unmap())
		}
		return out, nil
	}
	p, err := parse(a.IPs)
	if err != nil {
		return nil, nil, err
	}
	s, err := parse(a.Secondary)
	return p, s, err
}

func readAllocation(svc *corev1.Service) (Allocation, bool, error) {
	raw, ok := svc.Annotations[AllocationAnnotation]
	if !ok || raw == "" {
		return Allocation{}, false, nil
	}
	var a Allocation
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		return Allocation{}, false, fmt.Errorf("annotation %s: %w", AllocationAnnotation, err)
	}
	if _, _, err := a.addrs(); err != nil {
		return Allocation{}, false, fmt.Errorf("annotation %s: %w", AllocationAnnotation, err)
	}
	return a, true, nil
}

func recordedAllocation(svc *corev1.Service) (primary, secondary []netip.Addr, err error) {
	a, _, err := readAllocation(svc)
	if err != nil {
		return nil, nil, err
	}
	return a.addrs()
}

func (a Allocation) encode() string {
	if a.IPs == nil {
		a.IPs = []string{}
	}
	b, _ := json.Marshal(a)
	return string(b)
}

func addrStrings(list []netip.Addr) []string {
	var out []string
	for _, x := range list {
		out = append(out, x.String())
	}
	return out
}

// inputsOf fingerprints the annotations a user sets to steer this
// controller (ours and kube-loxilb's names, not our own bookkeeping).
func inputsOf(svc *corev1.Service) string {
	var lines []string
	for k, v := range svc.Annotations {
		if k == AllocationAnnotation || !strings.HasPrefix(k, annotations.Prefix) && !strings.HasPrefix(k, annotations.LoxilbPrefix) {
			continue
		}
		lines = append(lines, k+"="+v)
	}
	sort.Strings(lines)
	h := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(h[:8])
}

// allocError is an allocation failure and the condition reason for it.
type allocError struct {
	reason string
	err    error
}

func (e *allocError) Error() string { return e.err.Error() }
func (e *allocError) Unwrap() error { return e.err }

// attempt is one try at choosing a Service's VIPs. Addresses it keeps come
// from the record on the Service or, first, from what this process already
// holds for it: the informer cache can lag behind our own annotation patch,
// and a stale read must not make the Service swap VIPs. It remembers what it
// took, so a failure gives back only that (rollback), and what it chose, so
// the addresses no longer wanted are released once the new record is
// persisted (commit).
type attempt struct {
	ctx   context.Context
	r     *Reconciler
	svc   *corev1.Service
	spec  annotations.Spec
	owner ipam.Owner

	rec            Allocation
	recorded       bool
	recP, recS     []netip.Addr
	held           []netip.Addr
	heldSet        map[netip.Addr]bool
	fresh, chosen  map[netip.Addr]bool
	primary        []netip.Addr
	secondary      []netip.Addr
	keptDisallowed []string // why each kept address is no longer allowed
}

func (r *Reconciler) newAttempt(ctx context.Context, svc *corev1.Service, spec annotations.Spec) *attempt {
	a := &attempt{ctx: ctx, r: r, svc: svc, spec: spec, owner: r.owner(svc, spec.SharingKey),
		fresh: map[netip.Addr]bool{}, chosen: map[netip.Addr]bool{}, heldSet: map[netip.Addr]bool{}}
	rec, ok, err := readAllocation(svc)
	if err != nil {
		r.log.Warn("ignoring unreadable allocation record", "service", key(svc), "error", err)
	} else if ok {
		a.rec, a.recorded = rec, true
		a.recP, a.recS, _ = rec.addrs()
	}
	a.held = r.alloc.IPs(a.owner.Service)
	for _, x := range a.held {
		a.heldSet[x] = true
	}
	return a
}

// record is what the attempt's outcome writes on the Service.
func (a *attempt) record() string {
	return Allocation{IPs: addrStrings(a.primary), Secondary: addrStrings(a.secondary), SharingKey: a.spec.SharingKey,
		Generation: a.svc.Generation, Inputs: inputsOf(a.svc)}.encode()
}

// moved reports the recorded addresses this attempt gives up.
func (a *attempt) moved() []netip.Addr {
	var out []netip.Addr
	for _, x := range append(append([]netip.Addr(nil), a.recP...), a.recS...) {
		if !a.chosen[x] {
			out = append(out, x)
		}
	}
	return out
}

// run chooses the VIPs; on error every address it took is given back.
func (a *attempt) run() error {
	err := a.choose()
	if err != nil {
		for x := range a.fresh {
			a.r.alloc.Release(a.owner.Service, x)
		}
	}
	return err
}

func (a *attempt) choose() error {
	if why := a.disallowed(); len(why) > 0 && a.unchangedByUser() && !a.spec.Reallocate && !a.r.cfg.ReallocateDisallowed {
		// Only the controller's configuration changed: keep serving what
		// clients use, and say so (see keptMessage).
		for _, x := range a.recP {
			if err := a.take(x); err != nil {
				return a.classify("recorded", fmt.Errorf("recorded VIP: %w", err))
			}
		}
		for _, x := range a.recS {
			if err := a.take(x); err != nil {
				return a.classify("recorded", fmt.Errorf("recorded secondary VIP: %w", err))
			}
		}
		a.primary, a.secondary = a.recP, a.recS
		a.keptDisallowed = why
		return nil
	}
	if err := a.choosePrimary(); err != nil {
		return err
	}
	return a.chooseSecondary()
}

// unchangedByUser: the Service is as it was when the record was written.
// Records from before fingerprints existed count as unchanged.
func (a *attempt) unchangedByUser() bool {
	if !a.recorded {
		return false
	}
	if a.rec.Generation == 0 && a.rec.Inputs == "" {
		return true
	}
	return a.rec.Generation == a.svc.Generation && a.rec.Inputs == inputsOf(a.svc)
}

// disallowed explains, per recorded address, why the current
// configuration would not choose it; empty means every recorded address is
// still allowed (and nothing wanted is missing).
func (a *attempt) disallowed() []string {
	if !a.recorded {
		return nil
	}
	var why []string
	wantFam := map[ipam.Family]bool{}
	for _, f := range families(a.svc, a.spec) {
		wantFam[f] = true
	}
	for _, x := range a.recP {
		fam := ipam.FamilyOf(x)
		static := a.static(fam)
		pool, inPool := a.r.alloc.PoolOf(x)
		switch {
		case !wantFam[fam]:
			why = append(why, fmt.Sprintf("%s: the Service no longer asks for an %s VIP", x, fam))
		case static.IsValid() && static != x:
			why = append(why, fmt.Sprintf("%s: a static IP %s is asked for instead", x, static))
		case static.IsValid():
		case !inPool:
			why = append(why, fmt.Sprintf("%s: in no configured pool, and no %s annotation asks for it", x, annotations.StaticIP))
		default:
			if w := a.poolFits(pool, fam); w != "" {
				why = append(why, fmt.Sprintf("%s: %s", x, w))
			}
		}
	}
	wantSec := hasSCTP(a.svc) && (len(a.spec.SecondaryIPs) > 0 || len(a.spec.SecondaryPools) > 0)
	for i, x := range a.recS {
		switch {
		case !wantSec:
			why = append(why, fmt.Sprintf("%s: no secondary VIP is asked for", x))
		case len(a.spec.SecondaryIPs) > 0 && !containsAddr(a.spec.SecondaryIPs, x):
			why = append(why, fmt.Sprintf("%s: not among the secondary IPs asked for", x))
		case len(a.spec.SecondaryIPs) == 0:
			pool, _ := a.r.alloc.PoolOf(x)
			if i >= len(a.spec.SecondaryPools) || a.spec.SecondaryPools[i] != pool {
				why = append(why, fmt.Sprintf("%s: not from the secondary pools asked for", x))
			}
		}
	}
	return why
}

func containsAddr(list []netip.Addr, x netip.Addr) bool {
	for _, y := range list {
		if y == x {
			return true
		}
	}
	return false
}

// static is the address asked for family fam (staticIP annotation, else
// spec.loadBalancerIP), if any.
func (a *attempt) static(fam ipam.Family) netip.Addr {
	for _, s := range a.spec.StaticIPs {
		if ipam.FamilyOf(s) == fam {
			return s
		}
	}
	if lb, err := netip.ParseAddr(a.svc.Spec.LoadBalancerIP); err == nil && ipam.FamilyOf(lb.Unmap()) == fam {
		return lb.Unmap()
	}
	return netip.Addr{}
}

func (a *attempt) classify(pool string, err error) error {
	var ex *ipam.ExhaustedError
	var ce *ipam.ConflictError
	m := a.r.metrics.allocationFailures
	switch {
	case errors.As(err, &ex):
		m.WithLabelValues(pool, "exhausted").Inc()
		return &allocError{ReasonPoolExhausted, err}
	case errors.As(err, &ce):
		m.WithLabelValues(pool, "conflict").Inc()
		// kube-loxilb shares addresses by default; here sharing is asked
		// for, so say how.
		return &allocError{ReasonIPConflict, fmt.Errorf("%w (to share an address, give every Service on it the same %s%s annotation and no clashing port)",
			err, annotations.Prefix, annotations.SharingKey)}
	default:
		m.WithLabelValues(pool, "other").Inc()
		return &allocError{ReasonAllocationFailed, err}
	}
}

// take assigns a specific address (kept or static).
func (a *attempt) take(x netip.Addr) error {
	if err := a.r.alloc.Assign(a.owner, x); err != nil {
		return err
	}
	if !a.heldSet[x] {
		a.fresh[x] = true
	}
	a.chosen[x] = true
	return nil
}

// reuse finds a recorded or held address of family fam in pool to keep.
func (a *attempt) reuse(pool string, fam ipam.Family, rec []netip.Addr) netip.Addr {
	for _, list := range [][]netip.Addr{rec, a.held} {
		for _, x := range list {
			if a.chosen[x] || ipam.FamilyOf(x) != fam {
				continue
			}
			if p, ok := a.r.alloc.PoolOf(x); ok && p == pool {
				return x
			}
		}
	}
	return netip.Addr{}
}

// fromPool keeps a reusable address of pool or allocates a new one.
func (a *attempt) fromPool(pool string, fam ipam.Family, rec []netip.Addr, what string) (netip.Addr, error) {
	if keep := a.reuse(pool, fam, rec); keep.IsValid() {
		if err := a.take(keep); err != nil {
			return netip.Addr{}, a.classify(pool, err)
		}
		return keep, nil
	}
	if !a.r.alloc.HasFamily(pool, fam) {
		return netip.Addr{}, a.classify(pool, fmt.Errorf("pool %q has no %s range for this Service's IP family", pool, fam))
	}
	x, err := a.r.alloc.Allocate(a.owner, pool, fam)
	if err != nil {
		return netip.Addr{}, a.classify(pool, fmt.Errorf("%s%w", what, err))
	}
	a.fresh[x], a.chosen[x] = true, true
	return x, nil
}

func (a *attempt) choosePrimary() error {
	if s := a.svc.Spec.LoadBalancerIP; s != "" {
		if _, err := netip.ParseAddr(s); err != nil {
			return &allocError{ReasonInvalidService, fmt.Errorf("spec.loadBalancerIP %q: %w", s, err)}
		}
	}
	for _, fam := range families(a.svc, a.spec) {
		if static := a.static(fam); static.IsValid() {
			if err := a.take(static); err != nil {
				return a.classify("static", fmt.Errorf("static IP: %w", err))
			}
			a.primary = append(a.primary, static)
			continue
		}
		x, err := a.primaryFromPools(fam)
		if err != nil {
			return err
		}
		a.primary = append(a.primary, x)
	}
	return nil
}

func (a *attempt) chooseSecondary() error {
	spec := a.spec
	if len(spec.SecondaryIPs) == 0 && len(spec.SecondaryPools) == 0 {
		return nil
	}
	if !hasSCTP(a.svc) {
		a.r.note(a.svc, corev1.EventTypeNormal, ReasonAnnotationNote, "secondary VIPs are only used by SCTP ports; this Service has none, so none were allocated")
		return nil
	}
	fam := ipam.FamilyOf(a.primary[0])
	for _, x := range spec.SecondaryIPs {
		if ipam.FamilyOf(x) != fam {
			return &allocError{ReasonInvalidService, fmt.Errorf("secondary IP %s is %s but the primary VIP %s is %s", x, ipam.FamilyOf(x), a.primary[0], fam)}
		}
		if err := a.take(x); err != nil {
			return a.classify("static", fmt.Errorf("secondary IP: %w", err))
		}
		a.secondary = append(a.secondary, x)
	}
	if len(spec.SecondaryIPs) > 0 {
		return nil
	}
	for _, pool := range spec.SecondaryPools {
		if why := a.r.poolUse(a.ctx, a.svc, pool, false); why != "" {
			return &allocError{ReasonPoolNotAllowed, fmt.Errorf("annotation %s%s: %s", annotations.Prefix, annotations.PoolSelectSecondary, why)}
		}
		x, err := a.fromPool(pool, fam, a.recS, "secondary: ")
		if err != nil {
			return err
		}
		a.secondary = append(a.secondary, x)
	}
	return nil
}

// commit releases the addresses this process held for the Service that the
// attempt did not choose; call it once the new record is persisted.
func (a *attempt) commit() {
	released := false
	for _, x := range a.held {
		if !a.chosen[x] {
			a.r.alloc.Release(a.owner.Service, x)
			released = true
		}
	}
	if released {
		a.r.metrics.observePools(a.r.alloc)
		a.r.wakeWaiting()
	}
}

// poolFits says why a recorded primary VIP in pool would not be chosen now
// ("" when it would): the Service selects another pool, or the pool's
// IPPool no longer allows it, or, without a poolSelect annotation, the pool
// is not among those the Service gets addresses from by default.
func (a *attempt) poolFits(pool string, fam ipam.Family) string {
	if a.spec.PoolSelected || !a.r.hasCRPools() {
		if pool != a.spec.Pool {
			return fmt.Sprintf("in pool %q, the Service selects pool %q", pool, a.spec.Pool)
		}
		if w := a.r.poolUse(a.ctx, a.svc, pool, true); w != "" {
			return fmt.Sprintf("in pool %q, which no longer allows this Service: %s", pool, w)
		}
		return ""
	}
	cands, _ := a.r.autoPools(a.ctx, a.svc, fam)
	for _, c := range cands {
		if c == pool {
			return ""
		}
	}
	return fmt.Sprintf("in pool %q, which is not among the pools this Service gets addresses from without a %s%s annotation (%s)",
		pool, annotations.Prefix, annotations.PoolSelect, strings.Join(cands, ", "))
}

// primaryFromPools chooses the primary VIP of family fam: from the selected
// pool, or, without a poolSelect annotation, from the first pool of
// autoPools that is not exhausted. A recorded or held address in any
// candidate pool is kept first, so a Service never moves between pools
// because an earlier one has room again.
func (a *attempt) primaryFromPools(fam ipam.Family) (netip.Addr, error) {
	if a.spec.PoolSelected {
		if why := a.r.poolUse(a.ctx, a.svc, a.spec.Pool, true); why != "" {
			return netip.Addr{}, &allocError{ReasonPoolNotAllowed, fmt.Errorf("annotation %s%s: %s", annotations.Prefix, annotations.PoolSelect, why)}
		}
		return a.fromPool(a.spec.Pool, fam, a.recP, "")
	}
	pools, why := a.r.autoPools(a.ctx, a.svc, fam)
	if len(pools) == 0 {
		if len(why) == 0 {
			// No pool of this family at all: the default pool's error.
			return a.fromPool(a.spec.Pool, fam, a.recP, "")
		}
		return netip.Addr{}, &allocError{ReasonPoolNotAllowed, fmt.Errorf("no pool gives this Service an %s VIP without a %s%s annotation: %s",
			fam, annotations.Prefix, annotations.PoolSelect, strings.Join(why, "; "))}
	}
	for _, p := range pools {
		if keep := a.reuse(p, fam, a.recP); keep.IsValid() {
			return a.fromPool(p, fam, a.recP, "")
		}
	}
	var last error
	for _, p := range pools {
		x, err := a.fromPool(p, fam, a.recP, "")
		if err == nil {
			return x, nil
		}
		var ae *allocError
		if errors.As(err, &ae) && ae.reason == ReasonPoolExhausted {
			last = err
			continue
		}
		return netip.Addr{}, err
	}
	return netip.Addr{}, last
}
