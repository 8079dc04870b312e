package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/telcolb/telcolb/k8s/apis/v1alpha1"
)

// TestAdvertisementReachesARealDaemon joins the two halves of the
// advertisement work: the configuration the controller builds from the
// CRDs must pass the real daemon's validation and land in it as sent
// (GET /v1/advertisement), and the Service's Announced condition must read
// the real daemon's /v1/vips. The BGP peer is not reachable here, so the
// daemon serves the VIP without announcing it, and the condition says why,
// naming the node. Cordoning the Node drains it.
func TestAdvertisementReachesARealDaemon(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	n := testSeq.Add(1)
	node := fmt.Sprintf("rn%d", n)
	makeNode(t, node, nil, "192.0.2.21")
	d := startDaemon(t)
	pn := func(s string) string { return fmt.Sprintf("r%d-%s", n, s) }
	pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: pn("pool")}, Spec: v1alpha1.IPPoolSpec{CIDRs: []string{"10.212.0.0/28"}}}
	create(t, pool)
	// 192.0.2.0/24 (TEST-NET-1) is never routed: the session stays down.
	peer := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: pn("r1")}, Spec: v1alpha1.BGPPeerSpec{Address: "192.0.2.1", ASN: 65000, MyASN: 65001}}
	create(t, peer)
	ad := &v1alpha1.Advertisement{ObjectMeta: metav1.ObjectMeta{Name: pn("bgp")}, Spec: v1alpha1.AdvertisementSpec{Mode: "bgp", IPPools: []string{pool.Name},
		Communities: []string{"65001:100"}}}
	create(t, ad)
	tc := startController(t, ctrlOpts{crds: true, daemons: []string{d.URL}, daemonNodes: map[string]string{d.URL: node}, secretNamespace: makeNamespace(t)})

	eventually(t, 20*time.Second, "the daemon holds the controller's advertisement configuration", func() error {
		st, err := d.client.Advertisement(ctx)
		if err != nil {
			return err
		}
		c := st.Config
		if c.NodeName != node || c.BGP == nil || c.BGP.ASN != 65001 || len(c.BGP.Peers) != 1 || c.BGP.Peers[0].Name != peer.Name ||
			len(c.Advertisements) != 1 || c.Advertisements[0].Name != ad.Name || strings.Join(c.Advertisements[0].Prefixes, ",") != "10.212.0.0/28" {
			return fmt.Errorf("daemon holds %+v", c)
		}
		return nil
	})
	ns := makeNamespace(t)
	makeServedService(t, ns, "web", tc.class, withAnn("telcolb.io/poolSelect", pool.Name))
	vip := waitIngress(t, ns, "web", 1)[0]
	eventually(t, 30*time.Second, "Announced condition from the daemon's /v1/vips", func() error {
		c := meta.FindStatusCondition(getSvc(t, ns, "web").Status.Conditions, AnnouncedConditionType)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonNotAnnounced ||
			!strings.Contains(c.Message, vip) || !strings.Contains(c.Message, node+": ") {
			return fmt.Errorf("condition %+v", c)
		}
		return nil
	})
	vs, err := d.client.VIPs(ctx)
	if err != nil || len(vs) != 1 || vs[0].VIP != vip || len(vs[0].Announced) != 0 || vs[0].Reason == "" {
		t.Fatalf("daemon's /v1/vips: %+v, %v", vs, err)
	}
	t.Logf("daemon: %s not announced: %s", vip, vs[0].Reason)

	// Cordoning the Node drains it: the daemon is told, and says so.
	var nd corev1.Node
	if err := testClient.Get(ctx, types.NamespacedName{Name: node}, &nd); err != nil {
		t.Fatal(err)
	}
	nd.Spec.Unschedulable = true
	if err := testClient.Update(ctx, &nd); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the cordoned node's daemon drains", func() error {
		st, err := d.client.Advertisement(ctx)
		if err != nil || !st.Config.Draining {
			return fmt.Errorf("config %+v, %v", st.Config, err)
		}
		vs, err := d.client.VIPs(ctx)
		if err != nil || len(vs) != 1 || vs[0].Reason != "node draining" {
			return fmt.Errorf("vips %+v, %v", vs, err)
		}
		return nil
	})
}
