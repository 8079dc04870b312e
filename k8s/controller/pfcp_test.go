package controller

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// telcolb.io/pfcp turns the Service's UDP port 8805 into a PFCP-aware N4
// proxy rule on the daemons (the daemon then terminates PFCP on the VIP,
// which must be local: a loopback pool stands in for the node's address
// here). The daemon's proxy is real: it binds the VIP and would associate
// with the UPF endpoints.
func TestPFCPAnnotationMakesPort8805AnN4Proxy(t *testing.T) {
	needEnv(t)
	d := startDaemon(t)
	c := startController(t, ctrlOpts{pools: "defaultPool=127.77.0.0/29", daemons: []string{d.URL}})
	ns := makeNamespace(t)
	pfcp := corev1.ServicePort{Name: "pfcp", Port: 8805, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt(8805)}
	s := makeService(t, ns, "upf", c.class, withPorts(pfcp), withAnn("telcolb.io/pfcp", "yes", "telcolb.io/usepodnetwork", "yes"))
	makeSlice(t, s, []discoveryv1.Endpoint{podEndpoint("10.77.1.1", "", true), podEndpoint("10.77.1.2", "", true)})
	if ips := waitIngress(t, ns, "upf", 1); ips[0] != "127.77.0.1" {
		t.Fatalf("ingress %v, want 127.77.0.1", ips)
	}
	eventually(t, 10*time.Second, "the N4 proxy rule", func() error {
		r, ok := d.rules(t)[ns+".upf.8805-udp"]
		if !ok || !r.PFCP || len(r.Endpoints) != 2 {
			return fmt.Errorf("rule %+v (present %v), want pfcp with 2 UPFs", r, ok)
		}
		return nil
	})
}
