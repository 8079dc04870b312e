package controller

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/telcolb/telcolb/api"
)

func TestVIPsFromPoolsStatusAndDaemonsProgrammed(t *testing.T) {
	needEnv(t)
	d1, d2 := startDaemon(t), startDaemon(t)
	c := startController(t, ctrlOpts{pools: "defaultPool=10.10.0.1-10.10.0.9,pool2=10.20.0.0/29", daemons: []string{d1.URL, d2.URL}})
	ns := makeNamespace(t)
	ctx := context.Background()

	a := makeService(t, ns, "a", c.class, withAnn("telcolb.io/usepodnetwork", "yes"))
	makeSlice(t, a, []discoveryv1.Endpoint{podEndpoint("10.1.0.1", "", true), podEndpoint("10.1.0.2", "", false)})
	b := makeService(t, ns, "b", c.class, withAnn("telcolb.io/poolSelect", "pool2", "telcolb.io/lbmode", "fullnat"))
	// Default mode: node IP + NodePort, only Ready nodes.
	for i, ready := range []bool{true, false} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-node%d", ns, i)}}
		if err := testClient.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = testClient.Delete(context.Background(), n) })
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("172.16.0.%d", i+1)}}
		if err := testClient.Status().Update(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	makeSlice(t, b, []discoveryv1.Endpoint{podEndpoint("10.1.1.1", "", true)})
	other := makeService(t, ns, "other", "example.com/other-lb")
	none := makeService(t, ns, "none", "", withClass(""))

	if ips := waitIngress(t, ns, "a", 1); ips[0] != "10.10.0.1" {
		t.Fatalf("a got %v, want 10.10.0.1 from defaultPool", ips)
	}
	if ips := waitIngress(t, ns, "b", 1); ips[0] != "10.20.0.1" {
		t.Fatalf("b got %v, want 10.20.0.1 from pool2", ips)
	}
	if c := waitCondition(t, ns, "a", ReasonProgrammed); c.Status != metav1.ConditionTrue {
		t.Fatalf("condition %+v", c)
	}
	nodePort := getSvc(t, ns, "b").Spec.Ports[0].NodePort
	for _, d := range []*testDaemon{d1, d2} {
		eventually(t, 10*time.Second, "daemon rules", func() error {
			rules := d.rules(t)
			ra, ok := rules[ns+".a.80-tcp"]
			if !ok || ra.VIP != "10.10.0.1" || len(ra.Endpoints) != 1 || ra.Endpoints[0] != (api.Endpoint{Address: "10.1.0.1", Port: 8080, Weight: 1}) {
				return fmt.Errorf("rule a = %+v", ra)
			}
			rb, ok := rules[ns+".b.80-tcp"]
			if !ok || rb.Mode != "fullnat" || len(rb.Endpoints) != 1 || rb.Endpoints[0] != (api.Endpoint{Address: "172.16.0.1", Port: uint16(nodePort), Weight: 1}) {
				return fmt.Errorf("rule b = %+v", rb)
			}
			return nil
		})
	}
	// An EndpointSlice change reaches the daemons without a resync period.
	var sl discoveryv1.EndpointSlice
	if err := testClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "a-x"}, &sl); err != nil {
		t.Fatal(err)
	}
	sl.Endpoints[1].Conditions.Ready = ptr.To(true)
	if err := testClient.Update(ctx, &sl); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, 10*time.Second, "endpoint update on daemon", func() error {
		if n := len(d1.rules(t)[ns+".a.80-tcp"].Endpoints); n != 2 {
			return fmt.Errorf("%d endpoints", n)
		}
		return nil
	})
	t.Logf("EndpointSlice change programmed in %s", time.Since(start))

	// Other classes and no class: never touched.
	time.Sleep(500 * time.Millisecond)
	for _, s := range []*corev1.Service{other, none} {
		got := getSvc(t, ns, s.Name)
		if len(got.Finalizers) != 0 || len(got.Annotations) != 0 || len(got.Status.LoadBalancer.Ingress) != 0 || len(got.Status.Conditions) != 0 {
			t.Fatalf("%s was touched: finalizers %v annotations %v status %+v", s.Name, got.Finalizers, got.Annotations, got.Status)
		}
	}
	for name := range d1.rules(t) {
		if strings.Contains(name, ".other.") || strings.Contains(name, ".none.") {
			t.Fatalf("rule %s programmed for a foreign Service", name)
		}
	}
	// Deleting a Service releases its VIP and removes its rules.
	if err := testClient.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "rule removal", func() error {
		if _, ok := d2.rules(t)[ns+".a.80-tcp"]; ok {
			return fmt.Errorf("rule still there")
		}
		if ips := c.r.Allocator().IPs(ns + "/a"); len(ips) != 0 {
			return fmt.Errorf("still holds %v", ips)
		}
		return nil
	})
}

func TestRestartKeepsEveryIPAndCleansUpServicesGoneWhileDown(t *testing.T) {
	needEnv(t)
	d := startDaemon(t)
	class := newClass()
	opts := ctrlOpts{class: class, pools: "defaultPool=10.30.0.0/24", daemons: []string{d.URL}}
	c1 := startController(t, opts)
	ns := makeNamespace(t)
	const n = 100
	for i := 0; i < n; i++ {
		s := makeService(t, ns, fmt.Sprintf("s%d", i), class, withAnn("telcolb.io/usepodnetwork", "yes"))
		makeSlice(t, s, []discoveryv1.Endpoint{podEndpoint(fmt.Sprintf("10.2.%d.1", i), "", true)})
	}
	before := map[string]string{}
	for i := 0; i < n; i++ {
		before[fmt.Sprintf("s%d", i)] = waitIngress(t, ns, fmt.Sprintf("s%d", i), 1)[0]
	}
	eventually(t, 20*time.Second, "all rules on daemon", func() error {
		if got := len(d.rules(t)); got != n {
			rules := d.rules(t)
			for i := 0; i < n; i++ {
				if _, ok := rules[fmt.Sprintf("%s.s%d.80-tcp", ns, i)]; !ok {
					s := getSvc(t, ns, fmt.Sprintf("s%d", i))
					return fmt.Errorf("%d rules; s%d missing: %+v", got, i, s.Status.Conditions)
				}
			}
			return fmt.Errorf("%d rules", got)
		}
		return nil
	})
	c1.stop()

	ctx := context.Background()
	// While down: delete 10 Services, turn 5 into ClusterIP (class cleared).
	for i := 0; i < 10; i++ {
		if err := testClient.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("s%d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 10; i < 15; i++ {
		s := getSvc(t, ns, fmt.Sprintf("s%d", i))
		s.Spec.Type = corev1.ServiceTypeClusterIP
		s.Spec.LoadBalancerClass = nil
		s.Spec.ExternalTrafficPolicy = ""
		s.Spec.AllocateLoadBalancerNodePorts = nil
		for j := range s.Spec.Ports {
			s.Spec.Ports[j].NodePort = 0
		}
		if err := testClient.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// A new Service created while down must not get a recorded VIP.
	newSvc := makeService(t, ns, "fresh", class, withAnn("telcolb.io/usepodnetwork", "yes"))
	makeSlice(t, newSvc, []discoveryv1.Endpoint{podEndpoint("10.3.0.1", "", true)})

	c2 := startController(t, opts)
	for i := 15; i < n; i++ {
		name := fmt.Sprintf("s%d", i)
		if got := getSvc(t, ns, name); ingressIPs(got)[0] != before[name] {
			t.Fatalf("%s changed VIP from %s to %v", name, before[name], ingressIPs(got))
		}
	}
	fresh := waitIngress(t, ns, "fresh", 1)[0]
	for i := 15; i < n; i++ {
		name := fmt.Sprintf("s%d", i)
		if ip := before[name]; ip == fresh {
			t.Fatalf("fresh Service got %s, recorded for %s", fresh, name)
		}
	}
	eventually(t, 20*time.Second, "cleanup of Services gone while down", func() error {
		for i := 0; i < 10; i++ {
			var s corev1.Service
			err := testClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("s%d", i)}, &s)
			if err == nil {
				return fmt.Errorf("s%d still exists (finalizers %v)", i, s.Finalizers)
			}
		}
		for i := 10; i < 15; i++ {
			s := getSvc(t, ns, fmt.Sprintf("s%d", i))
			if len(s.Finalizers) != 0 || s.Annotations[AllocationAnnotation] != "" || len(s.Status.LoadBalancer.Ingress) != 0 {
				return fmt.Errorf("s%d not released: %v %v %v", i, s.Finalizers, s.Annotations, s.Status)
			}
		}
		rules := d.rules(t)
		for i := 0; i < 15; i++ {
			if _, ok := rules[fmt.Sprintf("%s.s%d.80-tcp", ns, i)]; ok {
				return fmt.Errorf("rule of s%d still on the daemon", i)
			}
		}
		if len(rules) != n-15+1 {
			return fmt.Errorf("%d rules on daemon", len(rules))
		}
		return nil
	})
	for i := 0; i < 15; i++ {
		ip := netip.MustParseAddr(before[fmt.Sprintf("s%d", i)])
		if h := c2.r.Allocator().Holders(ip); len(h) != 0 && h[0] != ns+"/fresh" {
			t.Fatalf("%s still held by %v", ip, h)
		}
	}
}

func TestPoolExhaustedReportsAndRecovers(t *testing.T) {
	needEnv(t)
	d := startDaemon(t)
	c := startController(t, ctrlOpts{pools: "defaultPool=10.40.0.1-10.40.0.2", daemons: []string{d.URL}})
	ns := makeNamespace(t)
	first := makeServedService(t, ns, "one", c.class)
	makeServedService(t, ns, "two", c.class)
	freed := waitIngress(t, ns, "one", 1)[0]
	waitIngress(t, ns, "two", 1)
	makeServedService(t, ns, "three", c.class)
	cond := waitCondition(t, ns, "three", ReasonPoolExhausted)
	if cond.Status != metav1.ConditionFalse || !strings.Contains(cond.Message, `pool "defaultPool" has no free IPv4 address`) {
		t.Fatalf("condition %+v", cond)
	}
	waitEvent(t, ns, "three", ReasonPoolExhausted, "defaultPool")
	if err := testClient.Delete(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	if ips := waitIngress(t, ns, "three", 1); ips[0] != freed {
		t.Fatalf("three got %v", ips)
	}
}

func TestSecondaryPoolsAndSecondaryIPs(t *testing.T) {
	needEnv(t)
	d := startDaemon(t)
	c := startController(t, ctrlOpts{pools: "defaultPool=10.50.0.0/29,pool2=10.51.0.0/29,pool3=10.52.0.0/29", daemons: []string{d.URL}})
	ns := makeNamespace(t)
	s := makeService(t, ns, "amf", c.class, withPorts(sctpPort(38412, 38412)),
		withAnn("telcolb.io/poolSelectSecondary", "pool2,pool3", "telcolb.io/usepodnetwork", "yes", "telcolb.io/lbmode", "fullnat"))
	makeSlice(t, s, []discoveryv1.Endpoint{podEndpoint("10.4.0.1", "", true)})
	ips := waitIngress(t, ns, "amf", 3)
	if strings.Join(ips, ",") != "10.50.0.1,10.51.0.1,10.52.0.1" {
		t.Fatalf("ingress %v", ips)
	}
	eventually(t, 10*time.Second, "multi-homed rule", func() error {
		r := d.rules(t)[ns+".amf.38412-sctp"]
		if r.VIP != "10.50.0.1" || strings.Join(r.SecondaryVIPs, ",") != "10.51.0.1,10.52.0.1" {
			return fmt.Errorf("rule %+v", r)
		}
		return nil
	})
	// secondaryIPs win over poolSelectSecondary, and the Event says so.
	s2 := makeService(t, ns, "amf2", c.class, withPorts(sctpPort(38412, 38412)),
		withAnn("telcolb.io/poolSelectSecondary", "pool2", "telcolb.io/secondaryIPs", "192.0.2.10,192.0.2.11", "telcolb.io/usepodnetwork", "yes"))
	makeSlice(t, s2, []discoveryv1.Endpoint{podEndpoint("10.4.0.2", "", true)})
	if ips := waitIngress(t, ns, "amf2", 3); strings.Join(ips, ",") != "10.50.0.2,192.0.2.10,192.0.2.11" {
		t.Fatalf("ingress %v", ips)
	}
	waitEvent(t, ns, "amf2", ReasonAnnotationNote, "telcolb.io/poolSelectSecondary is ignored")
}

func TestInvalidAnnotationsProduceEventsNamingThem(t *testing.T) {
	needEnv(t)
	d := startDaemon(t)
	c := startController(t, ctrlOpts{pools: "defaultPool=10.60.0.0/24", daemons: []string{d.URL}})
	ns := makeNamespace(t)
	tests := []struct{ annotation, value string }{
		{"telcolb.io/poolSelect", "missing-pool"},
		{"telcolb.io/poolSelectSecondary", "a,b,c,d"},
		{"telcolb.io/secondaryIPs", "not-an-ip"},
		{"telcolb.io/staticIP", "999.1.1.1"},
		{"telcolb.io/lbmode", "magic"},
		{"telcolb.io/epselect", "random"},
		{"telcolb.io/liveness", "perhaps"},
		{"telcolb.io/probetype", "icmp"},
		{"telcolb.io/probeport", "80"},
		{"telcolb.io/probereq", "/x"},
		{"telcolb.io/proberesp", "ok"},
		{"telcolb.io/probetimeout", "0"},
		{"telcolb.io/proberetries", "many"},
		{"telcolb.io/timeout", "-5"},
		{"telcolb.io/ipam", "ipv5"},
		{"telcolb.io/usepodnetwork", "maybe"},
		{"telcolb.io/multus-nets", "Bad_Net"},
		{"telcolb.io/sharing-key", "!"},
		{"telcolb.io/unknownthing", "x"},
	}
	for i, tt := range tests {
		makeService(t, ns, fmt.Sprintf("bad%d", i), c.class, withAnn(tt.annotation, tt.value))
	}
	for i, tt := range tests {
		t.Run(tt.annotation, func(t *testing.T) {
			name := fmt.Sprintf("bad%d", i)
			cond := waitCondition(t, ns, name, ReasonInvalidAnnotation)
			if !strings.Contains(cond.Message, tt.annotation) {
				t.Fatalf("condition message %q does not name %s", cond.Message, tt.annotation)
			}
			waitEvent(t, ns, name, ReasonInvalidAnnotation, tt.annotation)
			if ips := ingressIPs(getSvc(t, ns, name)); len(ips) != 0 {
				t.Fatalf("invalid Service got VIPs %v", ips)
			}
		})
	}
	// The controller is still working.
	makeServedService(t, ns, "good", c.class)
	waitIngress(t, ns, "good", 1)
}

func TestMultusEndpointsSkipMalformedPods(t *testing.T) {
	needEnv(t)
	d := startDaemon(t)
	c := startController(t, ctrlOpts{pools: "defaultPool=10.70.0.0/24", daemons: []string{d.URL}})
	ns := makeNamespace(t)
	ctx := context.Background()
	mkPod := func(name, status string) {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "amf"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
		}
		if status != "" {
			p.Annotations = map[string]string{"k8s.v1.cni.cncf.io/network-status": status}
		}
		if err := testClient.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	good := func(ip string) string {
		return fmt.Sprintf(`[{"name":"cbr0","interface":"eth0","ips":["10.244.0.9"],"default":true},{"name":"%s/n2net","interface":"net1","ips":["%s"],"mac":"aa:bb:cc:dd:ee:ff","dns":{}}]`, ns, ip)
	}
	mkPod("good", good("192.168.50.10"))
	mkPod("broken", `[{"name": "n2net", "ips": ["not-an-ip"]}]`)
	mkPod("garbage", `{{{`)
	mkPod("unattached", `[{"name":"cbr0","ips":["10.244.0.8"]}]`)
	mkPod("notready", good("192.168.50.11"))
	s := makeService(t, ns, "amf", c.class, withAnn("telcolb.io/multus-nets", "n2net"))
	makeSlice(t, s, []discoveryv1.Endpoint{
		podEndpoint("10.244.0.9", "good", true),
		podEndpoint("10.244.0.10", "broken", true),
		podEndpoint("10.244.0.11", "garbage", true),
		podEndpoint("10.244.0.8", "unattached", true),
		podEndpoint("10.244.0.12", "notready", false),
	})
	waitIngress(t, ns, "amf", 1)
	eventually(t, 10*time.Second, "multus rule", func() error {
		r := d.rules(t)[ns+".amf.80-tcp"]
		if len(r.Endpoints) != 1 || r.Endpoints[0] != (api.Endpoint{Address: "192.168.50.10", Port: 8080, Weight: 1}) {
			return fmt.Errorf("rule %+v", r)
		}
		return nil
	})
	waitEvent(t, ns, "amf", ReasonEndpointSkipped, "pod "+ns+"/broken skipped")
	waitEvent(t, ns, "amf", ReasonEndpointSkipped, "pod "+ns+"/garbage skipped")
	waitEvent(t, ns, "amf", ReasonEndpointSkipped, "not attached to network")
	// A pod's network-status change reaches the daemon.
	var p corev1.Pod
	if err := testClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "good"}, &p); err != nil {
		t.Fatal(err)
	}
	p.Annotations["k8s.v1.cni.cncf.io/network-status"] = good("192.168.50.20")
	if err := testClient.Update(ctx, &p); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "multus address change", func() error {
		r := d.rules(t)[ns+".amf.80-tcp"]
		if len(r.Endpoints) != 1 || r.Endpoints[0].Address != "192.168.50.20" {
			return fmt.Errorf("rule %+v", r)
		}
		return nil
	})
}

func TestOnlyTheLeaderActs(t *testing.T) {
	needEnv(t)
	dA, dB := startDaemon(t), startDaemon(t)
	class := newClass()
	leaseNS := makeNamespace(t)
	id := fmt.Sprintf("telcolb-%d", testSeq.Add(1))
	a := startController(t, ctrlOpts{class: class, pools: "defaultPool=10.80.0.0/24", daemons: []string{dA.URL}, leaderElection: true, leaseNS: leaseNS, leaderID: id})
	ns := makeNamespace(t)
	s := makeService(t, ns, "x", class, withAnn("telcolb.io/usepodnetwork", "yes"))
	makeSlice(t, s, []discoveryv1.Endpoint{podEndpoint("10.5.0.1", "", true)})
	waitIngress(t, ns, "x", 1)
	// A is the leader; B starts later and must stay passive.
	b := startController(t, ctrlOpts{class: class, pools: "defaultPool=10.80.0.0/24", daemons: []string{dB.URL}, leaderElection: true, leaseNS: leaseNS, leaderID: id})
	eventually(t, 10*time.Second, "leader programs its daemon", func() error {
		if len(dA.rules(t)) != 1 {
			return fmt.Errorf("daemon A has %d rules", len(dA.rules(t)))
		}
		return nil
	})
	makeServedService(t, ns, "y", class)
	waitIngress(t, ns, "y", 1)
	time.Sleep(time.Second)
	if n := len(dB.rules(t)); n != 0 {
		t.Fatalf("non-leader programmed %d rules", n)
	}
	// Leader goes away: B takes over, fully syncs its daemon.
	a.stop()
	eventually(t, 20*time.Second, "new leader syncs", func() error {
		if _, ok := dB.rules(t)[ns+".x.80-tcp"]; !ok {
			return fmt.Errorf("daemon B rules %v", dB.rules(t))
		}
		return nil
	})
	_ = b
}

func TestIPSharingRules(t *testing.T) {
	needEnv(t)
	d := startDaemon(t)
	c := startController(t, ctrlOpts{pools: "defaultPool=10.90.0.0/29", daemons: []string{d.URL}})
	ns := makeNamespace(t)
	// One at a time: which Service takes an address first decides who shares.
	makeServedService(t, ns, "web", c.class, withAnn("telcolb.io/sharing-key", "edge"), withPorts(tcpPort(80, 80)))
	web := waitIngress(t, ns, "web", 1)[0]
	makeServedService(t, ns, "tls", c.class, withAnn("telcolb.io/sharing-key", "edge"), withPorts(tcpPort(443, 443)))
	tls := waitIngress(t, ns, "tls", 1)[0]
	makeServedService(t, ns, "web2", c.class, withAnn("telcolb.io/sharing-key", "edge"), withPorts(tcpPort(80, 80)))
	web2 := waitIngress(t, ns, "web2", 1)[0]
	makeServedService(t, ns, "alone", c.class, withPorts(tcpPort(443, 443)))
	alone := waitIngress(t, ns, "alone", 1)[0]
	if web != tls {
		t.Fatalf("same key, no port clash: web %s tls %s should share", web, tls)
	}
	if web2 == web {
		t.Fatalf("port clash: web2 shares %s with web", web2)
	}
	if alone == web || alone == web2 {
		t.Fatalf("exclusive Service shares %s", alone)
	}
	// A static IP held by another Service without a sharing key is refused.
	makeServedService(t, ns, "thief", c.class, withAnn("telcolb.io/staticIP", alone), withPorts(tcpPort(8443, 8443)))
	cond := waitCondition(t, ns, "thief", ReasonIPConflict)
	if !strings.Contains(cond.Message, ns+"/alone") {
		t.Fatalf("condition %+v", cond)
	}
	// kube-loxilb shares addresses by default; here the user must ask, and
	// the refusal says how.
	if !strings.Contains(cond.Message, "telcolb.io/sharing-key") {
		t.Fatalf("IPConflict does not name the sharing-key annotation: %q", cond.Message)
	}
	waitEvent(t, ns, "thief", ReasonIPConflict, "telcolb.io/sharing-key")
}

// NAT64 multi-homing from annotations: ipam ipv6to4 with secondary pools
// gives an SCTP Service IPv6 VIPs (primary and secondary) in front of IPv4
// pod endpoints, and the daemon takes the multi-homed rule.
func TestNAT64ServiceWithSecondaryPoolsIsProgrammed(t *testing.T) {
	needEnv(t)
	d := startDaemon(t)
	c := startController(t, ctrlOpts{pools: "defaultPool=10.53.0.0/29", pools6: "defaultPool=fd50::/120,pool2=fd51::/120", daemons: []string{d.URL}})
	ns := makeNamespace(t)
	s := makeService(t, ns, "amf64", c.class, withPorts(sctpPort(38412, 38412)),
		withAnn("telcolb.io/ipam", "ipv6to4", "telcolb.io/poolSelectSecondary", "pool2", "telcolb.io/usepodnetwork", "yes"))
	makeSlice(t, s, []discoveryv1.Endpoint{podEndpoint("10.4.0.9", "", true)})
	if ips := waitIngress(t, ns, "amf64", 2); strings.Join(ips, ",") != "fd50::1,fd51::1" {
		t.Fatalf("ingress %v", ips)
	}
	eventually(t, 10*time.Second, "NAT64 multi-homed rule", func() error {
		rules := d.rules(t)
		r := rules[ns+".amf64.38412-sctp-v6"]
		if r.VIP != "fd50::1" || strings.Join(r.SecondaryVIPs, ",") != "fd51::1" ||
			len(r.Endpoints) != 1 || r.Endpoints[0].Address != "10.4.0.9" {
			return fmt.Errorf("rule %+v (rules %v)", r, rules)
		}
		return nil
	})
	waitCondition(t, ns, "amf64", ReasonProgrammed)
}
