package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/k8s/advertise"
	"github.com/telcolb/telcolb/k8s/apis/v1alpha1"
)

// AnnouncedConditionType is the Service condition saying where its VIPs
// are announced (node, bgp/l2, peers), from the daemons' GET /v1/vips. It
// is set only while at least one daemon reports its VIPs, so a cluster
// without advertisement keeps the Ready condition alone.
const AnnouncedConditionType = "telcolb.io/Announced"

// Announced condition reasons (also Event reasons).
const (
	ReasonAnnounced    = "Announced"
	ReasonNotAnnounced = "NotAnnounced"
)

// advertiser builds every node's advertisement configuration from the
// BGPPeer, Advertisement and IPPool objects, PUTs it to each node's daemon
// (again when it changes or the daemon restarted; never twice the same),
// and reads back from every daemon which VIPs it announces how, for the
// Services' Announced condition. All of it runs in one reconcile of a
// fixed key, so the steps never interleave.
type advertiser struct {
	r    *Reconciler
	kick chan event.TypedGenericEvent[reconcile.Request]

	// last is what each daemon URL was last sent: the encoding and the
	// daemon's full-sync count then.
	last map[string]sentConfig
	// unknownNode remembers the daemons already reported as having no
	// known node, to log it once.
	unknownNode map[string]bool

	mu        sync.Mutex
	announced map[string]announceState // Service key -> condition
}

type sentConfig struct {
	body  string
	syncs int
	err   string
}

type announceState struct {
	status  metav1.ConditionStatus
	reason  string
	message string
}

var advertiseRequest = reconcile.Request{NamespacedName: types.NamespacedName{Name: "advertisement"}}

func (r *Reconciler) setupAdvertiser(mgr manager.Manager) error {
	a := &advertiser{
		r: r, kick: make(chan event.TypedGenericEvent[reconcile.Request], 1),
		last: map[string]sentConfig{}, unknownNode: map[string]bool{}, announced: map[string]announceState{},
	}
	r.adv = a
	r.daemons.onSync = r.kickAdvertiser
	toOne := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{advertiseRequest}
	})
	b := ctrl.NewControllerManagedBy(mgr).Named(r.cfg.Name+"-advertise").
		Watches(&v1alpha1.BGPPeer{}, toOne, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.Advertisement{}, toOne, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.IPPool{}, toOne, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		Watches(&corev1.Node{}, toOne, builder.WithPredicates(predicate.Funcs{
			// Nodes update their status every few seconds: only names,
			// labels, addresses and cordoning (draining) matter here.
			UpdateFunc: func(e event.UpdateEvent) bool {
				o, n := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
				return !equality.Semantic.DeepEqual(o.Labels, n.Labels) || !equality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses) ||
					o.Spec.Unschedulable != n.Spec.Unschedulable
			},
		})).
		WatchesRawSource(source.TypedChannel[reconcile.Request, reconcile.Request](a.kick, handler.TypedFuncs[reconcile.Request, reconcile.Request]{
			GenericFunc: func(_ context.Context, e event.TypedGenericEvent[reconcile.Request], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				q.Add(e.Object)
			},
		}))
	if ns := r.cfg.SecretNamespace; ns != "" {
		b = b.Watches(&corev1.Secret{}, toOne, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetNamespace() == ns })))
	}
	if err := b.Complete(a); err != nil {
		return fmt.Errorf("controller: build advertiser: %w", err)
	}
	return nil
}

// kickAdvertiser asks for a rebuild soon (pools changed, a daemon synced).
func (r *Reconciler) kickAdvertiser() {
	if r.adv == nil {
		return
	}
	select {
	case r.adv.kick <- event.TypedGenericEvent[reconcile.Request]{Object: advertiseRequest}:
	default:
	}
}

// announcement is the Announced condition of Service key, if any.
func (r *Reconciler) announcement(key string) (announceState, bool) {
	if r.adv == nil {
		return announceState{}, false
	}
	r.adv.mu.Lock()
	defer r.adv.mu.Unlock()
	s, ok := r.adv.announced[key]
	return s, ok
}

func (a *advertiser) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	r := a.r
	in, err := a.inputs(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	res := advertise.Build(in)
	a.writeConditions(ctx, in, res)
	a.push(ctx, in.Nodes, res.Configs)
	a.readBack(ctx)
	interval := r.cfg.HealthInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	return reconcile.Result{RequeueAfter: interval}, nil
}

func (a *advertiser) inputs(ctx context.Context) (advertise.Input, error) {
	r := a.r
	in := advertise.Input{Pools: map[string]advertise.Pool{}, InvalidPools: map[string]bool{}, Secrets: map[string]map[string][]byte{},
		SecretNamespace: r.cfg.SecretNamespace, HeartbeatPort: r.cfg.L2HeartbeatPort}
	var nodes corev1.NodeList
	if err := r.client.List(ctx, &nodes); err != nil {
		return in, fmt.Errorf("advertise: list nodes: %w", err)
	}
	for _, n := range nodes.Items {
		in.Nodes = append(in.Nodes, advertise.Node{Name: n.Name, Labels: n.Labels, InternalIP: internalIP(&n), Draining: n.Spec.Unschedulable})
	}
	var peers v1alpha1.BGPPeerList
	if err := r.client.List(ctx, &peers); err != nil {
		return in, fmt.Errorf("advertise: list BGPPeers: %w", err)
	}
	in.Peers = peers.Items
	var ads v1alpha1.AdvertisementList
	if err := r.client.List(ctx, &ads); err != nil {
		return in, fmt.Errorf("advertise: list Advertisements: %w", err)
	}
	in.Ads = ads.Items
	policies := r.pools.snapshot()
	for name, pp := range policies {
		in.Pools[name] = advertise.Pool{Labels: pp.labels, FromCR: pp.fromCR, Prefixes: pp.prefixes}
	}
	var pools v1alpha1.IPPoolList
	if err := r.client.List(ctx, &pools); err != nil {
		return in, fmt.Errorf("advertise: list IPPools: %w", err)
	}
	for _, p := range pools.Items {
		if _, ok := policies[p.Name]; !ok {
			in.InvalidPools[p.Name] = true
		}
	}
	if ns := r.cfg.SecretNamespace; ns != "" {
		var secrets corev1.SecretList
		if err := r.client.List(ctx, &secrets, client.InNamespace(ns)); err != nil {
			return in, fmt.Errorf("advertise: list Secrets of %s: %w", ns, err)
		}
		for _, s := range secrets.Items {
			in.Secrets[s.Name] = s.Data
		}
	}
	return in, nil
}

// internalIP is the node's first InternalIP (IPv4 preferred: the L2
// heartbeat and the ARP side are IPv4 first).
func internalIP(n *corev1.Node) netip.Addr {
	var v6 netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		x, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		if x.Unmap().Is4() {
			return x.Unmap()
		}
		if !v6.IsValid() {
			v6 = x
		}
	}
	return v6
}

func (a *advertiser) writeConditions(ctx context.Context, in advertise.Input, res advertise.Result) {
	r := a.r
	for i := range in.Peers {
		p := &in.Peers[i]
		reason, msg := v1alpha1.ReasonValid, "configured on "+nodesWith(res.Configs, func(c api.AdvertisementConfig) bool {
			if c.BGP == nil {
				return false
			}
			for _, x := range c.BGP.Peers {
				if x.Name == p.Name {
					return true
				}
			}
			return false
		})
		if pr, bad := res.PeerProblems[p.Name]; bad {
			reason, msg = pr.Reason, pr.String()
		}
		r.setValid(ctx, p, &p.Status.Conditions, reason, msg)
	}
	for i := range in.Ads {
		ad := &in.Ads[i]
		reason, msg := v1alpha1.ReasonValid, "announced from "+nodesWith(res.Configs, func(c api.AdvertisementConfig) bool {
			for _, x := range c.Advertisements {
				if x.Name == ad.Name {
					return true
				}
			}
			return false
		})
		if pr, bad := res.AdProblems[ad.Name]; bad {
			reason, msg = pr.Reason, pr.String()
		}
		r.setValid(ctx, ad, &ad.Status.Conditions, reason, msg)
	}
}

// nodesWith lists the nodes whose configuration satisfies f ("no node").
func nodesWith(cfgs map[string]api.AdvertisementConfig, f func(api.AdvertisementConfig) bool) string {
	var names []string
	for n, c := range cfgs {
		if f(c) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "no node (none selected, or no peer on the selected nodes)"
	}
	sort.Strings(names)
	if len(names) > 8 {
		names = append(names[:8], fmt.Sprintf("and %d more", len(names)-8))
	}
	return "nodes " + strings.Join(names, ", ")
}

// nodeOf is the node of a daemon: as configured or discovered, else the
// node whose InternalIP is the URL's host (daemons run on the host network).
func nodeOf(t Target, nodes []advertise.Node) string {
	if t.Node != "" {
		return t.Node
	}
	u, err := url.Parse(t.URL)
	if err != nil {
		return ""
	}
	h, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return ""
	}
	for _, n := range nodes {
		if n.InternalIP == h.Unmap() {
			return n.Name
		}
	}
	return ""
}

// push sends each daemon its node's configuration when it differs from
// what the daemon was last sent or the daemon was synced again since
// (restarted, replaced). A node no object selects gets an empty
// configuration: level-triggered, the daemon withdraws what it announced.
func (a *advertiser) push(ctx context.Context, nodes []advertise.Node, cfgs map[string]api.AdvertisementConfig) {
	r := a.r
	seen := map[string]bool{}
	for _, t := range r.daemons.Targets() {
		seen[t.URL] = true
		ac, ok := t.Client.(AdvertisementClient)
		if !ok || !t.Synced {
			continue
		}
		node := nodeOf(t, nodes)
		if node == "" {
			if !a.unknownNode[t.URL] {
				a.unknownNode[t.URL] = true
				r.log.Warn("daemon's node is unknown: it gets no advertisement configuration (discover daemons with --daemon-service, or give --daemons as node=url)", "daemon", t.URL)
			}
			continue
		}
		delete(a.unknownNode, t.URL)
		cfg, ok := cfgs[node]
		if !ok {
			cfg = api.AdvertisementConfig{NodeName: node}
		}
		b, _ := json.Marshal(cfg)
		if last, ok := a.last[t.URL]; ok && last.body == string(b) && last.syncs == t.Syncs {
			continue
		}
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := ac.PutAdvertisement(c, cfg)
		cancel()
		sent := sentConfig{body: string(b), syncs: t.Syncs}
		if err != nil {
			// A 4xx is not retried until the configuration changes (the
			// same PUT would fail the same way); anything else is.
			r.metrics.advertisementPuts.WithLabelValues("error").Inc()
			r.log.Warn("advertisement configuration refused or not sent", "daemon", t.URL, "node", node, "error", err)
			if !api.IsClientError(err) {
				delete(a.last, t.URL)
				continue
			}
			sent.err = err.Error()
		} else {
			r.metrics.advertisementPuts.WithLabelValues("ok").Inc()
			r.log.Info("advertisement configuration sent", "daemon", t.URL, "node", node, "advertisements", len(cfg.Advertisements))
		}
		a.last[t.URL] = sent
	}
	for u := range a.last {
		if !seen[u] {
			delete(a.last, u)
		}
	}
}

// vipView is one node's report of one VIP.
type vipView struct {
	node string
	st   api.VIPStatus
}

// readBack asks every daemon which VIPs it serves and how it announces
// them, and turns that into each Service's Announced condition; Services
// whose condition changes are reconciled (which writes it, with an Event).
func (a *advertiser) readBack(ctx context.Context) {
	r := a.r
	byService := map[string]map[string][]vipView{} // Service key -> VIP -> views
	answered := 0
	var nodes []advertise.Node
	var nl corev1.NodeList
	if err := r.client.List(ctx, &nl); err == nil {
		for _, n := range nl.Items {
			nodes = append(nodes, advertise.Node{Name: n.Name, InternalIP: internalIP(&n)})
		}
	}
	for _, t := range r.daemons.Targets() {
		ac, ok := t.Client.(AdvertisementClient)
		if !ok || !t.Synced {
			continue
		}
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		list, err := ac.VIPs(c)
		cancel()
		if err != nil {
			if !api.IsNotFound(err) {
				r.log.Debug("read VIPs", "daemon", t.URL, "error", err)
			}
			continue
		}
		answered++
		node := nodeOf(t, nodes)
		if node == "" {
			node = t.URL
		}
		for _, v := range list {
			for _, name := range v.Services {
				k, ours := ruleOwner(name)
				if !ours {
					continue
				}
				if byService[k] == nil {
					byService[k] = map[string][]vipView{}
				}
				byService[k][v.VIP] = append(byService[k][v.VIP], vipView{node: node, st: v})
			}
		}
	}
	if answered == 0 {
		return
	}
	next := map[string]announceState{}
	for k, vips := range byService {
		next[k] = announceOf(vips)
	}
	a.mu.Lock()
	var changed []string
	for k, s := range next {
		if a.announced[k] != s {
			changed = append(changed, k)
		}
	}
	for k := range a.announced {
		if _, ok := next[k]; !ok {
			changed = append(changed, k)
		}
	}
	a.announced = next
	a.mu.Unlock()
	for _, k := range changed {
		ns, name, _ := strings.Cut(k, "/")
		select {
		case r.wake <- event.TypedGenericEvent[reconcile.Request]{Object: reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}:
		case <-ctx.Done():
			return
		}
	}
}

// announceOf words the condition: per VIP the nodes announcing it and how,
// or why no node does.
func announceOf(vips map[string][]vipView) announceState {
	keys := make([]string, 0, len(vips))
	for v := range vips {
		keys = append(keys, v)
	}
	sort.Strings(keys)
	all := true
	var parts []string
	for _, v := range keys {
		views := vips[v]
		sort.Slice(views, func(i, j int) bool { return views[i].node < views[j].node })
		var by, why []string
		seen := map[string]bool{}
		for _, w := range views {
			if seen[w.node] {
				continue
			}
			seen[w.node] = true
			if len(w.st.Announced) > 0 {
				how := strings.Join(w.st.Announced, ", ")
				if w.st.Owner != "" {
					how += ", l2 owner " + w.st.Owner
				}
				by = append(by, fmt.Sprintf("%s (%s)", w.node, how))
			} else if w.st.Reason != "" {
				why = append(why, w.node+": "+w.st.Reason)
			} else {
				why = append(why, w.node+": not announced")
			}
		}
		if len(by) > 0 {
			parts = append(parts, fmt.Sprintf("%s announced by %s", v, strings.Join(by, "; ")))
		} else {
			all = false
			parts = append(parts, fmt.Sprintf("%s not announced (%s)", v, strings.Join(why, "; ")))
		}
	}
	s := announceState{status: metav1.ConditionTrue, reason: ReasonAnnounced, message: strings.Join(parts, "; ")}
	if !all {
		s.status, s.reason = metav1.ConditionFalse, ReasonNotAnnounced
	}
	if len(s.message) > 32000 {
		s.message = s.message[:32000]
	}
	return s
}
