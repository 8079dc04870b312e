// Package advertise turns the telcolb.io BGPPeer and Advertisement objects,
// the pools and the nodes into one api.AdvertisementConfig per node. It is
// pure (no Kubernetes client, no I/O): the controller gathers the inputs
// from its cache and PUTs the result; every rule is covered by table tests.
package advertise

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/k8s/apis/v1alpha1"
)

// Node is a Kubernetes node as far as advertisement cares.
type Node struct {
	Name   string
	Labels map[string]string
	// InternalIP is the node's InternalIP address (invalid when it has
	// none); L2 members send heartbeats to it.
	InternalIP netip.Addr
	// Draining: the Node is cordoned (spec.unschedulable); its daemon
	// withdraws every VIP (AdvertisementConfig.Draining).
	Draining bool
}

// Pool is a pool advertisements may name: an IPPool object (Labels set,
// matched by ipPoolSelector) or a pool of the controller's flags.
type Pool struct {
	Labels map[string]string
	// FromCR: an IPPool object (only those are matched by ipPoolSelector).
	FromCR   bool
	Prefixes []netip.Prefix
}

// Input is everything a build reads.
type Input struct {
	Nodes []Node
	// Pools holds the pools in force by name; InvalidPools names IPPool
	// objects that exist but are not in force (their Valid condition says why).
	Pools        map[string]Pool
	InvalidPools map[string]bool
	Peers        []v1alpha1.BGPPeer
	Ads          []v1alpha1.Advertisement
	// Secrets holds the Secrets of the controller's namespace by name.
	Secrets map[string]map[string][]byte
	// SecretNamespace names that namespace in messages.
	SecretNamespace string
	// HeartbeatPort is the L2 members' heartbeat port.
	HeartbeatPort int
}

// Problem is why an object is not (entirely) used; Field names the field.
type Problem struct {
	Reason  string
	Field   string
	Message string
}

func (p Problem) String() string { return p.Field + ": " + p.Message }

// Result is a build's outcome.
type Result struct {
	// Configs holds one configuration per node of Input.Nodes.
	Configs map[string]api.AdvertisementConfig
	// PeerProblems and AdProblems hold the first problem of each BGPPeer
	// and Advertisement by name; an object without one is used as written.
	PeerProblems map[string]Problem
	AdProblems   map[string]Problem
}

type peer struct {
	obj *v1alpha1.BGPPeer
	sel labels.Selector
	api api.BGPPeer
}

type ad struct {
	obj      *v1alpha1.Advertisement
	sel      labels.Selector
	prefixes []string
}

func selector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(s)
}

// Build computes every node's configuration. Objects are taken in name
// order, so a conflict is always reported on the same one. A problem takes
// out only what it concerns: a BGPPeer with a missing Secret is left out, an
// Advertisement naming an unknown pool still announces its other pools.
func Build(in Input) Result {
	res := Result{Configs: map[string]api.AdvertisementConfig{}, PeerProblems: map[string]Problem{}, AdProblems: map[string]Problem{}}
	peerProblem := func(name, reason, field, format string, args ...any) {
		if _, ok := res.PeerProblems[name]; !ok {
			res.PeerProblems[name] = Problem{reason, field, fmt.Sprintf(format, args...)}
		}
	}
	adProblem := func(name, reason, field, format string, args ...any) {
		if _, ok := res.AdProblems[name]; !ok {
			res.AdProblems[name] = Problem{reason, field, fmt.Sprintf(format, args...)}
		}
	}

	peerObjs := append([]v1alpha1.BGPPeer(nil), in.Peers...)
	sort.Slice(peerObjs, func(i, j int) bool { return peerObjs[i].Name < peerObjs[j].Name })
	var peers []peer
	peerExists := map[string]bool{}
	for i := range peerObjs {
		p := &peerObjs[i]
		peerExists[p.Name] = true
		sel, err := selector(p.Spec.NodeSelector)
		if err != nil {
			peerProblem(p.Name, v1alpha1.ReasonInvalid, "spec.nodeSelector", "%v", err)
			continue
		}
		a, prob := apiPeer(p, in)
		if prob != nil {
			peerProblem(p.Name, prob.Reason, prob.Field, "%s", prob.Message)
			continue
		}
		peers = append(peers, peer{obj: p, sel: sel, api: a})
	}

	adObjs := append([]v1alpha1.Advertisement(nil), in.Ads...)
	sort.Slice(adObjs, func(i, j int) bool { return adObjs[i].Name < adObjs[j].Name })
	var ads []ad
	for i := range adObjs {
		a := &adObjs[i]
		sel, err := selector(a.Spec.NodeSelector)
		if err != nil {
			adProblem(a.Name, v1alpha1.ReasonInvalid, "spec.nodeSelector", "%v", err)
			continue
		}
		if a.Spec.Mode != api.AdvertiseBGP && a.Spec.Mode != api.AdvertiseL2 {
			adProblem(a.Name, v1alpha1.ReasonInvalid, "spec.mode", "%q: want bgp or l2", a.Spec.Mode)
			continue
		}
		pools := map[string]bool{}
		for j, name := range a.Spec.IPPools {
			field := fmt.Sprintf("spec.ipPools[%d]", j)
			switch {
			case in.InvalidPools[name]:
				adProblem(a.Name, v1alpha1.ReasonInvalid, field, "IPPool %q is not valid (see its Valid condition); its addresses are not announced", name)
			case in.Pools[name].Prefixes == nil:
				adProblem(a.Name, v1alpha1.ReasonNotFound, field, "IPPool %q not found", name)
			default:
				pools[name] = true
			}
		}
		if a.Spec.IPPoolSelector != nil {
			ps, err := metav1.LabelSelectorAsSelector(a.Spec.IPPoolSelector)
			if err != nil {
				adProblem(a.Name, v1alpha1.ReasonInvalid, "spec.ipPoolSelector", "%v", err)
			} else {
				for name, p := range in.Pools {
					if p.FromCR && ps.Matches(labels.Set(p.Labels)) {
						pools[name] = true
					}
				}
			}
		}
		for j, name := range a.Spec.Peers {
			if !peerExists[name] {
				adProblem(a.Name, v1alpha1.ReasonNotFound, fmt.Sprintf("spec.peers[%d]", j), "BGPPeer %q not found", name)
			}
		}
		var prefixes []netip.Prefix
		for name := range pools {
			prefixes = append(prefixes, in.Pools[name].Prefixes...)
		}
		if len(prefixes) == 0 {
			adProblem(a.Name, v1alpha1.ReasonNotFound, "spec.ipPools", "no pool in force is selected: nothing to announce")
			continue
		}
		sort.Slice(prefixes, func(i, j int) bool {
			if prefixes[i].Addr() != prefixes[j].Addr() {
				return prefixes[i].Addr().Less(prefixes[j].Addr())
			}
			return prefixes[i].Bits() < prefixes[j].Bits()
		})
		var ps []string
		for _, p := range prefixes {
			ps = append(ps, p.String())
		}
		ads = append(ads, ad{obj: a, sel: sel, prefixes: ps})
	}

	nodes := append([]Node(nil), in.Nodes...)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	for _, n := range nodes {
		res.Configs[n.Name] = nodeConfig(n, nodes, peers, ads, in.HeartbeatPort, peerProblem, adProblem)
	}
	return res
}

type problemFunc func(name, reason, field, format string, args ...any)

func nodeConfig(n Node, nodes []Node, peers []peer, ads []ad, hbPort int, peerProblem, adProblem problemFunc) api.AdvertisementConfig {
	cfg := api.AdvertisementConfig{NodeName: n.Name, Draining: n.Draining}
	set := labels.Set(n.Labels)
	onNode := map[string]bool{}
	for _, p := range peers {
		if !p.sel.Matches(set) {
			continue
		}
		if cfg.BGP == nil {
			cfg.BGP = &api.BGPConfig{ASN: p.obj.Spec.MyASN}
		} else if cfg.BGP.ASN != p.obj.Spec.MyASN {
			peerProblem(p.obj.Name, v1alpha1.ReasonInvalid, "spec.myASN", "%d differs from %d of the other BGPPeers of node %s (one ASN per node); this peer is left out there",
				p.obj.Spec.MyASN, cfg.BGP.ASN, n.Name)
			continue
		}
		cfg.BGP.Peers = append(cfg.BGP.Peers, p.api)
		onNode[p.obj.Name] = true
	}
	var l2Members map[string]bool
	for _, a := range ads {
		if !a.sel.Matches(set) {
			continue
		}
		out := api.Advertisement{Name: a.obj.Name, Mode: a.obj.Spec.Mode, Prefixes: a.prefixes}
		switch a.obj.Spec.Mode {
		case api.AdvertiseBGP:
			if len(onNode) == 0 {
				// No peer on this node: nothing to announce to.
				continue
			}
			if len(a.obj.Spec.Peers) > 0 {
				for _, name := range a.obj.Spec.Peers {
					if onNode[name] {
						out.Peers = append(out.Peers, name)
					}
				}
				if len(out.Peers) == 0 {
					// Empty would mean every peer.
					continue
				}
			}
			out.Communities = append([]string(nil), a.obj.Spec.Communities...)
			out.LocalPreference = a.obj.Spec.LocalPreference
			out.MED = a.obj.Spec.MED
			if l := a.obj.Spec.AggregationLength; l != nil {
				out.AggregationLength = uint8(*l)
			}
			if l := a.obj.Spec.AggregationLengthV6; l != nil {
				out.AggregationLengthV6 = uint8(*l)
			}
		case api.AdvertiseL2:
			if !n.InternalIP.IsValid() {
				adProblem(a.obj.Name, v1alpha1.ReasonInvalid, "spec.nodeSelector", "selects node %s, which has no InternalIP address for L2 heartbeats; it does not announce", n.Name)
				continue
			}
			out.Interfaces = append([]string(nil), a.obj.Spec.Interfaces...)
			if l2Members == nil {
				l2Members = map[string]bool{}
			}
			for _, m := range nodes {
				if a.sel.Matches(labels.Set(m.Labels)) && m.InternalIP.IsValid() {
					l2Members[m.Name] = true
				}
			}
		}
		cfg.Advertisements = append(cfg.Advertisements, out)
	}
	if l2Members != nil {
		cfg.L2 = &api.L2Config{}
		for _, m := range nodes {
			if l2Members[m.Name] {
				cfg.L2.Members = append(cfg.L2.Members, api.L2Member{Name: m.Name, Address: net.JoinHostPort(m.InternalIP.String(), strconv.Itoa(hbPort))})
			}
		}
	}
	return cfg
}

func apiPeer(p *v1alpha1.BGPPeer, in Input) (api.BGPPeer, *Problem) {
	s := p.Spec
	out := api.BGPPeer{Name: p.Name, Address: s.Address, ASN: s.ASN, SourceAddress: s.SourceAddress, EBGPMultihop: s.EBGPMultihop}
	addr, err := netip.ParseAddr(s.Address)
	if err != nil {
		return out, &Problem{v1alpha1.ReasonInvalid, "spec.address", fmt.Sprintf("%q is not an IP address", s.Address)}
	}
	if s.SourceAddress != "" {
		src, err := netip.ParseAddr(s.SourceAddress)
		if err != nil {
			return out, &Problem{v1alpha1.ReasonInvalid, "spec.sourceAddress", fmt.Sprintf("%q is not an IP address", s.SourceAddress)}
		}
		if src.Unmap().Is4() != addr.Unmap().Is4() {
			return out, &Problem{v1alpha1.ReasonInvalid, "spec.sourceAddress", fmt.Sprintf("%s is not of the family of spec.address %s", src, addr)}
		}
	}
	if s.Port < 0 || s.Port > 65535 {
		return out, &Problem{v1alpha1.ReasonInvalid, "spec.port", fmt.Sprintf("%d is not a port", s.Port)}
	}
	out.Port = uint16(s.Port)
	if s.HoldTimeSeconds != 0 && s.HoldTimeSeconds < 3 {
		return out, &Problem{v1alpha1.ReasonInvalid, "spec.holdTimeSeconds", fmt.Sprintf("%d: at least 3", s.HoldTimeSeconds)}
	}
	hold := s.HoldTimeSeconds
	if hold == 0 {
		hold = 90
	}
	if s.KeepaliveTimeSeconds < 0 || s.KeepaliveTimeSeconds >= hold {
		return out, &Problem{v1alpha1.ReasonInvalid, "spec.keepaliveTimeSeconds", fmt.Sprintf("%d must be less than the hold time %d", s.KeepaliveTimeSeconds, hold)}
	}
	out.HoldTimeSeconds, out.KeepaliveTimeSeconds = uint32(s.HoldTimeSeconds), uint32(s.KeepaliveTimeSeconds)
	if s.BFD != nil {
		out.BFD = &api.BFDProfile{ReceiveIntervalMs: s.BFD.ReceiveIntervalMs, TransmitIntervalMs: s.BFD.TransmitIntervalMs, DetectMultiplier: s.BFD.DetectMultiplier,
			Multihop: s.BFD.Multihop, MinimumTTL: s.BFD.MinimumTTL}
	}
	if ref := s.PasswordSecretRef; ref != nil {
		key := ref.Key
		if key == "" {
			key = "password"
		}
		sec, ok := in.Secrets[ref.Name]
		if !ok {
			return out, &Problem{v1alpha1.ReasonNotFound, "spec.passwordSecretRef.name", fmt.Sprintf("Secret %s/%s not found; the peer is left out until it exists", in.SecretNamespace, ref.Name)}
		}
		pw, ok := sec[key]
		if !ok || len(pw) == 0 {
			return out, &Problem{v1alpha1.ReasonNotFound, "spec.passwordSecretRef.key", fmt.Sprintf("Secret %s/%s has no key %q (or it is empty)", in.SecretNamespace, ref.Name, key)}
		}
		if len(pw) > 80 {
			// TCP MD5 keys are at most 80 bytes (TCP_MD5SIG_MAXKEYLEN).
			return out, &Problem{v1alpha1.ReasonInvalid, "spec.passwordSecretRef.key", fmt.Sprintf("the password in Secret %s/%s is %d bytes; TCP MD5 allows at most 80", in.SecretNamespace, ref.Name, len(pw))}
		}
		out.Password = string(pw)
	}
	return out, nil
}
