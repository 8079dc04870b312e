package app

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha/bgp"
)

// TestAdvertisementBGPChangesReuseTheSpeaker: each change of the bgp
// section restarts the daemon's one BGP speaker in place, also across a
// configuration without BGP, so the goroutines stay where they were (a
// new gobgp server per change left its Serve goroutine and tables behind
// for good), and the VIP is announced again after each change.
func TestAdvertisementBGPChangesReuseTheSpeaker(t *testing.T) {
	const changes = 4
	r := newTestRouter(t, "127.0.0.3")
	env := newEnv(t, nil)
	c := env.client(t, "")
	ctx := context.Background()
	speaker := func() *bgp.Speaker {
		env.srv.adv.reconcileMu.Lock()
		defer env.srv.adv.reconcileMu.Unlock()
		return env.srv.adv.speaker.s
	}
	established := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); ; {
			st, err := c.Advertisement(ctx)
			if err == nil && len(st.BGPPeers) == 1 && st.BGPPeers[0].State == "established" && st.BGPPeers[0].PrefixesSent == 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: session not established with the VIP sent: %+v %v", what, st.BGPPeers, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	cfg := advConfig(r.port)
	if err := c.PutAdvertisement(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateService(ctx, webService()); err != nil {
		t.Fatal(err)
	}
	r.waitPrefixes(t, "10.96.0.10/32")
	established("first start")
	first := speaker()
	if first == nil {
		t.Fatal("no speaker after the first PUT")
	}
	baseG := runtime.NumGoroutine()
	for i := 1; i <= changes; i++ {
		cfg.BGP.Peers[0].HoldTimeSeconds = uint32(9 + i)
		if err := c.PutAdvertisement(ctx, cfg); err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		r.waitPrefixes(t, "10.96.0.10/32")
		established(fmt.Sprintf("change %d", i))
		if got := speaker(); got != first {
			t.Fatalf("change %d: a new speaker replaced the first one", i)
		}
	}
	// No bgp section: stopped, routes withdrawn; back: the same speaker.
	if err := c.PutAdvertisement(ctx, api.AdvertisementConfig{NodeName: "node-a"}); err != nil {
		t.Fatal(err)
	}
	r.waitPrefixes(t)
	if err := c.PutAdvertisement(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	r.waitPrefixes(t, "10.96.0.10/32")
	established("bgp section back")
	if got := speaker(); got != first {
		t.Fatal("a new speaker replaced the first one after a configuration without bgp")
	}
	var g int
	for deadline := time.Now().Add(20 * time.Second); ; {
		if g = runtime.NumGoroutine(); g <= baseG+3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("goroutines: %d after %d changes, %d at the first start", g, changes+2, baseG)
	if g > baseG+3 {
		t.Errorf("goroutines grew from %d to %d over %d configuration changes", baseG, g, changes+2)
	}
}
