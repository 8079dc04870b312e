package app

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha"
)

// gaugeOf returns the first sample of a gathered metric family as a gauge.
func gaugeOf(t *testing.T, g prometheus.Gatherer, name string) prometheus.Gauge {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) > 0 {
			gauge.Set(value(mf.Metric[0]))
		}
	}
	return gauge
}

func value(m *dto.Metric) float64 {
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

func TestNewL2AnnouncerRejects(t *testing.T) {
	base := func() api.AdvertisementConfig {
		return api.AdvertisementConfig{NodeName: "a", L2: &api.L2Config{Members: []api.L2Member{
			{Name: "a", Address: "127.0.0.1:0"}, {Name: "b", Address: "127.0.0.2:7946"},
		}}}
	}
	for _, c := range []struct {
		field string
		mod   func(*api.AdvertisementConfig)
	}{
		{"l2", func(c *api.AdvertisementConfig) { c.L2 = nil }},
		{"l2.members[1].address", func(c *api.AdvertisementConfig) { c.L2.Members[1].Address = "127.0.0.2" }},
		{"l2.members", func(c *api.AdvertisementConfig) { c.NodeName = "z" }},
	} {
		cfg := base()
		c.mod(&cfg)
		_, err := newL2Announcer(cfg, L2Deps{})
		var fe *api.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%s: err %v, want a FieldError naming it", c.field, err)
		}
	}
	cfg := base()
	cfg.L2.DetectMultiplier = 300
	if _, err := newL2Announcer(cfg, L2Deps{}); err == nil || !strings.Contains(err.Error(), "multiplier") {
		t.Errorf("multiplier 300: %v", err)
	}
}

// TestNewL2Announcer builds a working announcer (heartbeat socket on
// loopback); a VIP with no interface to answer on is refused by Set.
func TestNewL2Announcer(t *testing.T) {
	cfg := api.AdvertisementConfig{NodeName: "a", L2: &api.L2Config{Members: []api.L2Member{{Name: "a", Address: "127.0.0.1:0"}}}}
	reg := prometheus.NewRegistry()
	a, err := newL2Announcer(cfg, L2Deps{DatapathInterfaces: func() []string { return nil }, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Set(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if len(a.Announced()) != 0 {
		t.Fatalf("announced %v with no VIP", a.Announced())
	}
	vip := ha.VIP{Addr: netip.MustParseAddr("192.0.2.1"), Advertisement: api.Advertisement{Name: "adv", Mode: api.AdvertiseL2}}
	if err := a.Set(context.Background(), []ha.VIP{vip}); err == nil || !strings.Contains(err.Error(), "no interface") {
		t.Fatalf("VIP without interface: %v", err)
	}
	// A lone member is ready at once (nobody to hear): it reports itself up.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if n, err := testutil.GatherAndCount(reg, "telcolb_l2_member_up"); err == nil && n == 1 {
			if v := testutil.ToFloat64(gaugeOf(t, reg, "telcolb_l2_member_up")); v == 1 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("telcolb_l2_member_up{member=a} never 1")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
