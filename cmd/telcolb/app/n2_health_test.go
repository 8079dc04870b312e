package app

import (
	"context"
	"strings"
	"testing"
)

// TestN2EndpointHealthFollowsTheProxysAssociations: an N2 endpoint's health
// in the API and /metrics reflects whether the proxy's NG associations to
// that AMF are up with NG Setup answered, not only the probe: an AMF nobody
// answers at is "down" and unhealthy once a gNB is set up.
func TestN2EndpointHealthFollowsTheProxysAssociations(t *testing.T) {
	env, net := n2Env(t, 2) // AMFs listen at 10.0.1.1 and .2; nothing at .9
	ctx := context.Background()
	c := env.client(t, "")
	if err := c.ApplyService(ctx, n2Service("10.0.1.1", "10.0.1.2", "10.0.1.9")); err != nil {
		t.Fatalf("create N2 service: %v", err)
	}
	eventually(t, "every AMF idle before any gNB", func() bool {
		st, err := c.GetService(ctx, "n2")
		return err == nil && len(st.Endpoints) == 3 && st.Endpoints[0].N2 == "idle" && st.Endpoints[2].N2 == "idle" && st.Endpoints[2].Healthy
	})
	n2GNB(t, net, "gnb1", 4)
	eventually(t, "the AMF nobody answers at is down and unhealthy, the others up", func() bool {
		st, err := c.GetService(ctx, "n2")
		return err == nil && st.Endpoints[0].N2 == "up" && st.Endpoints[0].Healthy &&
			st.Endpoints[1].N2 == "up" && st.Endpoints[1].Healthy &&
			st.Endpoints[2].N2 == "down" && !st.Endpoints[2].Healthy && strings.HasPrefix(st.Endpoints[2].LastProbeError, "N2:")
	})
	m := scrape(t, env)
	for _, want := range []string{
		`telcolb_n2_amf_associations{amf="10.0.1.1:38412",proxy="n2",state="ready"} 1`,
		`telcolb_n2_amf_associations{amf="10.0.1.9:38412",proxy="n2",state="ready"} 0`,
		`telcolb_n2_amf_associations{amf="10.0.1.9:38412",proxy="n2",state="wanted"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !strings.Contains(m, `telcolb_endpoint_up{endpoint="10.0.1.9:38412",service="n2"} 0`) {
		t.Errorf("/metrics endpoint_up does not mark the down AMF:\n%s", grepLines(m, "endpoint_up"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
