package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/cmd/telcolb/app"
	"github.com/telcolb/telcolb/dataplane"
	"github.com/telcolb/telcolb/k8s/apis/v1alpha1"
)

// advDaemon is the real daemon API server (rules) plus the advertisement
// endpoints, which the daemon of this branch does not have yet (helper 14
// writes them): PUT /v1/advertisement records each configuration, GET
// /v1/vips answers, per VIP of the daemon's rules, what the test says the
// node announces, when a PUT advertisement covers the VIP.
type advDaemon struct {
	*testDaemon
	mu       sync.Mutex
	puts     []api.AdvertisementConfig
	announce []string
	owner    string
	reason   string
	// bootID, when set, replaces the daemon's boot ID in /v1/health: the
	// controller then sees a restarted daemon.
	bootID string
}

func startAdvDaemon(t *testing.T) *advDaemon {
	t.Helper()
	s, err := app.NewServer(app.Config{
		Datapath: &fakeDatapath{services: map[uint32]dataplane.Service{}},
		StateDir: t.TempDir(),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	d := &advDaemon{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case req.URL.Path == "/"+api.Version+"/advertisement" && req.Method == http.MethodPut:
			var cfg api.AdvertisementConfig
			dec := json.NewDecoder(req.Body)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&cfg); err != nil {
				http.Error(w, `{"message":"bad body"}`, http.StatusBadRequest)
				return
			}
			d.mu.Lock()
			d.puts = append(d.puts, cfg)
			d.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		case req.URL.Path == "/"+api.Version+"/vips" && req.Method == http.MethodGet:
			rules, err := d.client.ListServices(req.Context())
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			d.mu.Lock()
			var prefixes []netip.Prefix
			if n := len(d.puts); n > 0 {
				for _, a := range d.puts[n-1].Advertisements {
					for _, p := range a.Prefixes {
						prefixes = append(prefixes, netip.MustParsePrefix(p))
					}
				}
			}
			byVIP := map[string]*api.VIPStatus{}
			var out []api.VIPStatus
			for _, r := range rules {
				for _, v := range append([]string{r.Service.VIP}, r.Service.SecondaryVIPs...) {
					st := byVIP[v]
					if st == nil {
						st = &api.VIPStatus{VIP: v}
						covered := false
						for _, p := range prefixes {
							covered = covered || p.Contains(netip.MustParseAddr(v))
						}
						switch {
						case !covered:
							st.Reason = "no advertisement covers it"
						case len(d.announce) > 0:
							st.Announced, st.Owner = append([]string(nil), d.announce...), d.owner
						default:
							st.Reason = d.reason
						}
						byVIP[v] = st
					}
					st.Services = append(st.Services, r.Service.Name)
				}
			}
			d.mu.Unlock()
			for _, st := range byVIP {
				out = append(out, *st)
			}
			_ = json.NewEncoder(w).Encode(out)
		case req.URL.Path == "/"+api.Version+"/health" && req.Method == http.MethodGet:
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			var h api.Health
			if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &h) != nil {
				w.WriteHeader(rec.Code)
				_, _ = w.Write(rec.Body.Bytes())
				return
			}
			d.mu.Lock()
			if d.bootID != "" {
				h.BootID = d.bootID
			}
			d.mu.Unlock()
			_ = json.NewEncoder(w).Encode(h)
		default:
			s.ServeHTTP(w, req)
		}
	}))
	t.Cleanup(func() { hs.Close(); _ = s.Close() })
	c, err := api.NewClient(api.ClientConfig{BaseURL: hs.URL})
	if err != nil {
		t.Fatal(err)
	}
	d.testDaemon = &testDaemon{URL: hs.URL, client: c, srv: hs}
	return d
}

func (d *advDaemon) lastPut() (api.AdvertisementConfig, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.puts) == 0 {
		return api.AdvertisementConfig{}, 0
	}
	return d.puts[len(d.puts)-1], len(d.puts)
}

func (d *advDaemon) setAnnounce(via []string, owner, reason string) {
	d.mu.Lock()
	d.announce, d.owner, d.reason = via, owner, reason
	d.mu.Unlock()
}

// create makes a cluster-scoped test object and deletes it at the end.
func create(t *testing.T, o client.Object) {
	t.Helper()
	if err := testClient.Create(context.Background(), o); err != nil {
		t.Fatalf("create %T %s: %v", o, o.GetName(), err)
	}
	t.Cleanup(func() { _ = testClient.Delete(context.Background(), o) })
}

// waitValid waits for the Valid condition of a telcolb.io object.
func waitValid(t *testing.T, o client.Object, conds func() []metav1.Condition, status metav1.ConditionStatus, reason, contains string) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("%T %s Valid=%s %s %q", o, o.GetName(), status, reason, contains), func() error {
		if err := testClient.Get(context.Background(), types.NamespacedName{Name: o.GetName()}, o); err != nil {
			return err
		}
		c := meta.FindStatusCondition(conds(), v1alpha1.ConditionValid)
		if c == nil || c.Status != status || c.Reason != reason || !strings.Contains(c.Message, contains) {
			return fmt.Errorf("condition %+v", c)
		}
		return nil
	})
}

func withLabels(kv ...string) svcOpt {
	return func(s *corev1.Service) {
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			s.Labels[kv[i]] = kv[i+1]
		}
	}
}

// The API server itself rejects malformed objects (OpenAPI and CEL rules in
// the CRDs), naming the field.
func TestCRDValidationByAPIServer(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	n := testSeq.Add(1)
	name := func(s string) string { return fmt.Sprintf("v%d-%s", n, s) }
	bad := []struct {
		obj  client.Object
		want string
	}{
		{&v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name("cidr")}, Spec: v1alpha1.IPPoolSpec{CIDRs: []string{"10.0.0.0/33"}}}, "spec.cidrs[0]"},
		{&v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name("cidr2")}, Spec: v1alpha1.IPPoolSpec{CIDRs: []string{"10.0.0.1"}}}, "must be a CIDR"},
		{&v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name("empty")}}, "set at least one of cidrs or ranges"},
		{&v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name("range")}, Spec: v1alpha1.IPPoolSpec{Ranges: []v1alpha1.IPRange{{Start: "10.0.0.1", End: "ten"}}}}, "spec.ranges[0].end"},
		{&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name("addr")}, Spec: v1alpha1.BGPPeerSpec{Address: "router", ASN: 1, MyASN: 2}}, "spec.address"},
		{&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name("asn")}, Spec: v1alpha1.BGPPeerSpec{Address: "192.0.2.1", MyASN: 2}}, "spec.asn"},
		{&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name("timers")}, Spec: v1alpha1.BGPPeerSpec{Address: "192.0.2.1", ASN: 1, MyASN: 2, HoldTimeSeconds: 9, KeepaliveTimeSeconds: 9}}, "spec.keepaliveTimeSeconds"},
		{&v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name("bfd")}, Spec: v1alpha1.BGPPeerSpec{Address: "192.0.2.1", ASN: 1, MyASN: 2, BFD: &v1alpha1.BFDProfile{ReceiveIntervalMs: 1}}}, "spec.bfd.receiveIntervalMs"},
		{&v1alpha1.Advertisement{ObjectMeta: metav1.ObjectMeta{Name: name("mode")}, Spec: v1alpha1.AdvertisementSpec{Mode: "ospf", IPPools: []string{"p"}}}, "spec.mode"},
		{&v1alpha1.Advertisement{ObjectMeta: metav1.ObjectMeta{Name: name("l2peers")}, Spec: v1alpha1.AdvertisementSpec{Mode: "l2", IPPools: []string{"p"}, Peers: []string{"r1"}}}, "are for mode bgp"},
		{&v1alpha1.Advertisement{ObjectMeta: metav1.ObjectMeta{Name: name("bgpif")}, Spec: v1alpha1.AdvertisementSpec{Mode: "bgp", IPPools: []string{"p"}, Interfaces: []string{"eth0"}}}, "spec.interfaces"},
		{&v1alpha1.Advertisement{ObjectMeta: metav1.ObjectMeta{Name: name("nopools")}, Spec: v1alpha1.AdvertisementSpec{Mode: "bgp"}}, "set ipPools or ipPoolSelector"},
		{&v1alpha1.Advertisement{ObjectMeta: metav1.ObjectMeta{Name: name("community")}, Spec: v1alpha1.AdvertisementSpec{Mode: "bgp", IPPools: []string{"p"}, Communities: []string{"no-export"}}}, "spec.communities[0]"},
	}
	for _, b := range bad {
		err := testClient.Create(ctx, b.obj)
		if err == nil {
			_ = testClient.Delete(ctx, b.obj)
			t.Errorf("%T %s accepted", b.obj, b.obj.GetName())
			continue
		}
		if !strings.Contains(err.Error(), b.want) {
			t.Errorf("%T %s: error %q does not name %q", b.obj, b.obj.GetName(), err, b.want)
		}
	}
	// The same objects corrected are accepted, with defaults applied.
	good := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name("good")}, Spec: v1alpha1.IPPoolSpec{CIDRs: []string{"10.0.0.0/24", "2001:db8::/120"}, Ranges: []v1alpha1.IPRange{{Start: "10.0.1.1", End: "10.0.1.9"}}}}
	create(t, good)
	if good.Spec.AutoAssign == nil || !*good.Spec.AutoAssign {
		t.Errorf("autoAssign default not applied: %+v", good.Spec)
	}
	peer := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name("peer")}, Spec: v1alpha1.BGPPeerSpec{Address: "2001:db8::1", ASN: 65000, MyASN: 65001, BFD: &v1alpha1.BFDProfile{}, PasswordSecretRef: &v1alpha1.SecretKeyRef{Name: "s"}}}
	create(t, peer)
	if peer.Spec.BFD.DetectMultiplier != 3 || peer.Spec.BFD.ReceiveIntervalMs != 300 || peer.Spec.PasswordSecretRef.Key != "password" {
		t.Errorf("BGPPeer defaults not applied: %+v %+v", peer.Spec.BFD, peer.Spec.PasswordSecretRef)
	}
}

// IPPools: overlapping and invalid ones get Valid=False naming the field
// and are left out; who may use a pool (namespace, Service labels,
// secondaryOnly, autoAssign) decides the Service's VIPs or its condition.
func TestIPPoolsConditionsAndSelection(t *testing.T) {
	needEnv(t)
	d := startDaemon(t)
	tc := startController(t, ctrlOpts{crds: true, daemons: []string{d.URL}})
	n := testSeq.Add(1)
	teamKey := fmt.Sprintf("team-%d", n)
	nsA, nsB := makeNamespace(t), makeNamespace(t)
	var ns corev1.Namespace
	if err := testClient.Get(context.Background(), types.NamespacedName{Name: nsA}, &ns); err != nil {
		t.Fatal(err)
	}
	ns.Labels = map[string]string{teamKey: "a"}
	if err := testClient.Update(context.Background(), &ns); err != nil {
		t.Fatal(err)
	}
	pn := func(s string) string { return fmt.Sprintf("p%d-%s", n, s) }
	poolA := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: pn("a")}, Spec: v1alpha1.IPPoolSpec{CIDRs: []string{"10.210.1.0/29"}, AutoAssign: ptr.To(true),
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{teamKey: "a"}}}}
	create(t, poolA)
	waitValid(t, poolA, func() []metav1.Condition { return poolA.Status.Conditions }, metav1.ConditionTrue, v1alpha1.ReasonValid, "10.210.1.1-10.210.1.6")
	over := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: pn("over")}, Spec: v1alpha1.IPPoolSpec{CIDRs: []string{"10.210.9.0/30", "10.210.1.4/30"}, AutoAssign: ptr.To(true)}}
	create(t, over)
	gold := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: pn("gold")}, Spec: v1alpha1.IPPoolSpec{Ranges: []v1alpha1.IPRange{{Start: "10.210.2.10", End: "10.210.2.12"}},
		ServiceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "gold"}}}}
	create(t, gold)
	sec := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: pn("sec")}, Spec: v1alpha1.IPPoolSpec{CIDRs: []string{"10.210.3.0/29"}, SecondaryOnly: true}}
	create(t, sec)
	backwards := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: pn("backwards")}, Spec: v1alpha1.IPPoolSpec{Ranges: []v1alpha1.IPRange{{Start: "10.210.4.9", End: "10.210.4.1"}}}}
	create(t, backwards)
	mixed := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: pn("mixed")}, Spec: v1alpha1.IPPoolSpec{Ranges: []v1alpha1.IPRange{{Start: "10.210.5.1", End: "2001:db8::1"}}}}
	create(t, mixed)

	waitValid(t, over, func() []metav1.Condition { return over.Status.Conditions }, metav1.ConditionFalse, v1alpha1.ReasonOverlap, "spec.cidrs[1]: 10.210.1.5-10.210.1.6 overlaps pool \""+poolA.Name+"\" range 10.210.1.1-10.210.1.6")
	waitValid(t, backwards, func() []metav1.Condition { return backwards.Status.Conditions }, metav1.ConditionFalse, v1alpha1.ReasonInvalid, "spec.ranges[0]: range \"10.210.4.9-10.210.4.1\" ends before it starts")
	waitValid(t, mixed, func() []metav1.Condition { return mixed.Status.Conditions }, metav1.ConditionFalse, v1alpha1.ReasonInvalid, "spec.ranges[0]")
	waitValid(t, gold, func() []metav1.Condition { return gold.Status.Conditions }, metav1.ConditionTrue, v1alpha1.ReasonValid, "")
	waitValid(t, sec, func() []metav1.Condition { return sec.Status.Conditions }, metav1.ConditionTrue, v1alpha1.ReasonValid, "")
	if tc.r.alloc.HasPool(over.Name) || tc.r.alloc.HasPool(backwards.Name) {
		t.Fatalf("invalid pools in the allocator: %+v", tc.r.alloc.Pools())
	}

	// Without poolSelect: the auto-assigned pool the namespace may use.
	makeServedService(t, nsA, "s1", tc.class)
	if got := waitIngress(t, nsA, "s1", 1); got[0] != "10.210.1.1" {
		t.Fatalf("s1 ingress %v, want 10.210.1.1 from %s", got, poolA.Name)
	}
	makeServedService(t, nsB, "s2", tc.class)
	c := waitCondition(t, nsB, "s2", ReasonPoolNotAllowed)
	if !strings.Contains(c.Message, "spec.namespaceSelector") || !strings.Contains(c.Message, poolA.Name) {
		t.Fatalf("s2 condition %q does not name the pool's namespaceSelector", c.Message)
	}
	waitEvent(t, nsB, "s2", ReasonPoolNotAllowed, "spec.namespaceSelector")
	// serviceSelector.
	makeServedService(t, nsB, "s3", tc.class, withAnn("telcolb.io/poolSelect", gold.Name), withLabels("tier", "gold"))
	if got := waitIngress(t, nsB, "s3", 1); got[0] != "10.210.2.10" {
		t.Fatalf("s3 ingress %v, want 10.210.2.10 from %s", got, gold.Name)
	}
	makeServedService(t, nsB, "s4", tc.class, withAnn("telcolb.io/poolSelect", gold.Name))
	if c := waitCondition(t, nsB, "s4", ReasonPoolNotAllowed); !strings.Contains(c.Message, "spec.serviceSelector") {
		t.Fatalf("s4 condition %q does not name spec.serviceSelector", c.Message)
	}
	// secondaryOnly: not a primary pool, but gives SCTP secondaries.
	makeServedService(t, nsA, "s5", tc.class, withAnn("telcolb.io/poolSelect", sec.Name))
	if c := waitCondition(t, nsA, "s5", ReasonPoolNotAllowed); !strings.Contains(c.Message, "spec.secondaryOnly") {
		t.Fatalf("s5 condition %q does not name spec.secondaryOnly", c.Message)
	}
	makeServedService(t, nsA, "s6", tc.class, withPorts(sctpPort(38412, 38412)), withAnn("telcolb.io/poolSelectSecondary", sec.Name))
	if got := waitIngress(t, nsA, "s6", 2); got[0] != "10.210.1.2" || got[1] != "10.210.3.1" {
		t.Fatalf("s6 ingress %v, want 10.210.1.2 (primary, %s) and 10.210.3.1 (secondary, %s)", got, poolA.Name, sec.Name)
	}
	// A pool named in poolSelect that does not exist yet: the Service
	// waits with InvalidAnnotation, and gets its VIP once the IPPool is made.
	late := pn("late")
	makeServedService(t, nsB, "s7", tc.class, withAnn("telcolb.io/poolSelect", late))
	waitCondition(t, nsB, "s7", ReasonInvalidAnnotation)
	// (autoAssign false: otherwise s2, waiting for any pool it may use,
	// could take the address first.)
	create(t, &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: late}, Spec: v1alpha1.IPPoolSpec{CIDRs: []string{"10.210.6.0/30"}, AutoAssign: ptr.To(false)}})
	if got := waitIngress(t, nsB, "s7", 1); got[0] != "10.210.6.1" {
		t.Fatalf("s7 ingress %v, want 10.210.6.1 from %s", got, late)
	}
	// The first pool's Services were never affected by the bad pools.
	if got := ingressIPs(getSvc(t, nsA, "s1")); len(got) != 1 || got[0] != "10.210.1.1" {
		t.Fatalf("s1 ingress now %v", got)
	}
}

func makeNode(t *testing.T, name string, labels map[string]string, ip string) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	create(t, node)
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	if err := testClient.Status().Update(context.Background(), node); err != nil {
		t.Fatal(err)
	}
}

// BGPPeer, Advertisement and IPPool objects become one configuration per
// node, PUT to that node's daemon once per change; the daemons' VIPs answer
// becomes the Service's Announced condition and Events.
func TestAdvertisementPerNodeAndAnnouncedCondition(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	n := testSeq.Add(1)
	edge := fmt.Sprintf("edge-%d", n)
	nodes := []string{fmt.Sprintf("tn%d-1", n), fmt.Sprintf("tn%d-2", n), fmt.Sprintf("tn%d-3", n)}
	makeNode(t, nodes[0], map[string]string{edge: "yes"}, "192.0.2.11")
	makeNode(t, nodes[1], map[string]string{edge: "yes"}, "192.0.2.12")
	makeNode(t, nodes[2], nil, "192.0.2.13")
	secretNS := makeNamespace(t)
	if err := testClient.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: secretNS, Name: "bgp-pw"}, Data: map[string][]byte{"password": []byte("s3cret")}}); err != nil {
		t.Fatal(err)
	}
	ds := []*advDaemon{startAdvDaemon(t), startAdvDaemon(t), startAdvDaemon(t)}
	dn := map[string]string{}
	var urls []string
	for i, d := range ds {
		dn[d.URL] = nodes[i]
		urls = append(urls, d.URL)
	}
	pn := func(s string) string { return fmt.Sprintf("a%d-%s", n, s) }
	pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: pn("pool")}, Spec: v1alpha1.IPPoolSpec{CIDRs: []string{"10.211.0.0/28"}}}
	create(t, pool)
	r1 := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: pn("r1")}, Spec: v1alpha1.BGPPeerSpec{Address: "192.0.2.1", ASN: 65000, MyASN: 65001,
		NodeSelector:      &metav1.LabelSelector{MatchLabels: map[string]string{edge: "yes"}},
		PasswordSecretRef: &v1alpha1.SecretKeyRef{Name: "bgp-pw"},
		BFD:               &v1alpha1.BFDProfile{ReceiveIntervalMs: 100, TransmitIntervalMs: 100, DetectMultiplier: 3}}}
	create(t, r1)
	r2 := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: pn("r2")}, Spec: v1alpha1.BGPPeerSpec{Address: "192.0.2.2", ASN: 65000, MyASN: 65001,
		NodeSelector:      &metav1.LabelSelector{MatchLabels: map[string]string{edge: "yes"}},
		PasswordSecretRef: &v1alpha1.SecretKeyRef{Name: "missing"}}}
	create(t, r2)
	bgpAd := &v1alpha1.Advertisement{ObjectMeta: metav1.ObjectMeta{Name: pn("bgp")}, Spec: v1alpha1.AdvertisementSpec{Mode: "bgp", IPPools: []string{pool.Name},
		Communities: []string{"65001:100"}, LocalPreference: ptr.To(uint32(150))}}
	create(t, bgpAd)
	l2Ad := &v1alpha1.Advertisement{ObjectMeta: metav1.ObjectMeta{Name: pn("l2")}, Spec: v1alpha1.AdvertisementSpec{Mode: "l2", IPPools: []string{pool.Name},
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{edge: "yes"}}, Interfaces: []string{"eth1"}}}
	create(t, l2Ad)
	badAd := &v1alpha1.Advertisement{ObjectMeta: metav1.ObjectMeta{Name: pn("bad")}, Spec: v1alpha1.AdvertisementSpec{Mode: "bgp", IPPools: []string{pn("nope")}}}
	create(t, badAd)

	tc := startController(t, ctrlOpts{crds: true, daemons: urls, daemonNodes: dn, secretNamespace: secretNS})

	want0 := fmt.Sprintf(`{"nodeName":"%s","bgp":{"asn":65001,"peers":[{"name":"%s","address":"192.0.2.1","asn":65000,"password":"s3cret","bfd":{"receiveIntervalMs":100,"transmitIntervalMs":100,"detectMultiplier":3}}]},`+
		`"l2":{"members":[{"name":"%s","address":"192.0.2.11:7947"},{"name":"%s","address":"192.0.2.12:7947"}]},`+
		`"advertisements":[{"name":"%s","mode":"bgp","prefixes":["10.211.0.0/28"],"communities":["65001:100"],"localPreference":150},{"name":"%s","mode":"l2","prefixes":["10.211.0.0/28"],"interfaces":["eth1"]}]}`,
		nodes[0], r1.Name, nodes[0], nodes[1], bgpAd.Name, l2Ad.Name)
	waitPut := func(d *advDaemon, want string) int {
		t.Helper()
		var puts int
		eventually(t, 20*time.Second, "advertisement PUT to "+d.URL, func() error {
			var cfg api.AdvertisementConfig
			cfg, puts = d.lastPut()
			b, _ := json.Marshal(cfg)
			if string(b) != want {
				return fmt.Errorf("last PUT (%d) %s\nwant %s", puts, b, want)
			}
			return nil
		})
		return puts
	}
	puts0 := waitPut(ds[0], want0)
	waitPut(ds[1], strings.NewReplacer(`"nodeName":"`+nodes[0], `"nodeName":"`+nodes[1]).Replace(want0))
	waitPut(ds[2], fmt.Sprintf(`{"nodeName":"%s"}`, nodes[2]))

	waitValid(t, r1, func() []metav1.Condition { return r1.Status.Conditions }, metav1.ConditionTrue, v1alpha1.ReasonValid, nodes[0])
	waitValid(t, r2, func() []metav1.Condition { return r2.Status.Conditions }, metav1.ConditionFalse, v1alpha1.ReasonNotFound, "spec.passwordSecretRef.name: Secret "+secretNS+"/missing not found")
	waitValid(t, badAd, func() []metav1.Condition { return badAd.Status.Conditions }, metav1.ConditionFalse, v1alpha1.ReasonNotFound, "spec.ipPools[0]: IPPool \""+pn("nope")+"\" not found")
	waitValid(t, l2Ad, func() []metav1.Condition { return l2Ad.Status.Conditions }, metav1.ConditionTrue, v1alpha1.ReasonValid, nodes[1])

	// Idempotent: nothing changed, nothing is sent again.
	time.Sleep(1500 * time.Millisecond)
	if _, p := ds[0].lastPut(); p != puts0 {
		t.Fatalf("%d PUTs without a change (had %d)", p, puts0)
	}
	// A change is sent again.
	if err := testClient.Get(ctx, types.NamespacedName{Name: bgpAd.Name}, bgpAd); err != nil {
		t.Fatal(err)
	}
	bgpAd.Spec.Communities = []string{"65001:200"}
	if err := testClient.Update(ctx, bgpAd); err != nil {
		t.Fatal(err)
	}
	puts0 = waitPut(ds[0], strings.Replace(want0, "65001:100", "65001:200", 1))
	// A restarted daemon (new boot ID) is sent its configuration again,
	// unchanged, since it may have come back without it.
	_, puts2 := ds[2].lastPut()
	ds[2].mu.Lock()
	ds[2].bootID = "restarted"
	ds[2].mu.Unlock()
	eventually(t, 20*time.Second, "advertisement PUT after a daemon restart", func() error {
		cfg, p := ds[2].lastPut()
		if p <= puts2 || cfg.NodeName != nodes[2] {
			return fmt.Errorf("%d PUTs (had %d), last %+v", p, puts2, cfg)
		}
		return nil
	})
	if _, p := ds[0].lastPut(); p != puts0 {
		t.Fatalf("a restart of another daemon re-sent node %s's configuration (%d PUTs, had %d)", nodes[0], p, puts0)
	}

	// The Service's Announced condition and Events come from the VIPs answers.
	ds[0].setAnnounce([]string{"bgp/" + r1.Name, "l2/eth1"}, nodes[0], "")
	ds[1].setAnnounce([]string{"bgp/" + r1.Name}, "", "")
	ns := makeNamespace(t)
	makeServedService(t, ns, "web", tc.class, withAnn("telcolb.io/poolSelect", pool.Name))
	vip := waitIngress(t, ns, "web", 1)[0]
	wantMsg := fmt.Sprintf("%s announced by %s (bgp/%s, l2/eth1, l2 owner %s); %s (bgp/%s)", vip, nodes[0], r1.Name, nodes[0], nodes[1], r1.Name)
	waitAnnounced := func(status metav1.ConditionStatus, reason, msg string) {
		t.Helper()
		eventually(t, 20*time.Second, "Announced condition", func() error {
			c := meta.FindStatusCondition(getSvc(t, ns, "web").Status.Conditions, AnnouncedConditionType)
			if c == nil || c.Status != status || c.Reason != reason || c.Message != msg {
				return fmt.Errorf("condition %+v, want %s %s %q", c, status, reason, msg)
			}
			return nil
		})
	}
	waitAnnounced(metav1.ConditionTrue, ReasonAnnounced, wantMsg)
	waitEvent(t, ns, "web", ReasonAnnounced, wantMsg)
	if c := condition(getSvc(t, ns, "web")); c == nil || c.Reason != ReasonProgrammed {
		t.Fatalf("Ready condition lost next to Announced: %+v", c)
	}
	// Every node stops announcing: False, naming each node's reason.
	ds[0].setAnnounce(nil, "", "node draining")
	ds[1].setAnnounce(nil, "", "no ready endpoint with externalTrafficPolicy Local")
	wantMsg = fmt.Sprintf("%s not announced (%s: node draining; %s: no ready endpoint with externalTrafficPolicy Local; %s: no advertisement covers it)", vip, nodes[0], nodes[1], nodes[2])
	waitAnnounced(metav1.ConditionFalse, ReasonNotAnnounced, wantMsg)
	waitEvent(t, ns, "web", ReasonNotAnnounced, "node draining")
}
