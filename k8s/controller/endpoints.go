package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/k8s/annotations"
	"github.com/telcolb/telcolb/k8s/ipam"
	"github.com/telcolb/telcolb/multus"
)

const (
	excludeLabel     = "node.kubernetes.io/exclude-from-external-load-balancers"
	networkStatusKey = multus.NetworkStatusAnnotation
)

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// endpointUsable: ready (nil means ready, per the EndpointSlice API), and not
// terminating; serving alone is not enough for new flows.
func endpointUsable(ep discoveryv1.Endpoint) bool {
	if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
		return false
	}
	if ep.Conditions.Serving != nil && !*ep.Conditions.Serving {
		return false
	}
	return ep.Conditions.Terminating == nil || !*ep.Conditions.Terminating
}

// backend is one usable endpoint of a Service port.
type backend struct {
	addr     netip.Addr
	port     uint16
	nodeName string
	pod      *corev1.ObjectReference
}

// slicesFor returns the usable endpoints for Service port sp, from the
// Service's EndpointSlices (target port resolved per slice, as kube-proxy
// does, since it can differ per pod for a named targetPort).
func (r *Reconciler) slicesFor(ctx context.Context, svc *corev1.Service) ([]discoveryv1.EndpointSlice, error) {
	var list discoveryv1.EndpointSliceList
	if err := r.client.List(ctx, &list, client.InNamespace(svc.Namespace), client.MatchingFields{sliceServiceIndex: svc.Name}); err != nil {
		return nil, fmt.Errorf("list EndpointSlices of %s: %w", key(svc), err)
	}
	return list.Items, nil
}

func backends(slices []discoveryv1.EndpointSlice, sp corev1.ServicePort) []backend {
	var out []backend
	for _, sl := range slices {
		var port *int32
		for _, p := range sl.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if name == sp.Name && proto == sp.Protocol {
				port = p.Port
			}
		}
		if port == nil {
			continue
		}
		for _, ep := range sl.Endpoints {
			if !endpointUsable(ep) {
				continue
			}
			for _, s := range ep.Addresses {
				a, err := netip.ParseAddr(s)
				if err != nil {
					continue
				}
				b := backend{addr: a.Unmap(), port: uint16(*port), pod: ep.TargetRef}
				if ep.NodeName != nil {
					b.nodeName = *ep.NodeName
				}
				out = append(out, b)
			}
		}
	}
	return out
}

func nodeAddr(n *corev1.Node, fam ipam.Family) (netip.Addr, bool) {
	for _, t := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP} {
		for _, a := range n.Status.Addresses {
			if a.Type != t {
				continue
			}
			x, err := netip.ParseAddr(a.Address)
			if err == nil && ipam.FamilyOf(x) == fam {
				return x.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}

// ruleInput is what building one Service's rules reads, fetched once.
type ruleInput struct {
	svc    *corev1.Service
	spec   annotations.Spec
	slices []discoveryv1.EndpointSlice
	nodes  []corev1.Node
	// Multus: pods read once per reconcile, and one note per bad pod.
	podCache map[string]*corev1.Pod
	noted    map[string]bool
	notes    []string
}

// rules builds the daemon rules of a Service: one per port and VIP family.
// notes are per-endpoint problems (a malformed Multus pod) that skip that
// endpoint only; err is a problem with the Service as a whole, naming what
// the user should change.
func (r *Reconciler) rules(ctx context.Context, svc *corev1.Service, spec annotations.Spec, primary, secondary []netip.Addr) ([]api.Service, []string, error) {
	in := &ruleInput{svc: svc, spec: spec, podCache: map[string]*corev1.Pod{}, noted: map[string]bool{}}
	var err error
	if in.slices, err = r.slicesFor(ctx, svc); err != nil {
		return nil, nil, err
	}
	if !spec.UsePodNetwork && len(spec.MultusNets) == 0 {
		var nl corev1.NodeList
		if err := r.client.List(ctx, &nl); err != nil {
			return nil, nil, fmt.Errorf("list nodes: %w", err)
		}
		in.nodes = nl.Items
	}
	var out []api.Service
	for _, sp := range svc.Spec.Ports {
		for _, vip := range primary {
			rule, ok, err := r.rule(ctx, in, sp, vip, secondary)
			if err != nil {
				return nil, in.notes, err
			}
			if ok {
				out = append(out, rule)
			}
		}
	}
	return out, in.notes, nil
}

// rule builds the rule of one port and VIP; ok is false when there is no
// endpoint to send to.
func (r *Reconciler) rule(ctx context.Context, in *ruleInput, sp corev1.ServicePort, vip netip.Addr, secondary []netip.Addr) (api.Service, bool, error) {
	spec := in.spec
	proto := strings.ToLower(string(sp.Protocol))
	vfam := ipam.FamilyOf(vip)
	epFam := vfam
	if spec.IPAM == annotations.IPAMIPv6to4 {
		epFam = ipam.IPv4
	}
	bs := backends(in.slices, sp)
	var eps []api.Endpoint
	switch {
	case len(spec.MultusNets) > 0:
		eps = r.multusEndpoints(ctx, in, bs, epFam)
	case spec.UsePodNetwork:
		eps = podEndpoints(bs, epFam)
	default:
		var err error
		if eps, err = nodeEndpoints(in, sp, bs, epFam); err != nil {
			return api.Service{}, false, err
		}
	}
	eps = dedupe(eps)
	if len(eps) == 0 {
		return api.Service{}, false, nil
	}
	rule := api.Service{
		Name:               ruleName(in.svc.Namespace, in.svc.Name, sp.Port, proto, vfam == ipam.IPv6),
		VIP:                vip.String(),
		Port:               uint16(sp.Port),
		Protocol:           proto,
		Mode:               spec.Mode,
		Select:             spec.Select,
		IdleTimeoutSeconds: spec.IdleTimeoutSeconds,
		Endpoints:          eps,
		// N2 steering only exists for SCTP; the Service's other ports stay
		// ordinary L4 rules.
		N2: spec.N2 && sp.Protocol == corev1.ProtocolSCTP,
		// PFCP is UDP 8805 (TS 29.244); other ports stay L4 rules.
		PFCP: spec.PFCP && sp.Protocol == corev1.ProtocolUDP && sp.Port == 8805,
	}
	// A Diameter agent on every TCP and SCTP port; UDP ports stay L4.
	if spec.Diameter != nil && sp.Protocol != corev1.ProtocolUDP {
		d := *spec.Diameter
		d.Applications = append([]uint32(nil), d.Applications...)
		rule.Diameter = &d
	}
	if sp.Protocol == corev1.ProtocolSCTP {
		for _, s := range secondary {
			if ipam.FamilyOf(s) == vfam {
				rule.SecondaryVIPs = append(rule.SecondaryVIPs, s.String())
			}
		}
	}
	if spec.Probe != nil {
		p := spec.Probe.ProbeFor(proto)
		rule.Probe = &api.Probe{Type: p.Type, Port: p.Port, Request: p.Request, Response: p.Response,
			IntervalSeconds: p.IntervalSeconds, TimeoutSeconds: p.TimeoutSeconds, Retries: p.Retries}
	}
	api.SetDefaults(&rule)
	if err := api.Validate(&rule); err != nil {
		return api.Service{}, false, rejectedBy(in.svc, sp, err)
	}
	return rule, true, nil
}

// multusEndpoints: the pods' addresses on the Service's Multus networks, at
// the endpoint's port. A pod whose network status is unusable is skipped
// with a note.
func (r *Reconciler) multusEndpoints(ctx context.Context, in *ruleInput, bs []backend, fam ipam.Family) []api.Endpoint {
	var eps []api.Endpoint
	for _, b := range bs {
		if b.pod == nil || b.pod.Kind != "Pod" {
			continue
		}
		addrs, note := r.multusAddrs(ctx, in.svc.Namespace, b.pod.Name, in.spec.MultusNets, in.podCache)
		if note != "" {
			if !in.noted[b.pod.Name] {
				in.notes = append(in.notes, note)
				in.noted[b.pod.Name] = true
			}
			continue
		}
		for _, a := range addrs {
			if ipam.FamilyOf(a) == fam {
				eps = append(eps, api.Endpoint{Address: a.String(), Port: b.port})
			}
		}
	}
	return eps
}

// podEndpoints: the pod IPs and target ports (usepodnetwork).
func podEndpoints(bs []backend, fam ipam.Family) []api.Endpoint {
	var eps []api.Endpoint
	for _, b := range bs {
		if ipam.FamilyOf(b.addr) == fam {
			eps = append(eps, api.Endpoint{Address: b.addr.String(), Port: b.port})
		}
	}
	return eps
}

// nodeEndpoints: every ready, not excluded node at the port's NodePort
// (with externalTrafficPolicy Local, only nodes running an endpoint), as
// kube-proxy would receive it.
func nodeEndpoints(in *ruleInput, sp corev1.ServicePort, bs []backend, fam ipam.Family) ([]api.Endpoint, error) {
	if sp.NodePort == 0 {
		return nil, fmt.Errorf("port %d/%s has no nodePort (spec.allocateLoadBalancerNodePorts is false): set %s%s or %s%s",
			sp.Port, sp.Protocol, annotations.Prefix, annotations.UsePodNetwork, annotations.Prefix, annotations.MultusNets)
	}
	local := in.svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	withPods := map[string]bool{}
	for _, b := range bs {
		withPods[b.nodeName] = true
	}
	var eps []api.Endpoint
	for i := range in.nodes {
		n := &in.nodes[i]
		if !nodeReady(n) || n.Labels[excludeLabel] != "" && n.Labels[excludeLabel] != "false" {
			continue
		}
		if local && !withPods[n.Name] {
			continue
		}
		if a, ok := nodeAddr(n, fam); ok {
			eps = append(eps, api.Endpoint{Address: a.String(), Port: uint16(sp.NodePort)})
		}
	}
	return eps, nil
}

// multusAddrs returns one pod's addresses on the wanted networks, or a note
// explaining why the pod is skipped (one bad pod never fails the Service).
func (r *Reconciler) multusAddrs(ctx context.Context, ns, name string, nets []string, cache map[string]*corev1.Pod) ([]netip.Addr, string) {
	pod, ok := cache[name]
	if !ok {
		pod = &corev1.Pod{}
		if err := r.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, pod); err != nil {
			if apierrors.IsNotFound(err) {
				pod = nil
			} else {
				return nil, fmt.Sprintf("pod %s/%s skipped: %v", ns, name, err)
			}
		}
		cache[name] = pod
	}
	if pod == nil {
		return nil, ""
	}
	raw, ok := pod.Annotations[networkStatusKey]
	if !ok {
		return nil, fmt.Sprintf("pod %s/%s skipped: no %s annotation (is Multus running?)", ns, name, networkStatusKey)
	}
	parsed, err := multus.Parse(raw)
	if err != nil {
		return nil, fmt.Sprintf("pod %s/%s skipped: %v", ns, name, err)
	}
	var out []netip.Addr
	for _, n := range nets {
		addrs, err := multus.Addresses(parsed, n, ns)
		if err != nil {
			if errors.Is(err, multus.ErrNoNetwork) {
				return nil, fmt.Sprintf("pod %s/%s skipped: not attached to network %q", ns, name, n)
			}
			return nil, fmt.Sprintf("pod %s/%s skipped: %v", ns, name, err)
		}
		out = append(out, addrs...)
	}
	return out, ""
}

func dedupe(eps []api.Endpoint) []api.Endpoint {
	sort.Slice(eps, func(i, j int) bool {
		if eps[i].Address != eps[j].Address {
			return eps[i].Address < eps[j].Address
		}
		return eps[i].Port < eps[j].Port
	})
	out := eps[:0]
	for i, e := range eps {
		if i > 0 && e == eps[i-1] {
			continue
		}
		out = append(out, e)
	}
	return out
}
