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

// rules builds the daemon rules of a Service: one per port and VIP family.
// notes are per-endpoint problems (a malformed Multus pod) that skip that
// endpoint only; err is a problem with the Service as a whole.
func (r *Reconciler) rules(ctx context.Context, svc *corev1.Service, spec annotations.Spec, primary, secondary []netip.Addr) ([]api.Service, []string, error) {
	slices, err := r.slicesFor(ctx, svc)
	if err != nil {
		return nil, nil, err
	}
	var nodes []corev1.Node
	if !spec.UsePodNetwork && len(spec.MultusNets) == 0 {
		var nl corev1.NodeList
		if err := r.client.List(ctx, &nl); err != nil {
			return nil, nil, fmt.Errorf("list nodes: %w", err)
		}
		nodes = nl.Items
	}
	var notes []string
	podCache := map[string]*corev1.Pod{}
	noted := map[string]bool{}
	var out []api.Service
	for _, sp := range svc.Spec.Ports {
		proto := strings.ToLower(string(sp.Protocol))
		for _, vip := range primary {
			vfam := ipam.FamilyOf(vip)
			epFam := vfam
			if spec.IPAM == annotations.IPAMIPv6to4 {
				epFam = ipam.IPv4
			}
			bs := backends(slices, sp)
			var eps []api.Endpoint
			switch {
			case len(spec.MultusNets) > 0:
				for _, b := range bs {
					if b.pod == nil || b.pod.Kind != "Pod" {
						continue
					}
					addrs, note := r.multusAddrs(ctx, svc.Namespace, b.pod.Name, spec.MultusNets, podCache)
					if note != "" {
						if !noted[b.pod.Name] {
							notes = append(notes, note)
							noted[b.pod.Name] = true
						}
						continue
					}
					for _, a := range addrs {
						if ipam.FamilyOf(a) == epFam {
							eps = append(eps, api.Endpoint{Address: a.String(), Port: b.port})
						}
					}
				}
			case spec.UsePodNetwork:
				for _, b := range bs {
					if ipam.FamilyOf(b.addr) == epFam {
						eps = append(eps, api.Endpoint{Address: b.addr.String(), Port: b.port})
					}
				}
			default:
				if sp.NodePort == 0 {
					return nil, notes, fmt.Errorf("port %d/%s has no nodePort (allocateLoadBalancerNodePorts is false): set %s%s or %s%s",
						sp.Port, sp.Protocol, annotations.Prefix, annotations.UsePodNetwork, annotations.Prefix, annotations.MultusNets)
				}
				local := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
				withPods := map[string]bool{}
				for _, b := range bs {
					withPods[b.nodeName] = true
				}
				for i := range nodes {
					n := &nodes[i]
					if !nodeReady(n) || n.Labels[excludeLabel] != "" && n.Labels[excludeLabel] != "false" {
						continue
					}
					if local && !withPods[n.Name] {
						continue
					}
					if a, ok := nodeAddr(n, epFam); ok {
						eps = append(eps, api.Endpoint{Address: a.String(), Port: uint16(sp.NodePort)})
					}
				}
			}
			eps = dedupe(eps)
			if len(eps) == 0 {
				continue
			}
			rule := api.Service{
				Name:               ruleName(svc.Namespace, svc.Name, sp.Port, proto, vfam == ipam.IPv6),
				VIP:                vip.String(),
				Port:               uint16(sp.Port),
				Protocol:           proto,
				Mode:               spec.Mode,
				Select:             spec.Select,
				IdleTimeoutSeconds: spec.IdleTimeoutSeconds,
				Endpoints:          eps,
				// N2 steering only exists for SCTP; the Service's other
				// ports stay ordinary L4 rules.
				N2: spec.N2 && sp.Protocol == corev1.ProtocolSCTP,
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
				rule.Probe = &api.Probe{Type: p.Type, Port: p.Port, Request: p.Request, Response: p.Response, TimeoutSeconds: p.TimeoutSeconds, Retries: p.Retries}
			}
			api.SetDefaults(&rule)
			if err := api.Validate(&rule); err != nil {
				return nil, notes, fmt.Errorf("port %d/%s: the daemon would reject this rule: %w", sp.Port, sp.Protocol, err)
			}
			out = append(out, rule)
		}
	}
	return out, notes, nil
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
