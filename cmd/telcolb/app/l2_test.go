package app

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/telcolb/telcolb/api"
)

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
	a, err := newL2Announcer(cfg, L2Deps{DatapathInterfaces: func() []string { return nil }})
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
}
