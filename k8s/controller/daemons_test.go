package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
)

func TestRuleNamesRoundTrip(t *testing.T) {
	tests := []struct {
		ns, name string
		port     int32
		proto    string
		v6       bool
		want     string
	}{
		{"ran", "amf", 38412, "SCTP", false, "ran.amf.38412-sctp"},
		{"default", "web-1", 80, "TCP", true, "default.web-1.80-tcp-v6"},
		{"a", "b", 65535, "UDP", false, "a.b.65535-udp"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got := ruleName(tt.ns, tt.name, tt.port, tt.proto, tt.v6)
			if got != tt.want {
				t.Fatalf("ruleName = %q", got)
			}
			owner, ok := ruleOwner(got)
			if !ok || owner != tt.ns+"/"+tt.name {
				t.Fatalf("ruleOwner(%q) = %q %v", got, owner, ok)
			}
		})
	}
	for _, foreign := range []string{"my-manual-rule", "a.b.80-icmp", "a.b.c.80-tcp", "A.b.80-tcp", "a.b.80-tcp-v4"} {
		if _, ok := ruleOwner(foreign); ok {
			t.Fatalf("%q taken as ours", foreign)
		}
	}
}

// flakyDaemon is an in-memory daemon that can be down or lose its state.
type flakyDaemon struct {
	memDaemon
	down bool
}

func (f *flakyDaemon) Health(ctx context.Context) (api.Health, error) {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		return api.Health{}, errors.New("connection refused")
	}
	return f.memDaemon.Health(ctx)
}

func (f *flakyDaemon) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func rule(name, vip string) api.Service {
	s := api.Service{Name: name, VIP: vip, Port: 80, Protocol: "tcp", Endpoints: []api.Endpoint{{Address: "10.0.0.1", Port: 80}}}
	api.SetDefaults(&s)
	return s
}

func TestDaemonsResyncAppearingAndRestartedDaemons(t *testing.T) {
	fd := &flakyDaemon{memDaemon: memDaemon{rules: map[string]api.Service{
		// Left by a Service deleted while nobody watched, one still ours
		// but not reconciled yet, and one made by hand.
		"ns.gone.80-tcp":    rule("ns.gone.80-tcp", "192.0.2.9"),
		"ns.pending.80-tcp": rule("ns.pending.80-tcp", "192.0.2.8"),
		"manual":            rule("manual", "192.0.2.7"),
	}}}
	owned := map[string]bool{"ns/a": true, "ns/pending": true}
	d, err := NewDaemons(DaemonsConfig{
		Dial:           func(string) (DaemonClient, error) { return fd, nil },
		Owned:          func(_ context.Context, k string) bool { return owned[k] },
		HealthInterval: 10 * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Desired state exists before the daemon is known: Program skips it.
	if err := d.Program(ctx, "ns/a", []api.Service{rule("ns.a.80-tcp", "192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetDaemons([]string{"http://d1"}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.Start(ctx) }()
	wait := func(what string, cond func(map[string]api.Service) error) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		var err error
		for time.Now().Before(deadline) {
			fd.mu.Lock()
			err = cond(fd.rules)
			fd.mu.Unlock()
			if err == nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("%s: %v", what, err)
	}
	wait("first full sync", func(r map[string]api.Service) error {
		_, a := r["ns.a.80-tcp"]
		_, gone := r["ns.gone.80-tcp"]
		_, pending := r["ns.pending.80-tcp"]
		_, manual := r["manual"]
		if !a || gone || !pending || !manual {
			return fmt.Errorf("rules %v", keys(r))
		}
		return nil
	})
	// Restart without state: the daemon comes back empty and gets it all.
	fd.set(func() { fd.down = true })
	time.Sleep(50 * time.Millisecond)
	fd.set(func() { fd.down = false; fd.rules = map[string]api.Service{} })
	wait("resync after restart", func(r map[string]api.Service) error {
		if _, ok := r["ns.a.80-tcp"]; !ok {
			return fmt.Errorf("rules %v", keys(r))
		}
		return nil
	})
	// A Service's rule set shrinks: the dropped port is deleted.
	if err := d.Program(ctx, "ns/a", []api.Service{rule("ns.a.81-tcp", "192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	wait("stale port removed", func(r map[string]api.Service) error {
		_, old := r["ns.a.80-tcp"]
		_, neu := r["ns.a.81-tcp"]
		if old || !neu {
			return fmt.Errorf("rules %v", keys(r))
		}
		return nil
	})
	if err := d.Forget(ctx, "ns/a"); err != nil {
		t.Fatal(err)
	}
	wait("forget", func(r map[string]api.Service) error {
		if _, ok := r["ns.a.81-tcp"]; ok {
			return fmt.Errorf("rules %v", keys(r))
		}
		return nil
	})
}

func keys(m map[string]api.Service) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// rebootingDaemon is an in-memory daemon that reports a boot ID.
type rebootingDaemon struct {
	memDaemon
	bootID string
}

func (r *rebootingDaemon) Health(ctx context.Context) (api.Health, error) {
	h, err := r.memDaemon.Health(ctx)
	r.mu.Lock()
	h.BootID = r.bootID
	r.mu.Unlock()
	return h, err
}

func TestDaemonsResyncARestartedDaemonWhoseStateIsStale(t *testing.T) {
	want := rule("ns.a.80-tcp", "192.0.2.1")
	tests := []struct {
		name   string
		bootID string
		// restart changes the daemon the way a restart from an old state
		// dir (or an edit behind our back) would.
		restart func(r *rebootingDaemon)
	}{
		{"new boot ID, same rule count, stale rule", "boot-1", func(r *rebootingDaemon) {
			r.bootID = "boot-2"
			r.rules = map[string]api.Service{want.Name: rule(want.Name, "192.0.2.99")}
		}},
		{"daemon without boot IDs lost its rules", "", func(r *rebootingDaemon) {
			r.bootID = ""
			r.rules = map[string]api.Service{}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rd := &rebootingDaemon{memDaemon: memDaemon{rules: map[string]api.Service{}}, bootID: tt.bootID}
			d, err := NewDaemons(DaemonsConfig{
				Dial:           func(string) (DaemonClient, error) { return rd, nil },
				Owned:          func(_ context.Context, k string) bool { return k == "ns/a" },
				HealthInterval: 10 * time.Millisecond,
				Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := d.Program(ctx, "ns/a", []api.Service{want}); err != nil {
				t.Fatal(err)
			}
			if err := d.SetDaemons([]string{"http://d1"}); err != nil {
				t.Fatal(err)
			}
			go func() { _ = d.Start(ctx) }()
			waitVIP := func(what string) {
				t.Helper()
				deadline := time.Now().Add(5 * time.Second)
				for time.Now().Before(deadline) {
					rd.mu.Lock()
					got, ok := rd.rules[want.Name]
					rd.mu.Unlock()
					if ok && got.VIP == want.VIP {
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
				t.Fatalf("%s: rule %s not programmed with VIP %s", what, want.Name, want.VIP)
			}
			waitVIP("first full sync")
			rd.mu.Lock()
			tt.restart(rd)
			rd.mu.Unlock()
			waitVIP("resync after restart")
		})
	}
}
