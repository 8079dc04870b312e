package advertise

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/k8s/apis/v1alpha1"
)

func peerObj(name, addr string, myASN uint32, sel map[string]string, mod ...func(*v1alpha1.BGPPeerSpec)) v1alpha1.BGPPeer {
	p := v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.BGPPeerSpec{Address: addr, ASN: 65000, MyASN: myASN}}
	if sel != nil {
		p.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: sel}
	}
	for _, m := range mod {
		m(&p.Spec)
	}
	return p
}

func adObj(name, mode string, pools []string, sel map[string]string, mod ...func(*v1alpha1.AdvertisementSpec)) v1alpha1.Advertisement {
	a := v1alpha1.Advertisement{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.AdvertisementSpec{Mode: mode, IPPools: pools}}
	if sel != nil {
		a.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: sel}
	}
	for _, m := range mod {
		m(&a.Spec)
	}
	return a
}

func baseInput() Input {
	return Input{
		Nodes: []Node{
			{Name: "n1", Labels: map[string]string{"edge": "yes", "rack": "a"}, InternalIP: netip.MustParseAddr("192.0.2.11")},
			{Name: "n2", Labels: map[string]string{"edge": "yes", "rack": "b"}, InternalIP: netip.MustParseAddr("192.0.2.12")},
			{Name: "n3", Labels: map[string]string{"rack": "a"}, InternalIP: netip.MustParseAddr("192.0.2.13")},
		},
		Pools: map[string]Pool{
			"p4":   {FromCR: true, Labels: map[string]string{"adv": "yes"}, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/28")}},
			"p6":   {FromCR: true, Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/120")}},
			"flag": {Prefixes: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/32"), netip.MustParsePrefix("10.9.0.2/31")}},
		},
		InvalidPools:    map[string]bool{"broken": true},
		Secrets:         map[string]map[string][]byte{"bgp": {"password": []byte("s3cret"), "other": []byte("x")}},
		SecretNamespace: "telcolb-system",
		HeartbeatPort:   7947,
	}
}

func TestBuild(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Input)
		// want is the JSON of each node's configuration; missing nodes are
		// not checked.
		want         map[string]string
		peerProblems map[string]string // name -> field
		adProblems   map[string]string
	}{
		{
			name: "no objects: every node gets an empty configuration",
			want: map[string]string{"n1": `{"nodeName":"n1"}`, "n3": `{"nodeName":"n3"}`},
		},
		{
			name: "bgp peer on edge nodes with password and BFD; advertisement of two pools",
			mod: func(in *Input) {
				in.Peers = []v1alpha1.BGPPeer{peerObj("r1", "192.0.2.1", 65001, map[string]string{"edge": "yes"}, func(s *v1alpha1.BGPPeerSpec) {
					s.PasswordSecretRef = &v1alpha1.SecretKeyRef{Name: "bgp"}
					s.BFD = &v1alpha1.BFDProfile{ReceiveIntervalMs: 100, TransmitIntervalMs: 100, DetectMultiplier: 3}
					s.HoldTimeSeconds, s.KeepaliveTimeSeconds = 9, 3
				})}
				in.Ads = []v1alpha1.Advertisement{adObj("a", "bgp", []string{"p6", "p4"}, nil, func(s *v1alpha1.AdvertisementSpec) {
					s.Communities = []string{"65001:100"}
					s.LocalPreference = ptr.To(uint32(200))
					s.AggregationLength = ptr.To(int32(28))
				})}
			},
			want: map[string]string{
				"n1": `{"nodeName":"n1","bgp":{"asn":65001,"peers":[{"name":"r1","address":"192.0.2.1","asn":65000,"holdTimeSeconds":9,"keepaliveTimeSeconds":3,"password":"s3cret","bfd":{"receiveIntervalMs":100,"transmitIntervalMs":100,"detectMultiplier":3}}]},"advertisements":[{"name":"a","mode":"bgp","prefixes":["10.1.0.0/28","2001:db8:1::/120"],"communities":["65001:100"],"localPreference":200,"aggregationLength":28}]}`,
				// n3 has no peer: the bgp advertisement is not sent there.
				"n3": `{"nodeName":"n3"}`,
			},
		},
		{
			name: "missing Secret leaves the peer out and names the field",
			mod: func(in *Input) {
				in.Peers = []v1alpha1.BGPPeer{
					peerObj("r1", "192.0.2.1", 65001, nil),
					peerObj("r2", "192.0.2.2", 65001, nil, func(s *v1alpha1.BGPPeerSpec) { s.PasswordSecretRef = &v1alpha1.SecretKeyRef{Name: "nope"} }),
					peerObj("r3", "192.0.2.3", 65001, nil, func(s *v1alpha1.BGPPeerSpec) {
						s.PasswordSecretRef = &v1alpha1.SecretKeyRef{Name: "bgp", Key: "missing"}
					}),
				}
			},
			want:         map[string]string{"n3": `{"nodeName":"n3","bgp":{"asn":65001,"peers":[{"name":"r1","address":"192.0.2.1","asn":65000}]}}`},
			peerProblems: map[string]string{"r2": "spec.passwordSecretRef.name", "r3": "spec.passwordSecretRef.key"},
		},
		{
			name: "two myASNs on one node: the later peer (by name) is left out there",
			mod: func(in *Input) {
				in.Peers = []v1alpha1.BGPPeer{peerObj("r2", "192.0.2.2", 65002, map[string]string{"rack": "a"}), peerObj("r1", "192.0.2.1", 65001, nil)}
			},
			want: map[string]string{
				"n1": `{"nodeName":"n1","bgp":{"asn":65001,"peers":[{"name":"r1","address":"192.0.2.1","asn":65000}]}}`,
				"n2": `{"nodeName":"n2","bgp":{"asn":65001,"peers":[{"name":"r1","address":"192.0.2.1","asn":65000}]}}`,
			},
			peerProblems: map[string]string{"r2": "spec.myASN"},
		},
		{
			name: "unknown and invalid pools and peers are named; the rest is announced",
			mod: func(in *Input) {
				in.Peers = []v1alpha1.BGPPeer{peerObj("r1", "192.0.2.1", 65001, nil)}
				in.Ads = []v1alpha1.Advertisement{
					adObj("a", "bgp", []string{"p4", "nope"}, nil, func(s *v1alpha1.AdvertisementSpec) { s.Peers = []string{"r1", "ghost"} }),
					adObj("b", "bgp", []string{"broken"}, nil),
				}
			},
			want: map[string]string{
				"n1": `{"nodeName":"n1","bgp":{"asn":65001,"peers":[{"name":"r1","address":"192.0.2.1","asn":65000}]},"advertisements":[{"name":"a","mode":"bgp","prefixes":["10.1.0.0/28"],"peers":["r1"]}]}`,
			},
			adProblems: map[string]string{"a": "spec.ipPools[1]", "b": "spec.ipPools[0]"},
		},
		{
			name: "peers filter with no peer of the node: not sent (empty would mean all)",
			mod: func(in *Input) {
				in.Peers = []v1alpha1.BGPPeer{peerObj("r1", "192.0.2.1", 65001, map[string]string{"rack": "a"}), peerObj("r2", "192.0.2.2", 65001, map[string]string{"rack": "b"})}
				in.Ads = []v1alpha1.Advertisement{adObj("a", "bgp", []string{"p4"}, nil, func(s *v1alpha1.AdvertisementSpec) { s.Peers = []string{"r1"} })}
			},
			want: map[string]string{
				"n2": `{"nodeName":"n2","bgp":{"asn":65001,"peers":[{"name":"r2","address":"192.0.2.2","asn":65000}]}}`,
				"n1": `{"nodeName":"n1","bgp":{"asn":65001,"peers":[{"name":"r1","address":"192.0.2.1","asn":65000}]},"advertisements":[{"name":"a","mode":"bgp","prefixes":["10.1.0.0/28"],"peers":["r1"]}]}`,
			},
		},
		{
			name: "l2: members are the selected nodes at InternalIP:heartbeat port; pools by selector and flag pool by name",
			mod: func(in *Input) {
				in.Ads = []v1alpha1.Advertisement{adObj("l", "l2", []string{"flag"}, map[string]string{"edge": "yes"}, func(s *v1alpha1.AdvertisementSpec) {
					s.IPPoolSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"adv": "yes"}}
					s.Interfaces = []string{"eth1"}
				})}
			},
			want: map[string]string{
				"n1": `{"nodeName":"n1","l2":{"members":[{"name":"n1","address":"192.0.2.11:7947"},{"name":"n2","address":"192.0.2.12:7947"}]},"advertisements":[{"name":"l","mode":"l2","prefixes":["10.1.0.0/28","10.9.0.1/32","10.9.0.2/31"],"interfaces":["eth1"]}]}`,
				"n3": `{"nodeName":"n3"}`,
			},
		},
		{
			name: "l2 on a node without InternalIP: named, not sent there, not a member",
			mod: func(in *Input) {
				in.Nodes[1].InternalIP = netip.Addr{}
				in.Ads = []v1alpha1.Advertisement{adObj("l", "l2", []string{"p4"}, map[string]string{"edge": "yes"})}
			},
			want: map[string]string{
				"n1": `{"nodeName":"n1","l2":{"members":[{"name":"n1","address":"192.0.2.11:7947"}]},"advertisements":[{"name":"l","mode":"l2","prefixes":["10.1.0.0/28"]}]}`,
				"n2": `{"nodeName":"n2"}`,
			},
			adProblems: map[string]string{"l": "spec.nodeSelector"},
		},
		{
			name: "bad selector and bad peer address are named",
			mod: func(in *Input) {
				in.Peers = []v1alpha1.BGPPeer{peerObj("r1", "not-an-ip", 65001, nil), peerObj("r2", "192.0.2.2", 65001, nil, func(s *v1alpha1.BGPPeerSpec) { s.SourceAddress = "2001:db8::1" })}
				in.Ads = []v1alpha1.Advertisement{adObj("a", "bgp", []string{"p4"}, nil, func(s *v1alpha1.AdvertisementSpec) {
					s.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Bogus"}}}
				})}
			},
			want:         map[string]string{"n1": `{"nodeName":"n1"}`},
			peerProblems: map[string]string{"r1": "spec.address", "r2": "spec.sourceAddress"},
			adProblems:   map[string]string{"a": "spec.nodeSelector"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := baseInput()
			if tt.mod != nil {
				tt.mod(&in)
			}
			res := Build(in)
			if len(res.Configs) != len(in.Nodes) {
				t.Fatalf("%d configurations for %d nodes", len(res.Configs), len(in.Nodes))
			}
			for node, want := range tt.want {
				got, _ := json.Marshal(res.Configs[node])
				if string(got) != want {
					t.Errorf("node %s:\n got  %s\n want %s", node, got, want)
				}
			}
			checkProblems(t, "BGPPeer", res.PeerProblems, tt.peerProblems)
			checkProblems(t, "Advertisement", res.AdProblems, tt.adProblems)
			checkInvariants(t, in, res)
		})
	}
}

func checkProblems(t *testing.T, kind string, got map[string]Problem, want map[string]string) {
	t.Helper()
	for name, field := range want {
		p, ok := got[name]
		if !ok || p.Field != field {
			t.Errorf("%s %s: problem %+v, want field %s", kind, name, p, field)
		}
		if p.Message == "" || !strings.Contains(p.String(), field) {
			t.Errorf("%s %s: message %q does not name %s", kind, name, p.String(), field)
		}
	}
	for name, p := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s %s: unexpected problem %s", kind, name, p)
		}
	}
}

// checkInvariants holds for every build: what a daemon would reject never
// goes out.
func checkInvariants(t *testing.T, in Input, res Result) {
	t.Helper()
	for node, c := range res.Configs {
		if c.NodeName != node {
			t.Errorf("config of %s has NodeName %q", node, c.NodeName)
		}
		peers := map[string]bool{}
		if c.BGP != nil {
			if len(c.BGP.Peers) == 0 {
				t.Errorf("%s: BGP without peers", node)
			}
			for _, p := range c.BGP.Peers {
				peers[p.Name] = true
				// A myASN conflict leaves the peer out only on the nodes
				// where it conflicts.
				if pr, bad := res.PeerProblems[p.Name]; bad && pr.Field != "spec.myASN" {
					t.Errorf("%s: peer %s with a problem is configured", node, p.Name)
				}
			}
		}
		for _, a := range c.Advertisements {
			if len(a.Prefixes) == 0 {
				t.Errorf("%s: advertisement %s without prefixes", node, a.Name)
			}
			for _, pfx := range a.Prefixes {
				if _, err := netip.ParsePrefix(pfx); err != nil {
					t.Errorf("%s: advertisement %s prefix %q: %v", node, a.Name, pfx, err)
				}
			}
			switch a.Mode {
			case api.AdvertiseBGP:
				if c.BGP == nil {
					t.Errorf("%s: bgp advertisement %s without BGP", node, a.Name)
				}
				for _, p := range a.Peers {
					if !peers[p] {
						t.Errorf("%s: advertisement %s names peer %s the node does not have", node, a.Name, p)
					}
				}
			case api.AdvertiseL2:
				if c.L2 == nil {
					t.Errorf("%s: l2 advertisement %s without L2", node, a.Name)
					continue
				}
				self := false
				for _, m := range c.L2.Members {
					self = self || m.Name == node
				}
				if !self {
					t.Errorf("%s: not a member of its own L2 group %+v", node, c.L2.Members)
				}
			default:
				t.Errorf("%s: mode %q", node, a.Mode)
			}
		}
	}
}
