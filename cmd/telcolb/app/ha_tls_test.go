package app

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/internal/testpki"
	labha "github.com/telcolb/telcolb/scenarios/ha"
)

// haMetric is the value of the HA collector's unlabelled series name.
func haMetric(t *testing.T, h *HA, name string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(h.Collector()); err != nil {
		t.Fatal(err)
	}
	return gaugeValue(t, reg, name)
}

func notAfterOf(t *testing.T, p testpki.Pair) float64 {
	t.Helper()
	c, err := tls.X509KeyPair(p.Cert, p.Key)
	if err != nil {
		t.Fatal(err)
	}
	return float64(c.Leaf.NotAfter.Unix())
}

// TestHATLSMetricsFollowRenewal: the daemon's HA metrics show the expiry
// of the certificate in use and count renewals that do not load, read at
// the scrape (no handshake needed): a broken write leaves the expiry of
// the previous certificate, a good one moves it.
func TestHATLSMetricsFollowRenewal(t *testing.T) {
	ca := testpki.NewCA(t, "ha")
	dir := t.TempDir()
	now := time.Now()
	first := ca.Issue(t, now.Add(-time.Hour), now.Add(24*time.Hour), "lb1")
	renewed := ca.Issue(t, now.Add(-time.Hour), now.Add(90*24*time.Hour), "lb1")
	certFile, keyFile := first.WriteFiles(t, dir)
	p := newHAPair(t)
	p.certs["lb1"] = labha.NodeCerts{Cert: certFile, Key: keyFile, CA: ca.File}
	h := p.start("lb1", newMemCT())

	const expiry, errs = "telcolb_ha_tls_cert_expiry_timestamp_seconds", "telcolb_ha_tls_reload_errors_total"
	if got, want := haMetric(t, h, expiry), notAfterOf(t, first); got != want {
		t.Fatalf("expiry %v, want %v", got, want)
	}
	if got := haMetric(t, h, errs); got != 0 {
		t.Fatalf("%v reload errors at start", got)
	}
	testpki.Pair{Cert: renewed.Cert, Key: first.Key}.WriteFiles(t, dir)
	if got, want := haMetric(t, h, expiry), notAfterOf(t, first); got != want {
		t.Errorf("after a broken renewal: expiry %v, want the previous %v", got, want)
	}
	if got := haMetric(t, h, errs); got != 1 {
		t.Errorf("after a broken renewal: %v reload errors, want 1", got)
	}
	// Written whole (rename), as the kubelet and cert-manager do: a check
	// racing an in-place rewrite would see a truncated key, a distinct
	// broken set that is rightly counted too.
	renewed.WriteFiles(t, dir)
	if got, want := haMetric(t, h, expiry), notAfterOf(t, renewed); got != want {
		t.Errorf("after the renewal: expiry %v, want %v", got, want)
	}
	if got := haMetric(t, h, errs); got != 1 {
		t.Errorf("after the renewal: %v reload errors, want 1", got)
	}
}
