package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestStatusClaimsOnlyProgrammedVIPs: status.loadBalancer.ingress lists a
// VIP only while a daemon holds its rule, whatever the reason it does not;
// every failure looks the same to `kubectl get svc` (<pending>), and the
// condition and Event name the annotation to fix.
func TestStatusClaimsOnlyProgrammedVIPs(t *testing.T) {
	needEnv(t)
	d1, d2 := startDaemon(t), startDaemon(t)
	c := startController(t, ctrlOpts{pools: "defaultPool=10.61.0.0/24,pool2=10.62.0.0/24", daemons: []string{d1.URL, d2.URL}})
	ns := makeNamespace(t)
	// The annotations parse, but the daemon rejects the rule: SCTP
	// multi-homing cannot work in onearm mode.
	makeServedService(t, ns, "rejected", c.class, withPorts(sctpPort(38412, 38412)),
		withAnn("telcolb.io/secondaryIPs", "192.0.2.50", "telcolb.io/lbmode", "onearm"))
	makeServedService(t, ns, "badann", c.class, withAnn("telcolb.io/lbmode", "magic"))
	makeService(t, ns, "noendpoints", c.class, withAnn("telcolb.io/usepodnetwork", "yes"))
	makeServedService(t, ns, "good", c.class, withPorts(sctpPort(38412, 38412)),
		withAnn("telcolb.io/poolSelectSecondary", "pool2"))

	cond := waitCondition(t, ns, "rejected", ReasonInvalidService)
	if !strings.Contains(cond.Message, "annotation telcolb.io/secondaryIPs, telcolb.io/lbmode") {
		t.Fatalf("condition does not name the annotations that caused the rejection: %q", cond.Message)
	}
	waitEvent(t, ns, "rejected", ReasonInvalidService, "telcolb.io/lbmode")
	waitCondition(t, ns, "badann", ReasonInvalidAnnotation)
	waitCondition(t, ns, "noendpoints", ReasonNoEndpoints)
	ips := waitIngress(t, ns, "good", 2)
	if ips[0] != "10.61.0.1" && ips[0] != "10.61.0.2" && ips[0] != "10.61.0.3" || !strings.HasPrefix(ips[1], "10.62.0.") {
		t.Fatalf("good: ingress %v, want the primary VIP first, then the secondary", ips)
	}
	good := waitCondition(t, ns, "good", ReasonProgrammed)
	if !strings.Contains(good.Message, "on 2 of 2 daemons") || !strings.Contains(good.Message, d1.URL) || !strings.Contains(good.Message, d2.URL) {
		t.Fatalf("condition does not say which daemons are programmed: %q", good.Message)
	}
	time.Sleep(500 * time.Millisecond)
	for _, name := range []string{"rejected", "badann", "noendpoints"} {
		s := getSvc(t, ns, name)
		if got := ingressIPs(s); len(got) != 0 {
			t.Fatalf("%s: status shows VIPs %v that no daemon serves (condition %+v)", name, got, condition(s))
		}
		for _, d := range []*testDaemon{d1, d2} {
			for rn := range d.rules(t) {
				if strings.HasPrefix(rn, ns+"."+name+".") {
					t.Fatalf("%s: daemon holds %s", name, rn)
				}
			}
		}
	}
	// Endpoints appear: the VIP shows; they go: it goes.
	ne := getSvc(t, ns, "noendpoints")
	sl := makeSlice(t, ne, []discoveryv1.Endpoint{podEndpoint("10.9.9.9", "", true)})
	waitIngress(t, ns, "noendpoints", 1)
	sl.Endpoints[0].Conditions.Ready = ptr.To(false)
	if err := testClient.Update(context.Background(), sl); err != nil {
		t.Fatal(err)
	}
	waitIngress(t, ns, "noendpoints", 0)
}

// TestProgrammedEventOncePerChange: success is an Event too (VIPs and
// daemon count), sent when what is programmed changes, not per reconcile.
func TestProgrammedEventOncePerChange(t *testing.T) {
	needEnv(t)
	d1, d2 := startDaemon(t), startDaemon(t)
	c := startController(t, ctrlOpts{pools: "defaultPool=10.63.0.0/24", daemons: []string{d1.URL, d2.URL}})
	ns := makeNamespace(t)
	makeServedService(t, ns, "web", c.class)
	vip := waitIngress(t, ns, "web", 1)[0]
	waitEvent(t, ns, "web", ReasonProgrammed, "VIPs "+vip+": 1 rules programmed on 2 of 2 daemons")
	// Reconciles that change nothing programmed: a not-ready endpoint, a
	// foreign annotation.
	var sl discoveryv1.EndpointSlice
	if err := testClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "web-x"}, &sl); err != nil {
		t.Fatal(err)
	}
	sl.Endpoints = append(sl.Endpoints, podEndpoint("10.9.8.7", "", false))
	if err := testClient.Update(context.Background(), &sl); err != nil {
		t.Fatal(err)
	}
	svc := getSvc(t, ns, "web")
	svc.Annotations["example.com/touch"] = "1"
	if err := testClient.Update(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if n := programmedEvents(t, ns, "web"); n != 1 {
		t.Fatalf("%d Programmed events for one programmed state", n)
	}
	// A new port changes what is programmed: one more.
	svc = getSvc(t, ns, "web")
	svc.Spec.Ports = append(svc.Spec.Ports, tcpPort(443, 8443))
	if err := testClient.Update(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	if err := testClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "web-x"}, &sl); err != nil {
		t.Fatal(err)
	}
	sl.Ports = append(sl.Ports, discoveryv1.EndpointPort{Name: ptr.To("p443"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(8443))})
	if err := testClient.Update(context.Background(), &sl); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, ns, "web", ReasonProgrammed, "2 rules programmed on 2 of 2 daemons")
}

// programmedEvents counts Programmed Events (with their repeat counts).
func programmedEvents(t *testing.T, ns, name string) int {
	t.Helper()
	var list corev1.EventList
	if err := testClient.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name && e.Reason == ReasonProgrammed {
			n += max(int(e.Count), 1)
		}
	}
	return n
}
