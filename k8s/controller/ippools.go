package controller

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/telcolb/telcolb/k8s/apis/v1alpha1"
	"github.com/telcolb/telcolb/k8s/ipam"
)

// ReasonPoolNotAllowed: the Service asks for a pool whose selectors or
// secondaryOnly setting exclude it (also an Event reason).
const ReasonPoolNotAllowed = "PoolNotAllowed"

// poolPolicy says who may use a pool. Pools from the flags and the pool
// file have the zero policy: anyone, never auto-assigned (only the default
// pool is used without a poolSelect annotation, as before IPPools).
type poolPolicy struct {
	fromCR        bool
	autoAssign    bool
	secondaryOnly bool
	nsSel, svcSel labels.Selector // nil: everything
	// prefixes are the pool's addresses as CIDRs (what advertisements
	// announce); ranges that are not one CIDR are covered by several.
	prefixes []netip.Prefix
	labels   map[string]string
}

// poolState is the pool set in force: flag pools plus the valid IPPools.
type poolState struct {
	mu       sync.RWMutex
	loaded   bool // the IPPools were read once (or CRDs are off)
	policies map[string]poolPolicy
}

func (p *poolState) get(name string) (poolPolicy, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	pp, ok := p.policies[name]
	return pp, ok
}

func (p *poolState) isLoaded() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.loaded
}

func (p *poolState) snapshot() map[string]poolPolicy {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make(map[string]poolPolicy, len(p.policies))
	for k, v := range p.policies {
		out[k] = v
	}
	return out
}

func flagPolicies(pools []ipam.PoolConfig) map[string]poolPolicy {
	out := map[string]poolPolicy{}
	for _, p := range pools {
		out[p.Name] = poolPolicy{prefixes: rangesPrefixes(p.Ranges)}
	}
	return out
}

// poolUse is why a Service may not use a pool ("" when it may).
func (r *Reconciler) poolUse(ctx context.Context, svc *corev1.Service, pool string, primary bool) string {
	pp, ok := r.pools.get(pool)
	if !ok || !pp.fromCR {
		return ""
	}
	if primary && pp.secondaryOnly {
		return fmt.Sprintf("IPPool %q has spec.secondaryOnly: it only gives SCTP secondary VIPs (%s%s)", pool, "telcolb.io/", "poolSelectSecondary")
	}
	if pp.svcSel != nil && !pp.svcSel.Matches(labels.Set(svc.Labels)) {
		return fmt.Sprintf("IPPool %q spec.serviceSelector (%s) does not match the Service's labels", pool, pp.svcSel)
	}
	if pp.nsSel != nil {
		var ns corev1.Namespace
		if err := r.client.Get(ctx, types.NamespacedName{Name: svc.Namespace}, &ns); err != nil {
			return fmt.Sprintf("IPPool %q spec.namespaceSelector: namespace %s unreadable: %v", pool, svc.Namespace, err)
		}
		if !pp.nsSel.Matches(labels.Set(ns.Labels)) {
			return fmt.Sprintf("IPPool %q spec.namespaceSelector (%s) does not match namespace %s", pool, pp.nsSel, svc.Namespace)
		}
	}
	return ""
}

// autoPools lists the pools a Service without a poolSelect annotation may
// get its primary VIP of family fam from, in the order they are tried: the
// default pool, then the IPPools with autoAssign, by name. why explains
// the pools left out when the list is empty.
func (r *Reconciler) autoPools(ctx context.Context, svc *corev1.Service, fam ipam.Family) (out []string, why []string) {
	try := func(name string) {
		if !r.alloc.HasFamily(name, fam) {
			return
		}
		if w := r.poolUse(ctx, svc, name, true); w != "" {
			why = append(why, w)
			return
		}
		out = append(out, name)
	}
	if r.alloc.HasPool(r.cfg.DefaultPool) {
		try(r.cfg.DefaultPool)
	}
	var auto []string
	for name, pp := range r.pools.snapshot() {
		if pp.fromCR && pp.autoAssign && !pp.secondaryOnly && name != r.cfg.DefaultPool {
			auto = append(auto, name)
		}
	}
	sort.Strings(auto)
	for _, n := range auto {
		try(n)
	}
	return out, why
}

// ipPoolReconciler turns the IPPool objects into allocator pools. All
// pools are reconciled together (one fixed request): whether a pool
// overlaps depends on the others. The oldest pool keeps an overlapping
// range; the newer one gets Valid=False naming its field and is left out
// entirely, so Services on other pools are never affected.
type ipPoolReconciler struct{ r *Reconciler }

var allPoolsRequest = reconcile.Request{NamespacedName: types.NamespacedName{Name: "ippools"}}

func (p *ipPoolReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	r := p.r
	var list v1alpha1.IPPoolList
	if err := r.client.List(ctx, &list); err != nil {
		return reconcile.Result{}, fmt.Errorf("list IPPools: %w", err)
	}
	items := list.Items
	sort.Slice(items, func(i, j int) bool {
		ti, tj := items[i].CreationTimestamp, items[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return items[i].Name < items[j].Name
	})
	accepted := append([]ipam.PoolConfig(nil), r.cfg.Pools...)
	policies := flagPolicies(r.cfg.Pools)
	flagNames := map[string]bool{}
	for _, fp := range r.cfg.Pools {
		flagNames[fp.Name] = true
	}
	type verdict struct {
		reason, msg string
	}
	verdicts := make([]verdict, len(items))
	for i := range items {
		pool := &items[i]
		if !pool.DeletionTimestamp.IsZero() {
			continue
		}
		pc, pol, reason, msg := parseIPPool(pool, flagNames, accepted)
		verdicts[i] = verdict{reason, msg}
		if reason != v1alpha1.ReasonValid {
			continue
		}
		accepted = append(accepted, pc)
		policies[pool.Name] = pol
	}
	if err := r.alloc.SetPools(ipam.Config{Pools: accepted}); err != nil {
		// parseIPPool checked every rule SetPools checks: a failure here is
		// a bug, reported rather than hidden.
		return reconcile.Result{}, fmt.Errorf("apply IPPools: %w", err)
	}
	r.pools.mu.Lock()
	changed := !r.pools.loaded || fmt.Sprint(policyKeys(r.pools.policies)) != fmt.Sprint(policyKeys(policies)) || poolsChanged(r.pools.policies, policies)
	r.pools.policies = policies
	r.pools.loaded = true
	r.pools.mu.Unlock()
	r.metrics.observePools(r.alloc)
	for i := range items {
		if items[i].DeletionTimestamp.IsZero() {
			r.setValid(ctx, &items[i], &items[i].Status.Conditions, verdicts[i].reason, verdicts[i].msg)
		}
	}
	if changed {
		// Services waiting for a pool, or asking for one that appeared,
		// are tried again; advertisements follow the pools' prefixes.
		r.enqueueAllServices(ctx)
		r.kickAdvertiser()
	}
	return reconcile.Result{}, nil
}

func policyKeys(m map[string]poolPolicy) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func poolsChanged(a, b map[string]poolPolicy) bool {
	for k, x := range a {
		y := b[k]
		if fmt.Sprint(x.prefixes, x.autoAssign, x.secondaryOnly, x.nsSel, x.svcSel, x.labels) != fmt.Sprint(y.prefixes, y.autoAssign, y.secondaryOnly, y.nsSel, y.svcSel, y.labels) {
			return true
		}
	}
	return false
}

// parseIPPool checks one IPPool against the pools accepted so far. The
// reason is v1alpha1.ReasonValid when it can be used.
func parseIPPool(pool *v1alpha1.IPPool, flagNames map[string]bool, accepted []ipam.PoolConfig) (ipam.PoolConfig, poolPolicy, string, string) {
	pc := ipam.PoolConfig{Name: pool.Name, AvoidBuggyIPs: pool.Spec.AvoidBuggyIPs}
	pol := poolPolicy{fromCR: true, autoAssign: pool.Spec.AutoAssign == nil || *pool.Spec.AutoAssign, secondaryOnly: pool.Spec.SecondaryOnly, labels: pool.Labels}
	bad := func(reason, field, format string, args ...any) (ipam.PoolConfig, poolPolicy, string, string) {
		return pc, pol, reason, field + ": " + fmt.Sprintf(format, args...)
	}
	if !ipam.ValidName(pool.Name) {
		return bad(v1alpha1.ReasonInvalid, "metadata.name", "%q is not a valid pool name (1-63 of [A-Za-z0-9._-])", pool.Name)
	}
	if flagNames[pool.Name] {
		return bad(v1alpha1.ReasonInvalid, "metadata.name", "pool %q is defined by the controller's flags or pool file; give the IPPool another name", pool.Name)
	}
	type item struct {
		field string
		r     ipam.Range
		pfx   []netip.Prefix
	}
	var items []item
	for i, c := range pool.Spec.CIDRs {
		field := fmt.Sprintf("spec.cidrs[%d]", i)
		r, err := ipam.ParseRange(c)
		if err != nil || !strings.Contains(c, "/") {
			return bad(v1alpha1.ReasonInvalid, field, "%q is not a CIDR: %v", c, err)
		}
		items = append(items, item{field, r, []netip.Prefix{netip.MustParsePrefix(strings.TrimSpace(c)).Masked()}})
	}
	for i, rg := range pool.Spec.Ranges {
		field := fmt.Sprintf("spec.ranges[%d]", i)
		r, err := ipam.ParseRange(strings.TrimSpace(rg.Start) + "-" + strings.TrimSpace(rg.End))
		if err != nil {
			return bad(v1alpha1.ReasonInvalid, field, "%v", err)
		}
		items = append(items, item{field, r, rangePrefixes(r)})
	}
	if len(items) == 0 {
		return bad(v1alpha1.ReasonInvalid, "spec", "no cidrs or ranges")
	}
	for i, it := range items {
		for _, prev := range items[:i] {
			if ipam.Overlaps(it.r, []ipam.PoolConfig{{Name: pool.Name, Ranges: []ipam.Range{prev.r}}}) != "" {
				return bad(v1alpha1.ReasonOverlap, it.field, "%s overlaps %s of the same pool", it.r, prev.field)
			}
		}
		if o := ipam.Overlaps(it.r, accepted); o != "" {
			return bad(v1alpha1.ReasonOverlap, it.field, "%s overlaps %s; the older pool keeps it", it.r, o)
		}
		pc.Ranges = append(pc.Ranges, it.r)
		pol.prefixes = append(pol.prefixes, it.pfx...)
	}
	var err error
	if pool.Spec.NamespaceSelector != nil {
		if pol.nsSel, err = metav1.LabelSelectorAsSelector(pool.Spec.NamespaceSelector); err != nil {
			return bad(v1alpha1.ReasonInvalid, "spec.namespaceSelector", "%v", err)
		}
	}
	if pool.Spec.ServiceSelector != nil {
		if pol.svcSel, err = metav1.LabelSelectorAsSelector(pool.Spec.ServiceSelector); err != nil {
			return bad(v1alpha1.ReasonInvalid, "spec.serviceSelector", "%v", err)
		}
	}
	var parts []string
	for _, r := range pc.Ranges {
		parts = append(parts, r.String())
	}
	return pc, pol, v1alpha1.ReasonValid, "in use: " + strings.Join(parts, ", ")
}

// rangesPrefixes covers ranges with CIDRs.
func rangesPrefixes(rs []ipam.Range) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range rs {
		out = append(out, rangePrefixes(r)...)
	}
	return out
}

// rangePrefixes returns the fewest CIDRs covering exactly first..last.
func rangePrefixes(r ipam.Range) []netip.Prefix {
	var out []netip.Prefix
	first, last := r.First, r.Last
	bits := first.BitLen()
	for first.IsValid() && first.Compare(last) <= 0 {
		// The largest aligned block starting at first that ends by last.
		l := bits
		for l > 0 {
			p := netip.PrefixFrom(first, l-1).Masked()
			if p.Addr() != first || lastOf(p).Compare(last) > 0 {
				break
			}
			l--
		}
		p := netip.PrefixFrom(first, l)
		out = append(out, p)
		end := lastOf(p)
		if end == last {
			break
		}
		first = end.Next()
	}
	return out
}

func lastOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// setValid writes the Valid condition of one of our objects (obj, whose
// conditions are conds) when it changed, with a Warning Event when it
// turned or stays invalid with a new message.
func (r *Reconciler) setValid(ctx context.Context, obj client.Object, conds *[]metav1.Condition, reason, msg string) {
	orig := obj.DeepCopyObject().(client.Object)
	status := metav1.ConditionFalse
	if reason == v1alpha1.ReasonValid {
		status = metav1.ConditionTrue
	}
	if len(msg) > 32000 {
		msg = msg[:32000]
	}
	if !meta.SetStatusCondition(conds, metav1.Condition{Type: v1alpha1.ConditionValid, Status: status, Reason: reason, Message: msg, ObservedGeneration: obj.GetGeneration()}) {
		return
	}
	if err := r.client.Status().Patch(ctx, obj, client.MergeFrom(orig)); err != nil {
		r.log.Error("write Valid condition", "kind", fmt.Sprintf("%T", obj), "name", obj.GetName(), "error", err)
		return
	}
	if status == metav1.ConditionFalse {
		r.recorder.Eventf(obj, corev1.EventTypeWarning, reason, "%s", msg)
		r.log.Warn("object not used: "+msg, "kind", fmt.Sprintf("%T", obj), "name", obj.GetName())
	}
}
