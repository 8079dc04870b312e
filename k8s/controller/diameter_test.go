package controller

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// telcolb.io/diameter with the origin annotations turns the Service's TCP
// port into a Diameter agent rule on the daemons (the daemon terminates
// Diameter on the VIP, which must be local: a loopback pool stands in for
// the node's address).
func TestDiameterAnnotationMakesTheTCPPortADiameterAgent(t *testing.T) {
	needEnv(t)
	d := startDaemon(t)
	c := startController(t, ctrlOpts{pools: "defaultPool=127.78.0.0/29", daemons: []string{d.URL}})
	ns := makeNamespace(t)
	dia := corev1.ServicePort{Name: "diameter", Port: 3868, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt(3868)}
	s := makeService(t, ns, "ocs", c.class, withPorts(dia), withAnn("telcolb.io/diameter", "proxy",
		"telcolb.io/diameter-origin-host", "dra.example", "telcolb.io/diameter-origin-realm", "example",
		"telcolb.io/diameter-applications", "4", "telcolb.io/usepodnetwork", "yes"))
	makeSlice(t, s, []discoveryv1.Endpoint{podEndpoint("10.77.2.1", "", true), podEndpoint("10.77.2.2", "", true)})
	if ips := waitIngress(t, ns, "ocs", 1); ips[0] != "127.78.0.1" {
		t.Fatalf("ingress %v, want 127.78.0.1", ips)
	}
	eventually(t, 10*time.Second, "the Diameter agent rule", func() error {
		rules := d.rules(t)
		r, ok := rules[ns+".ocs.3868-tcp"]
		if !ok || r.Diameter == nil || r.Diameter.OriginHost != "dra.example" || r.Diameter.Mode != "proxy" ||
			len(r.Diameter.Applications) != 1 || len(r.Endpoints) != 2 {
			return fmt.Errorf("rule %+v (present %v), want a Diameter proxy with 2 servers", r, ok)
		}
		return nil
	})
}
