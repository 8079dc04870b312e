package sctplb

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/telcolb/telcolb/sctplb/steer"
)

// TestGNBAssociationSeriesAreBounded: 40 gNBs on 2 AMFs make 33 gnb label
// values per AMF (32 gNBs and "other", which adds up the last 8), the
// ready counts survive the folding, and the series of a gNB that left or
// an AMF that was removed are deleted.
func TestGNBAssociationSeriesAreBounded(t *testing.T) {
	m, err := newMetrics(nil, "amf")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"10.0.0.1:38412", "10.0.0.2:38412"}
	links := map[steer.GNBLink]int{}
	for g := range 40 {
		for amf := range 2 {
			links[steer.GNBLink{GNB: fmt.Sprintf("00101-gnb-%d", g), AMF: amf}] = amf // AMF 0 down, AMF 1 ready
		}
	}
	m.gnbState(links, names)
	if n := testutil.CollectAndCount(m.gnbLinks); n != 66 {
		t.Errorf("%d series for 40 gNBs on 2 AMFs, want 66 (33 per AMF)", n)
	}
	if v := testutil.ToFloat64(m.gnbLinks.WithLabelValues("other", names[1])); v != 8 {
		t.Errorf("other on AMF 1 = %v, want 8", v)
	}
	// gNB 0 sorts first: it has its own name, whatever the map's order.
	if !m.gnbSeries[[2]string{"00101-gnb-0", names[0]}] {
		t.Errorf("gNB 0 on AMF 0 has no series of its own: %v", m.gnbSeries)
	} else if v := testutil.ToFloat64(m.gnbLinks.WithLabelValues("00101-gnb-0", names[0])); v != 0 {
		t.Errorf("gNB 0 on AMF 0 = %v, want 0 (wanted, not ready)", v)
	}

	// gNB 3 leaves, AMF 1 is removed, an unnamed gNB arrives.
	links = map[steer.GNBLink]int{{GNB: "00101-gnb-0", AMF: 0}: 1, {GNB: "", AMF: 0}: 1}
	m.gnbState(links, names)
	if n := testutil.CollectAndCount(m.gnbLinks); n != 2 {
		t.Errorf("%d series after the others left, want 2", n)
	}
	// The bound is full: the unnamed gNB is "other".
	if v := testutil.ToFloat64(m.gnbLinks.WithLabelValues("other", names[0])); v != 1 {
		t.Errorf("other on AMF 0 = %v, want 1", v)
	}

	fresh, err := newMetrics(nil, "amf")
	if err != nil {
		t.Fatal(err)
	}
	fresh.gnbState(links, names)
	if v := testutil.ToFloat64(fresh.gnbLinks.WithLabelValues("unknown", names[0])); v != 1 {
		t.Errorf("unknown on AMF 0 = %v, want 1", v)
	}
}
