package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/telcolb/telcolb/api"
)

// DaemonClient is the part of the daemon REST API the controller uses;
// *api.Client implements it.
type DaemonClient interface {
	ApplyService(ctx context.Context, s api.Service) error
	DeleteService(ctx context.Context, name string) error
	ListServices(ctx context.Context) ([]api.ServiceStatus, error)
	Health(ctx context.Context) (api.Health, error)
}

// AdvertisementClient is the advertisement part of the daemon REST API;
// *api.Client implements it. A DaemonClient without it gets no
// advertisement configuration.
type AdvertisementClient interface {
	PutAdvertisement(ctx context.Context, cfg api.AdvertisementConfig) error
	VIPs(ctx context.Context) ([]api.VIPStatus, error)
}

// DialFunc makes a client for one daemon base URL.
type DialFunc func(baseURL string) (DaemonClient, error)

// ruleNameRE matches the daemon service names this controller owns:
// "<namespace>.<name>.<port>-<protocol>[-v6]". Namespaces and Service names
// are DNS labels, so the first two dots split them unambiguously, and names
// other tools (telcolbctl) create never match.
var ruleNameRE = regexp.MustCompile(`^([a-z0-9-]+)\.([a-z0-9-]+)\.([0-9]{1,5})-(tcp|udp|sctp)(-v6)?$`)

// ruleName is the daemon name of one port/family of a Service.
func ruleName(namespace, name string, port int32, protocol string, v6 bool) string {
	n := fmt.Sprintf("%s.%s.%d-%s", namespace, name, port, strings.ToLower(protocol))
	if v6 {
		n += "-v6"
	}
	return n
}

// ruleOwner returns the "namespace/name" owning a rule name, if it is ours.
func ruleOwner(rule string) (string, bool) {
	m := ruleNameRE.FindStringSubmatch(rule)
	if m == nil {
		return "", false
	}
	return m[1] + "/" + m[2], true
}

// DaemonsConfig configures Daemons.
type DaemonsConfig struct {
	Dial DialFunc
	// Owned reports whether the Kubernetes Service "namespace/name" is
	// currently handled by this controller; rules of Services that are not
	// are deleted by the full sync. It must answer from the informer cache.
	Owned func(ctx context.Context, key string) bool
	// HealthInterval is how often each daemon is checked (default 2s); a
	// daemon that appears, comes back or lost rules is fully synced then.
	HealthInterval time.Duration
	// ResyncInterval bounds drift: every daemon is fully compared this often
	// (default 5m).
	ResyncInterval time.Duration
	// RequestTimeout bounds one call to a daemon (default 10s).
	RequestTimeout time.Duration
	Logger         *slog.Logger
	Metrics        *Metrics
}

// Daemons keeps every telcolb daemon programmed with the desired rules. The
// reconciler sets the desired rules of one Service at a time (Program); a
// background loop (Start, leader only) brings new, restarted or drifted
// daemons to the full desired state.
type Daemons struct {
	cfg DaemonsConfig

	mu      sync.Mutex
	desired map[string]map[string]api.Service // Service key -> rule name -> rule
	daemons map[string]*daemon                // base URL -> daemon
	nodes   map[string]string                 // base URL -> node name, where known
	kick    chan struct{}
	// onSync is called after each successful full sync of a daemon (new,
	// restarted, drifted): the advertiser sends it its configuration again.
	onSync func()
}

type daemon struct {
	url    string
	client DaemonClient

	mu sync.Mutex
	// synced is false until a full sync succeeded, and again after a
	// failed health check: Program skips such daemons and the next full sync
	// sends them everything.
	synced   bool
	lastSync time.Time
	// bootID is the daemon's boot ID at the last health check; a new one
	// means it restarted, possibly from an older or empty state dir, so
	// applied no longer describes it.
	bootID string
	// syncs counts successful full syncs: a change tells the advertiser the
	// daemon is new or restarted and needs its configuration again.
	syncs int
	// applied mirrors the daemon's rules named like ours, as last listed or
	// written, by Service key then rule name, so unchanged rules are not
	// sent again and one Service's rules are found without walking all
	// (a per-reconcile walk made a cold start quadratic).
	applied map[string]map[string]appliedRule
}

func (x *daemon) setApplied(key, name string, r appliedRule) {
	m := x.applied[key]
	if m == nil {
		m = map[string]appliedRule{}
		x.applied[key] = m
	}
	m[name] = r
}

func (x *daemon) dropApplied(key, name string) {
	delete(x.applied[key], name)
	if len(x.applied[key]) == 0 {
		delete(x.applied, key)
	}
}

func (x *daemon) appliedCount() int {
	n := 0
	for _, m := range x.applied {
		n += len(m)
	}
	return n
}

// appliedRule is one rule a daemon holds: its encoding (to skip unchanged
// writes) and its VIPs (for the Service's status).
type appliedRule struct {
	spec      []byte
	vip       string
	secondary []string
}

func appliedRuleOf(r api.Service, b []byte) appliedRule {
	return appliedRule{spec: b, vip: r.VIP, secondary: r.SecondaryVIPs}
}

// NewDaemons checks cfg and returns an empty daemon set.
func NewDaemons(cfg DaemonsConfig) (*Daemons, error) {
	if cfg.Dial == nil {
		return nil, errors.New("daemons: Dial is required")
	}
	if cfg.Owned == nil {
		return nil, errors.New("daemons: Owned is required")
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = 2 * time.Second
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = 5 * time.Minute
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Daemons{cfg: cfg, desired: map[string]map[string]api.Service{}, daemons: map[string]*daemon{}, nodes: map[string]string{}, kick: make(chan struct{}, 1)}, nil
}

// SetNodes records the node of daemon URLs (merged with what is known).
func (d *Daemons) SetNodes(nodes map[string]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for u, n := range nodes {
		d.nodes[u] = n
	}
}

// Target is one daemon as the advertiser sees it.
type Target struct {
	URL string
	// Node is the daemon's node name when known from discovery or
	// configuration ("" otherwise).
	Node   string
	Client DaemonClient
	// Synced is true after a full sync and until a failed health check;
	// Syncs counts full syncs (a change means the daemon may have lost its
	// configuration).
	Synced bool
	Syncs  int
}

// Targets lists the daemons, sorted by URL.
func (d *Daemons) Targets() []Target {
	d.mu.Lock()
	list := make([]Target, 0, len(d.daemons))
	for u, x := range d.daemons {
		list = append(list, Target{URL: u, Node: d.nodes[u], Client: x.client})
	}
	d.mu.Unlock()
	for i := range list {
		d.mu.Lock()
		x := d.daemons[list[i].URL]
		d.mu.Unlock()
		if x == nil {
			continue
		}
		x.mu.Lock()
		list[i].Synced, list[i].Syncs = x.synced, x.syncs
		x.mu.Unlock()
	}
	sort.Slice(list, func(i, j int) bool { return list[i].URL < list[j].URL })
	return list
}

// SetDaemons replaces the daemon list (flag or discovery). New daemons get a
// full sync from the background loop.
func (d *Daemons) SetDaemons(urls []string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	want := map[string]bool{}
	var errs []error
	for _, u := range urls {
		want[u] = true
		if _, ok := d.daemons[u]; ok {
			continue
		}
		c, err := d.cfg.Dial(u)
		if err != nil {
			errs = append(errs, fmt.Errorf("daemon %s: %w", u, err))
			continue
		}
		d.daemons[u] = &daemon{url: u, client: c, applied: map[string]map[string]appliedRule{}}
		d.cfg.Logger.Info("daemon added", "url", u)
	}
	for u := range d.daemons {
		if !want[u] {
			delete(d.daemons, u)
			d.cfg.Logger.Info("daemon removed", "url", u)
		}
	}
	select {
	case d.kick <- struct{}{}:
	default:
	}
	return errors.Join(errs...)
}

// URLs lists the configured daemons.
func (d *Daemons) URLs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.daemons))
	for u := range d.daemons {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

func (d *Daemons) list() []*daemon {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*daemon, 0, len(d.daemons))
	for _, x := range d.daemons {
		out = append(out, x)
	}
	return out
}

func encode(s api.Service) []byte {
	b, _ := json.Marshal(s)
	return b
}

// Program makes rules the complete rule set of Service key on every synced
// daemon: changed rules are applied, rules of key no longer wanted are
// deleted. Errors name the daemon; the daemon is then fully resynced by the
// background loop, so a reconcile retry is only needed for 4xx answers.
func (d *Daemons) Program(ctx context.Context, key string, rules []api.Service) error {
	want := make(map[string]api.Service, len(rules))
	for _, r := range rules {
		want[r.Name] = r
	}
	d.mu.Lock()
	if len(want) == 0 {
		delete(d.desired, key)
	} else {
		d.desired[key] = want
	}
	d.mu.Unlock()
	scope := map[string]map[string]api.Service{key: want}
	return d.each(func(x *daemon) error {
		x.mu.Lock()
		defer x.mu.Unlock()
		if !x.synced {
			// The full sync will send the desired state; writing now could
			// race with its listing.
			return nil
		}
		_, _, err := d.converge(ctx, x, scope, []string{key}, func(string) bool { return true })
		return err
	})
}

// Forget deletes every rule of Service key from every daemon.
func (d *Daemons) Forget(ctx context.Context, key string) error {
	return d.Program(ctx, key, nil)
}

// Holding reports, for Service key, which VIPs the synced daemons hold a
// rule for (VIP -> number of daemons) and which daemons hold at least one of
// its rules. A daemon that is not synced is not counted: what it holds is
// not known.
func (d *Daemons) Holding(key string) (map[string]int, []string) {
	vips := map[string]int{}
	var urls []string
	for _, x := range d.list() {
		x.mu.Lock()
		seen := map[string]bool{}
		if x.synced {
			for _, r := range x.applied[key] {
				for _, v := range append([]string{r.vip}, r.secondary...) {
					if !seen[v] {
						seen[v] = true
						vips[v]++
					}
				}
			}
		}
		x.mu.Unlock()
		if len(seen) > 0 {
			urls = append(urls, x.url)
		}
	}
	sort.Strings(urls)
	return vips, urls
}

func (d *Daemons) each(f func(*daemon) error) error {
	ds := d.list()
	errs := make([]error, len(ds))
	var wg sync.WaitGroup
	for i, x := range ds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(x)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// converge is the one loop that writes to a daemon, for one Service
// (Program) and for all of them (fullSync); x.mu must be held. want holds
// rules by Service key and name. For every Service key in scope that
// deletable accepts, applied rules want lacks are deleted; rules of want
// that differ from x.applied are applied. A 4xx answer rejects that one
// rule and the others still go. Any other failure means the daemon is
// unreachable or broken: it is marked unsynced and the loop stops, since the
// next full sync lists it and sends everything again, and further calls
// would only add timeouts.
func (d *Daemons) converge(ctx context.Context, x *daemon, want map[string]map[string]api.Service, scope []string, deletable func(key string) bool) (applied, deleted int, err error) {
	var errs []error
	fail := func(what, key, name string, err error) bool {
		errs = append(errs, fmt.Errorf("daemon %s: %s %s (Service %s): %w", x.url, what, name, key, err))
		if api.IsClientError(err) {
			return false
		}
		x.synced = false
		return true
	}
	for _, key := range scope {
		if !deletable(key) {
			continue
		}
		for name := range x.applied[key] {
			if _, keep := want[key][name]; keep {
				continue
			}
			if err := d.call(ctx, func(c context.Context) error { return x.client.DeleteService(c, name) }); err != nil && !api.IsNotFound(err) {
				if fail("delete", key, name, err) {
					return applied, deleted, errors.Join(errs...)
				}
				continue
			}
			x.dropApplied(key, name)
			deleted++
		}
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		names := make([]string, 0, len(want[key]))
		for n := range want[key] {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			r := want[key][n]
			b := encode(r)
			if bytes.Equal(x.applied[key][n].spec, b) {
				continue
			}
			if err := d.call(ctx, func(c context.Context) error { return x.client.ApplyService(c, r) }); err != nil {
				// The daemon may or may not have taken it: list it again
				// rather than trust either.
				x.dropApplied(key, n)
				if fail("apply", key, n, err) {
					return applied, deleted, errors.Join(errs...)
				}
				continue
			}
			x.setApplied(key, n, appliedRuleOf(r, b))
			applied++
		}
	}
	return applied, deleted, errors.Join(errs...)
}

func (d *Daemons) call(ctx context.Context, f func(context.Context) error) error {
	c, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
	defer cancel()
	return f(c)
}

// NeedLeaderElection makes the sync loop run on the leader only.
func (d *Daemons) NeedLeaderElection() bool { return true }

// Start runs the health/full-sync loop until ctx ends (manager.Runnable).
func (d *Daemons) Start(ctx context.Context) error {
	t := time.NewTicker(d.cfg.HealthInterval)
	defer t.Stop()
	for {
		d.checkAll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-d.kick:
		}
	}
}

func (d *Daemons) checkAll(ctx context.Context) {
	_ = d.each(func(x *daemon) error {
		// Counted before asking the daemon: rules written in between only
		// raise its count, so they cannot pass for lost rules.
		x.mu.Lock()
		written := x.appliedCount()
		x.mu.Unlock()
		var h api.Health
		err := d.call(ctx, func(c context.Context) error {
			var err error
			h, err = x.client.Health(c)
			return err
		})
		x.mu.Lock()
		if err != nil {
			if x.synced {
				d.cfg.Logger.Warn("daemon unreachable", "url", x.url, "error", err)
			}
			x.synced = false
			x.mu.Unlock()
			if d.cfg.Metrics != nil {
				d.cfg.Metrics.daemonUp.WithLabelValues(x.url).Set(0)
			}
			return nil
		}
		if d.cfg.Metrics != nil {
			d.cfg.Metrics.daemonUp.WithLabelValues(x.url).Set(1)
		}
		// A restart between two health checks shows as a new boot ID. The
		// rule count catches daemons without boot IDs (older versions) that
		// restarted without their state, or lost rules behind our back. It
		// compares with what we wrote, not with the desired state: during a
		// cold start the desired state is always a few rules ahead of the
		// daemon, and a full sync each interval (listing every rule while
		// Program waits) would slow the start down.
		restarted := x.bootID != "" && h.BootID != x.bootID
		if restarted {
			d.cfg.Logger.Info("daemon restarted, resyncing", "url", x.url, "bootID", h.BootID)
		}
		x.bootID = h.BootID
		need := !x.synced || restarted || time.Since(x.lastSync) > d.cfg.ResyncInterval || h.Services < written
		if restarted {
			// Until the full sync below has listed its rules, Program must
			// not trust applied for this daemon.
			x.synced = false
		}
		x.mu.Unlock()
		if need {
			if err := d.fullSync(ctx, x); err != nil {
				d.cfg.Logger.Warn("daemon full sync failed", "url", x.url, "error", err)
			}
		}
		return nil
	})
}

// fullSync lists a daemon's rules and makes them equal to the desired state:
// missing or different rules are applied, rules of Services this controller
// no longer handles are deleted. Rules of Services that are still ours but
// not yet reconciled (right after a controller start) are left alone.
func (d *Daemons) fullSync(ctx context.Context, x *daemon) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	var listed []api.ServiceStatus
	if err := d.call(ctx, func(c context.Context) error {
		var err error
		listed, err = x.client.ListServices(c)
		return err
	}); err != nil {
		x.synced = false
		return fmt.Errorf("daemon %s: list: %w", x.url, err)
	}
	x.applied = map[string]map[string]appliedRule{}
	for _, st := range listed {
		if key, ours := ruleOwner(st.Service.Name); ours {
			x.setApplied(key, st.Service.Name, appliedRuleOf(st.Service, encode(st.Service)))
		}
	}
	d.mu.Lock()
	// The per-Service maps are replaced, never mutated, by Program: a
	// shallow copy is a consistent snapshot.
	desired := make(map[string]map[string]api.Service, len(d.desired))
	for key, rs := range d.desired {
		desired[key] = rs
	}
	d.mu.Unlock()
	scope := make([]string, 0, len(x.applied))
	for key := range x.applied {
		scope = append(scope, key)
	}
	// Synced from here unless converge finds the daemon failing (it holds
	// x.mu throughout, so Program never sees the intermediate state).
	x.synced = true
	applied, deleted, err := d.converge(ctx, x, desired, scope, func(key string) bool {
		// A Service with desired rules has exactly those; one without is
		// either gone (delete) or not reconciled yet since a controller
		// start (leave its rules serving).
		_, wanted := desired[key]
		return wanted || !d.cfg.Owned(ctx, key)
	})
	if !x.synced {
		return err
	}
	x.lastSync = time.Now()
	x.syncs++
	if d.onSync != nil {
		d.onSync()
	}
	d.cfg.Logger.Info("daemon synced", "url", x.url, "applied", applied, "deleted", deleted, "rules", x.appliedCount())
	return err
}
