package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/telcolb/telcolb/api"
)

// The kube-loxilb docs' example Services (shared/seeds/kube-loxilb-annotations.md),
// as a user would `kubectl apply` them: curly quotes, class loxilb.io/loxilb,
// pools as in the docs' --cidrPools/--cidr6Pools flags.
const loxilbDocsServices = `
apiVersion: v1
kind: Service
metadata:
  name: sctp-lb1
  annotations:
    loxilb.io/poolSelect: “pool1”
spec:
  loadBalancerClass: loxilb.io/loxilb
  selector:
    what: sctp-test
  ports:
   - port: 55002
     protocol: SCTP
     targetPort: 9999
  type: LoadBalancer
---
apiVersion: v1
kind: Service
metadata:
  name: sctp-lb-secips
  annotations:
    loxilb.io/lbmode: "fullnat"
    loxilb.io/secondaryIPs: "1.1.1.1,2.2.2.2"
spec:
  loadBalancerClass: loxilb.io/loxilb
  selector:
    what: sctp-lb-secips
  ports:
   - port: 56004
     targetPort: 9999
     protocol: SCTP
  type: LoadBalancer
---
apiVersion: v1
kind: Service
metadata:
  name: sctp-lb-fullnat
  annotations:
    loxilb.io/lbmode: "fullnat"
    loxilb.io/staticIP: "192.168.255.254"
spec:
  loadBalancerClass: loxilb.io/loxilb
  externalTrafficPolicy: Local
  selector:
    what: sctp-fullnat-test
  ports:
   - port: 56004
     protocol: SCTP
     targetPort: 9999
  type: LoadBalancer
---
apiVersion: v1
kind: Service
metadata:
  name: sctp-lb-probe
  annotations:
    loxilb.io/liveness : "yes"
    loxilb.io/probetimeout : "10"
    loxilb.io/proberetries : "3"
    loxilb.io/epselect : "hash"
spec:
  loadBalancerClass: loxilb.io/loxilb
  selector:
    what: sctp-lb
  ports:
   - port: 56005
     protocol: SCTP
     targetPort: 9999
  type: LoadBalancer
---
apiVersion: v1
kind: Service
metadata:
  name: sctp-lb-tcpprobe
  annotations:
    loxilb.io/probetype : "tcp"
    loxilb.io/probeport : "3000"
    loxilb.io/probereq : "health"
    loxilb.io/proberesp : "ok"
spec:
  loadBalancerClass: loxilb.io/loxilb
  selector:
    what: sctp-lb
  ports:
   - port: 56006
     protocol: SCTP
     targetPort: 9999
  type: LoadBalancer
---
apiVersion: v1
kind: Service
metadata:
  name: sctp-lb-mh
  annotations:
    loxilb.io/lbmode: "fullnat"
    loxilb.io/poolSelectSecondary: “pool2,pool3”
spec:
  loadBalancerClass: loxilb.io/loxilb
  selector:
    what: sctp-test
  ports:
   - port: 55003
     protocol: SCTP
     targetPort: 9999
  type: LoadBalancer
---
apiVersion: v1
kind: Service
metadata:
  name: sctp-lb-v6
  annotations:
    loxilb.io/ipam : "ipv6"
    loxilb.io/timeout : "60"
spec:
  loadBalancerClass: loxilb.io/loxilb
  selector:
    what: sctp-lb
  ports:
   - port: 56007
     protocol: SCTP
     targetPort: 9999
  type: LoadBalancer
---
apiVersion: v1
kind: Service
metadata:
  name: iperf-service
  annotations:
   loxilb.io/liveness: "yes"
   loxilb.io/lbmode: "default"
   loxilb.io/ipam: "ipv4"
spec:
  loadBalancerClass: loxilb.io/loxilb
  selector:
    what: perf-test
  ports:
    - port: 55001
      targetPort: 5001
  type: LoadBalancer
`

const loxilbClass = "loxilb.io/loxilb"

// kubectlApply server-side applies a multi-document YAML into ns, as
// `kubectl apply --server-side` does.
func kubectlApply(t *testing.T, ns, docs string) []string {
	t.Helper()
	var names []string
	for _, doc := range strings.Split(docs, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("yaml: %v", err)
		}
		u.SetNamespace(ns)
		if err := testClient.Patch(context.Background(), u, client.Apply, client.FieldOwner("kubectl"), client.ForceOwnership); err != nil { //nolint:staticcheck
			t.Fatalf("apply %s: %v", u.GetName(), err)
		}
		names = append(names, u.GetName())
	}
	return names
}

// kubeLoxilbRule is what kube-loxilb would ask loxilb for, reduced to what
// the daemon rule must carry.
type kubeLoxilbRule struct {
	vip       string
	secondary string
	mode      string
	sel       string
	probe     *api.Probe // nil: no liveness probe
	idle      uint32
}

// TestKubeLoxilbMigration applies the kube-loxilb docs' Services with
// --accept-loxilb-annotations, compares the daemons' rules with what
// kube-loxilb would program, then restarts the controller without the flag:
// no VIP moves, and every Service says which annotations are ignored.
func TestKubeLoxilbMigration(t *testing.T) {
	needEnv(t)
	d1, d2 := startDaemon(t), startDaemon(t)
	ns := makeNamespace(t)
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: ns + "-node"}}
	if err := testClient.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = testClient.Delete(context.Background(), node) })
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.18.0.2"}, {Type: corev1.NodeInternalIP, Address: "fd18::2"}}
	if err := testClient.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	opts := ctrlOpts{class: loxilbClass, loxilb: true, daemons: []string{d1.URL, d2.URL},
		pools: "defaultPool=123.123.123.1/24,pool1=124.124.124.1/24,pool2=125.125.125.1/24,pool3=126.126.126.1/24", pools6: "defaultPool=3ffe::1/96"}
	c1 := startController(t, opts)
	names := kubectlApply(t, ns, loxilbDocsServices)
	// externalTrafficPolicy Local: only nodes running a pod take traffic.
	fn := getSvc(t, ns, "sctp-lb-fullnat")
	ep := podEndpoint("10.244.1.5", "", true)
	ep.NodeName = ptr.To(node.Name)
	makeSlice(t, fn, []discoveryv1.Endpoint{ep})

	hc := func(typ string, port uint16, interval, retries uint32) *api.Probe {
		return &api.Probe{Type: typ, Port: port, IntervalSeconds: interval, TimeoutSeconds: 2, Retries: retries}
	}
	want := map[string]kubeLoxilbRule{
		"sctp-lb1":        {vip: "124.124.124.1", mode: "default"},
		"sctp-lb-secips":  {vip: "123.123.123.1", secondary: "1.1.1.1,2.2.2.2", mode: "fullnat"},
		"sctp-lb-fullnat": {vip: "192.168.255.254", mode: "fullnat"},
		// probetimeout is kube-loxilb's probe period; the probe follows the
		// port's protocol.
		"sctp-lb-probe": {vip: "123.123.123.2", mode: "default", sel: "hash", probe: hc("sctp", 0, 10, 3)},
		// probereq/proberesp mean nothing to a tcp probe: ignored, as
		// kube-loxilb ignores them; the probe period defaults to 60s.
		"sctp-lb-tcpprobe": {vip: "123.123.123.3", mode: "default", probe: hc("tcp", 3000, 60, 2)},
		"sctp-lb-mh":       {vip: "123.123.123.4", secondary: "125.125.125.1,126.126.126.1", mode: "fullnat"},
		// IPv6 pools never hand out their all-zeros address.
		"sctp-lb-v6":    {vip: "3ffe::1", mode: "default", idle: 60},
		"iperf-service": {vip: "123.123.123.5", mode: "default", probe: hc("tcp", 0, 60, 2)},
	}
	// One at a time would fix the pool order; applied together they race,
	// so compare pool membership for defaultPool VIPs.
	checkRules := func(phase string, vipOf map[string]string) {
		t.Helper()
		for _, name := range names {
			w := want[name]
			svc := getSvc(t, ns, name)
			port := svc.Spec.Ports[0]
			v6 := strings.Contains(w.vip, ":")
			rn := ruleName(ns, name, port.Port, string(port.Protocol), v6)
			for _, d := range []*testDaemon{d1, d2} {
				eventually(t, 20*time.Second, phase+": rule "+rn, func() error {
					r, ok := d.rules(t)[rn]
					if !ok {
						return fmt.Errorf("no rule; conditions %+v", getSvc(t, ns, name).Status.Conditions)
					}
					if vipOf[name] != "" && r.VIP != vipOf[name] {
						return fmt.Errorf("VIP %s, want %s", r.VIP, vipOf[name])
					}
					if strings.Join(r.SecondaryVIPs, ",") != w.secondary || r.Mode != w.mode || r.IdleTimeoutSeconds != w.idle {
						return fmt.Errorf("rule %+v, want %+v", r, w)
					}
					if w.sel != "" && r.Select != w.sel {
						return fmt.Errorf("select %s, want %s", r.Select, w.sel)
					}
					if (r.Probe == nil) != (w.probe == nil) || r.Probe != nil && *r.Probe != *w.probe {
						return fmt.Errorf("probe %+v, want %+v", r.Probe, w.probe)
					}
					wantEP := api.Endpoint{Address: "172.18.0.2", Port: uint16(port.NodePort), Weight: 1}
					if v6 {
						wantEP.Address = "fd18::2"
					}
					if len(r.Endpoints) != 1 || r.Endpoints[0] != wantEP {
						return fmt.Errorf("endpoints %+v, want %+v", r.Endpoints, wantEP)
					}
					return nil
				})
			}
		}
	}
	vipOf := map[string]string{}
	for _, name := range names {
		w := want[name]
		n := 1 + len(strings.Split(w.secondary, ",")) - map[bool]int{true: 1}[w.secondary == ""]
		ips := waitIngress(t, ns, name, n)
		vipOf[name] = ips[0]
		if !strings.HasPrefix(w.vip, "123.123.123.") && ips[0] != w.vip {
			t.Fatalf("%s: VIP %v, want %s", name, ips, w.vip)
		}
		if strings.HasPrefix(w.vip, "123.123.123.") && !strings.HasPrefix(ips[0], "123.123.123.") {
			t.Fatalf("%s: VIP %v, want one from defaultPool 123.123.123.1/24", name, ips)
		}
		if w.secondary != "" && strings.Join(ips[1:], ",") != w.secondary {
			t.Fatalf("%s: ingress %v, want primary then %s", name, ips, w.secondary)
		}
	}
	checkRules("with --accept-loxilb-annotations", vipOf)
	waitEvent(t, ns, "sctp-lb-tcpprobe", ReasonAnnotationNote, "loxilb.io/probereq is ignored: tcp probes send no request")
	before := map[string][]string{}
	for _, name := range names {
		before[name] = ingressIPs(getSvc(t, ns, name))
	}

	// Restart without the flag: nothing moves, and each Service says which
	// of its annotations no longer apply.
	c1.stop()
	opts.loxilb = false
	startController(t, opts)
	for _, name := range names {
		svc := getSvc(t, ns, name)
		var keys []string
		for k := range svc.Annotations {
			if strings.HasPrefix(k, "loxilb.io/") {
				keys = append(keys, k)
			}
		}
		for _, k := range keys {
			waitEvent(t, ns, name, ReasonLoxilbIgnored, k)
		}
		waitEvent(t, ns, name, ReasonLoxilbIgnored, "--accept-loxilb-annotations")
	}
	for _, name := range []string{"sctp-lb1", "sctp-lb-fullnat", "sctp-lb-secips", "sctp-lb-mh", "sctp-lb-v6"} {
		waitEvent(t, ns, name, ReasonAllocationKept, "telcolb.io/reallocate")
		waitCondition(t, ns, name, ReasonAllocationKept)
	}
	// Give the controller time to do anything wrong, then compare.
	time.Sleep(time.Second)
	for _, name := range names {
		if got := ingressIPs(getSvc(t, ns, name)); strings.Join(got, ",") != strings.Join(before[name], ",") {
			t.Fatalf("%s: VIPs moved from %v to %v on a configuration change alone", name, before[name], got)
		}
		for _, d := range []*testDaemon{d1, d2} {
			svc := getSvc(t, ns, name)
			rn := ruleName(ns, name, svc.Spec.Ports[0].Port, string(svc.Spec.Ports[0].Protocol), strings.Contains(before[name][0], ":"))
			if r := d.rules(t)[rn]; r.VIP != before[name][0] || strings.Join(r.SecondaryVIPs, ",") != strings.Join(before[name][1:], ",") {
				t.Fatalf("%s: daemon rule %+v, VIPs were %v", name, r, before[name])
			}
		}
	}

	// The user opts in: the VIP moves to what the configuration allows,
	// and an Event says so.
	svc := getSvc(t, ns, "sctp-lb1")
	svc.Annotations["telcolb.io/reallocate"] = "true"
	if err := testClient.Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "sctp-lb1 moved to defaultPool", func() error {
		ips := ingressIPs(getSvc(t, ns, "sctp-lb1"))
		if len(ips) != 1 || !strings.HasPrefix(ips[0], "123.123.123.") {
			return fmt.Errorf("ingress %v", ips)
		}
		return nil
	})
	waitEvent(t, ns, "sctp-lb1", ReasonVIPChanged, "from 124.124.124.1")
}
