package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha"
	"github.com/telcolb/telcolb/ha/bgp"
)

// VIP advertisement: which VIPs this node announces, and how. A VIP is
// announced while a service using it is programmed and at least one of
// those services has a healthy endpoint (api.Service has no
// externalTrafficPolicy: every endpoint a daemon is given is one it
// forwards to, so "a healthy endpoint" is the node-local readiness that
// externalTrafficPolicy Local asks for), an advertisement covers it, and
// the node is not stopping. The set is recomputed whenever services,
// endpoint health or the configuration change, and handed whole to one
// ha.Announcer per mode (level-triggered).

const (
	advertisementFileName = "advertisement.json"
	advertisementVersion  = 1
)

// Reasons a served VIP is not announced (api.VIPStatus.Reason).
const (
	reasonNoAdvertisement = "no advertisement covers it"
	reasonNoEndpoint      = "no healthy endpoint"
	reasonStopping        = "node stopping"
	reasonDraining        = "node draining"
)

// AdvertiseConfig configures VIP advertisement (Config.Advertise).
type AdvertiseConfig struct {
	// File is --advertisement-config: an api.AdvertisementConfig in YAML
	// or JSON loaded at start. When set it wins over the configuration
	// persisted from the last PUT; a PUT still replaces it until the next
	// start.
	File string
}

// announcerDeps are what announcers are built with.
type announcerDeps struct {
	log *slog.Logger
	// l2 is what the l2 announcer needs (interfaces, metrics registry).
	l2 L2Deps
	// onPeerState feeds the BGP session metrics.
	onPeerState func(peer, state string)
	// speaker is the daemon's one BGP speaker, restarted in place at each
	// change of the bgp section (see bgp.Speaker).
	speaker *speakerSlot
}

// speakerSlot holds the daemon's BGP speaker from its first start to the
// daemon's stop. While the configuration has no bgp section it is stopped
// (no session, no route), not closed: a gobgp server never frees its
// Serve goroutine and tables, so a closed speaker per change would leak.
// It is used under advertiser.reconcileMu (or before the loop starts).
type speakerSlot struct {
	s *bgp.Speaker
}

// start starts the speaker with cfg, creating it the first time.
func (sl *speakerSlot) start(ctx context.Context, cfg api.BGPConfig, opts bgp.Options) (*bgp.Speaker, error) {
	if sl.s != nil {
		if err := sl.s.Restart(ctx, cfg); err != nil {
			return nil, err
		}
		return sl.s, nil
	}
	s, err := bgp.New(ctx, cfg, opts)
	if err != nil {
		return nil, err
	}
	sl.s = s
	return s, nil
}

// close closes the speaker for good (the daemon stops).
func (sl *speakerSlot) close() error {
	if sl.s == nil {
		return nil
	}
	err := sl.s.Close()
	sl.s = nil
	return err
}

// stopAnnouncer withdraws what ann announces and ends its sessions: the
// BGP speaker is stopped for a later restart, the others are closed.
func stopAnnouncer(ann ha.Announcer) error {
	if sp, ok := ann.(*bgp.Speaker); ok {
		return sp.Stop(context.Background())
	}
	return ann.Close()
}

// newAnnouncers builds one ha.Announcer per advertisement mode cfg uses.
// The BGP speaker also runs when the configuration has a bgp section but no
// bgp advertisement yet (its sessions come up ready).
func newAnnouncers(ctx context.Context, cfg api.AdvertisementConfig, deps announcerDeps) (map[string]ha.Announcer, error) {
	out := map[string]ha.Announcer{}
	modes := map[string]bool{}
	if cfg.BGP != nil {
		modes[api.AdvertiseBGP] = true
	}
	for _, a := range cfg.Advertisements {
		modes[a.Mode] = true
	}
	closeAll := func() {
		for _, a := range out {
			_ = stopAnnouncer(a)
		}
	}
	for _, mode := range []string{api.AdvertiseBGP, api.AdvertiseL2} {
		if !modes[mode] {
			continue
		}
		switch mode {
		case api.AdvertiseBGP:
			bc := *cfg.BGP
			if bc.RouterID == "" {
				id, err := firstIPv4()
				if err != nil {
					closeAll()
					return nil, &api.FieldError{Field: "bgp.routerID", Message: "not set and " + err.Error()}
				}
				bc.RouterID = id.String()
			}
			s, err := deps.speaker.start(ctx, bc, bgp.Options{Logger: deps.log, OnPeerState: deps.onPeerState})
			if err != nil {
				closeAll()
				return nil, err
			}
			out[mode] = s
		case api.AdvertiseL2:
			if cfg.Draining {
				// A draining node is no L2 member: closing the previous
				// announcer told the others to take its VIPs over.
				continue
			}
			// One l2 announcer per node: it binds the heartbeat port.
			l2a, err := newL2Announcer(cfg, deps.l2)
			if err != nil {
				closeAll()
				return nil, err
			}
			out[mode] = l2a
		}
	}
	return out, nil
}

// firstIPv4 is the node's first global IPv4 address (the default router ID).
func firstIPv4() (netip.Addr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() && ip.IsGlobalUnicast() {
					return ip.Unmap(), nil
				}
			}
		}
	}
	return netip.Addr{}, errors.New("the node has no global IPv4 address to use as router ID")
}

// advertiser owns the announcers and the advertisement configuration.
type advertiser struct {
	s    *Server
	log  *slog.Logger
	path string

	// mu guards everything below; it is taken after Server.mu, never
	// before (compute reads the services with Server.mu).
	mu         sync.Mutex
	cfg        api.AdvertisementConfig
	announcers map[string]ha.Announcer
	stopping   bool
	// announced is what the last reconcile handed the announcers, by VIP
	// (mode per VIP), to count changes.
	announced map[netip.Addr]string
	changes   uint64
	peerUp    map[string]bool
	lastErr   error
	// speaker is the daemon's BGP speaker (reused across configurations).
	speaker *speakerSlot

	kick chan struct{}
	done chan struct{}
	// reconcileMu serialises reconciles (the loop's and a PUT's).
	reconcileMu sync.Mutex
}

func (s *Server) newAdvertiser(cfg AdvertiseConfig, stateDir string) (*advertiser, error) {
	a := &advertiser{
		s:          s,
		log:        s.log.With("component", "advertise"),
		path:       filepath.Join(stateDir, advertisementFileName),
		announcers: map[string]ha.Announcer{},
		announced:  map[netip.Addr]string{},
		peerUp:     map[string]bool{},
		speaker:    &speakerSlot{},
		kick:       make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	var (
		c      api.AdvertisementConfig
		source string
	)
	if cfg.File != "" {
		raw, err := os.ReadFile(cfg.File)
		if err != nil {
			return nil, fmt.Errorf("advertisement config: %w", err)
		}
		if err := yaml.UnmarshalStrict(raw, &c); err != nil {
			return nil, fmt.Errorf("advertisement config %s: %w", cfg.File, err)
		}
		source = cfg.File
	} else {
		loaded, ok, err := a.load()
		if err != nil {
			// A damaged file must not stop the node serving: it starts
			// announcing nothing until the controller PUTs again.
			d, serr := s.store.setAside(a.path, err)
			if serr != nil {
				return nil, serr
			}
			s.log.Error("state file damaged, moved aside; nothing is announced until a new configuration arrives", "file", d.path, "movedTo", d.movedTo, "reason", d.reason)
			s.damagedFiles++
		}
		if ok {
			c, source = loaded, a.path
		}
	}
	if err := api.ValidateAdvertisementConfig(&c); err != nil {
		return nil, fmt.Errorf("advertisement config %s: %w", source, err)
	}
	if source != "" {
		ann, err := newAnnouncers(context.Background(), c, a.deps())
		if err != nil {
			_ = a.speaker.close()
			return nil, fmt.Errorf("advertisement config %s: %w", source, err)
		}
		a.cfg, a.announcers = c, ann
		if d, ok := s.ready.(drainer); ok {
			d.SetDraining(c.Draining) // started drained: nothing announced, nothing to wait for
		}
		if cfg.File != "" {
			if err := a.save(c); err != nil {
				a.closeAnnouncers(ann)
				_ = a.speaker.close()
				return nil, err
			}
		}
		a.log.Info("advertisement configuration loaded", "from", source, "advertisements", len(c.Advertisements))
	}
	go a.loop()
	a.trigger()
	return a, nil
}

func (a *advertiser) deps() announcerDeps {
	return announcerDeps{log: a.log, speaker: a.speaker, l2: L2Deps{Logger: a.log, DatapathInterfaces: a.s.dp.Interfaces, Registerer: a.s.reg}, onPeerState: func(peer, state string) {
		a.mu.Lock()
		a.peerUp[peer] = state == "established"
		a.mu.Unlock()
	}}
}

type advertisementFile struct {
	Version int                     `json:"version"`
	Config  api.AdvertisementConfig `json:"config"`
}

func (a *advertiser) load() (api.AdvertisementConfig, bool, error) {
	raw, err := os.ReadFile(a.path)
	if errors.Is(err, os.ErrNotExist) {
		return api.AdvertisementConfig{}, false, nil
	}
	if err != nil {
		return api.AdvertisementConfig{}, false, fmt.Errorf("read advertisement state: %w", err)
	}
	var f advertisementFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return api.AdvertisementConfig{}, false, fmt.Errorf("parse advertisement state: %w", err)
	}
	if f.Version != advertisementVersion {
		return api.AdvertisementConfig{}, false, fmt.Errorf("advertisement state version %d, this daemon reads version %d", f.Version, advertisementVersion)
	}
	if err := api.ValidateAdvertisementConfig(&f.Config); err != nil {
		return api.AdvertisementConfig{}, false, fmt.Errorf("advertisement state: %w", err)
	}
	return f.Config, true, nil
}

// save writes the configuration atomically; mode 0600: it holds the BGP
// passwords.
func (a *advertiser) save(c api.AdvertisementConfig) error {
	raw, err := json.MarshalIndent(advertisementFile{Version: advertisementVersion, Config: c}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode advertisement state: %w", err)
	}
	dir := filepath.Dir(a.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	tmp, err := os.CreateTemp(dir, tmpPrefix+"adv*")
	if err != nil {
		return fmt.Errorf("create temporary advertisement file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(raw, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write advertisement state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync advertisement state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close advertisement state: %w", err)
	}
	if err := os.Rename(tmp.Name(), a.path); err != nil {
		return fmt.Errorf("replace advertisement state: %w", err)
	}
	return syncDir(dir)
}

// trigger asks for a reconcile without waiting for it.
func (a *advertiser) trigger() {
	if a == nil {
		return // probes may report before the advertiser exists (start)
	}
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *advertiser) loop() {
	for {
		select {
		case <-a.done:
			return
		case <-a.kick:
			a.reconcile()
		}
	}
}

// servedVIP is one VIP of the services this node serves.
type servedVIP struct {
	addr     netip.Addr
	services []string
	healthy  bool
}

// served lists the VIPs of the programmed services, with whether any of
// their services has a healthy endpoint.
func (a *advertiser) served() map[netip.Addr]*servedVIP {
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[netip.Addr]*servedVIP{}
	for name, ss := range s.services {
		healthy := false
		for _, ep := range ss.Service.Endpoints {
			addr, err := netip.ParseAddr(ep.Address)
			if err != nil {
				continue
			}
			if ok, _ := s.probes.health(name, netip.AddrPortFrom(addr, ep.Port)); ok {
				healthy = true
				break
			}
		}
		for _, raw := range append([]string{ss.Service.VIP}, ss.Service.SecondaryVIPs...) {
			v, err := netip.ParseAddr(raw)
			if err != nil {
				continue
			}
			sv := out[v]
			if sv == nil {
				sv = &servedVIP{addr: v}
				out[v] = sv
			}
			sv.services = append(sv.services, name)
			sv.healthy = sv.healthy || healthy
		}
	}
	return out
}

// plan maps each served VIP to the advertisement (one per mode, the first
// in configuration order whose prefixes contain it) and says why a VIP is
// not announced.
func plan(cfg api.AdvertisementConfig, served map[netip.Addr]*servedVIP, stopping bool) (map[string][]ha.VIP, map[netip.Addr]string) {
	byMode := map[string][]ha.VIP{}
	reasons := map[netip.Addr]string{}
	withdraw := stopping || cfg.Draining
	for addr, sv := range served {
		var found bool
		modes := map[string]bool{}
		for _, adv := range cfg.Advertisements {
			if modes[adv.Mode] || !covers(adv, addr) {
				continue
			}
			found = true
			if withdraw || !sv.healthy {
				continue
			}
			modes[adv.Mode] = true
			byMode[adv.Mode] = append(byMode[adv.Mode], ha.VIP{Addr: addr, Advertisement: adv})
		}
		switch {
		case !found:
			reasons[addr] = reasonNoAdvertisement
		case stopping:
			reasons[addr] = reasonStopping
		case cfg.Draining:
			reasons[addr] = reasonDraining
		case !sv.healthy:
			reasons[addr] = reasonNoEndpoint
		}
	}
	for _, l := range byMode {
		sort.Slice(l, func(i, j int) bool { return l[i].Addr.Less(l[j].Addr) })
	}
	return byMode, reasons
}

func covers(adv api.Advertisement, a netip.Addr) bool {
	for _, raw := range adv.Prefixes {
		if p, err := netip.ParsePrefix(raw); err == nil && p.Contains(a) {
			return true
		}
	}
	return false
}

// planNow is what reconcile acts on and vips reports: the served VIPs,
// the announcers, the VIPs each mode must announce (after the HA gate)
// and why a served VIP is not announced.
func (a *advertiser) planNow() (map[netip.Addr]*servedVIP, map[string]ha.Announcer, map[string][]ha.VIP, map[netip.Addr]string) {
	served := a.served()
	a.mu.Lock()
	cfg, anns, stopping := a.cfg, a.announcers, a.stopping
	a.mu.Unlock()
	byMode, reasons := plan(cfg, served, stopping)
	byMode = a.s.gate(byMode, reasons, served)
	return served, anns, byMode, reasons
}

// reconcile hands each announcer the VIPs it must announce now.
func (a *advertiser) reconcile() {
	a.reconcileMu.Lock()
	defer a.reconcileMu.Unlock()
	_, anns, byMode, _ := a.planNow()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for mode, ann := range anns {
		if err := ann.Set(ctx, byMode[mode]); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", mode, err))
		}
	}
	// Modes per VIP in a fixed order ("bgp", "l2", "bgp+l2").
	now := map[netip.Addr]string{}
	for _, mode := range []string{api.AdvertiseBGP, api.AdvertiseL2} {
		if anns[mode] == nil {
			continue
		}
		for _, v := range byMode[mode] {
			if now[v.Addr] != "" {
				now[v.Addr] += "+"
			}
			now[v.Addr] += mode
		}
	}
	a.mu.Lock()
	for v, m := range now {
		if a.announced[v] != m {
			a.changes++
			a.log.Info("vip announced", "vip", v, "modes", m)
		}
	}
	for v := range a.announced {
		if _, ok := now[v]; !ok {
			a.changes++
			a.log.Info("vip withdrawn", "vip", v)
		}
	}
	a.announced = now
	a.lastErr = errors.Join(errs...)
	a.mu.Unlock()
	if len(errs) > 0 {
		a.log.Error("announce vips", "error", errors.Join(errs...))
	}
}

// put replaces the configuration: announcers whose section changed are
// rebuilt (the old one withdraws first), the rest keep their sessions.
func (a *advertiser) put(c api.AdvertisementConfig) error {
	if err := api.ValidateAdvertisementConfig(&c); err != nil {
		return err
	}
	a.reconcileMu.Lock()
	defer a.reconcileMu.Unlock()
	a.mu.Lock()
	old, oldAnns, stopping := a.cfg, a.announcers, a.stopping
	a.mu.Unlock()
	if stopping {
		return &httpError{code: http.StatusServiceUnavailable, msg: "the daemon is stopping"}
	}
	// With HA sync a drain withdraws only once the peers hold this node's
	// flows (ha_drain.go): until Drain returns the VIPs stay announced.
	d, _ := a.s.ready.(drainer)
	if d != nil && c.Draining && !old.Draining {
		d.Drain()
	}
	if err := a.save(c); err != nil {
		if d != nil {
			d.SetDraining(old.Draining)
		}
		return err
	}
	same := reflect.DeepEqual(old.BGP, c.BGP) && reflect.DeepEqual(old.L2, c.L2) && sameModes(old, c) && old.Draining == c.Draining
	anns := oldAnns
	if !same {
		a.closeAnnouncers(oldAnns)
		var err error
		anns, err = newAnnouncers(context.Background(), c, a.deps())
		if err != nil {
			// Back to what ran before, so a refused change stops nothing.
			if serr := a.save(old); serr != nil {
				a.log.Error("restore the previous advertisement state", "error", serr)
			}
			prev, perr := newAnnouncers(context.Background(), old, a.deps())
			if perr != nil {
				a.log.Error("restart the previous announcers", "error", perr)
				prev = map[string]ha.Announcer{}
			}
			a.mu.Lock()
			a.announcers = prev
			a.mu.Unlock()
			if d != nil {
				d.SetDraining(old.Draining)
			}
			go a.trigger()
			return err
		}
	}
	a.mu.Lock()
	a.cfg, a.announcers = c, anns
	if !same {
		a.peerUp = map[string]bool{}
	}
	a.mu.Unlock()
	if d != nil {
		d.SetDraining(c.Draining)
	}
	a.log.Info("advertisement configuration replaced", "advertisements", len(c.Advertisements), "restartedAnnouncers", !same)
	a.trigger()
	return nil
}

func sameModes(x, y api.AdvertisementConfig) bool {
	m := func(c api.AdvertisementConfig) map[string]bool {
		out := map[string]bool{}
		for _, a := range c.Advertisements {
			out[a.Mode] = true
		}
		return out
	}
	return reflect.DeepEqual(m(x), m(y))
}

// closeAnnouncers withdraws and ends the announcers' sessions (the BGP
// speaker is only stopped: it is restarted by the next newAnnouncers).
func (a *advertiser) closeAnnouncers(anns map[string]ha.Announcer) {
	for mode, ann := range anns {
		if err := stopAnnouncer(ann); err != nil {
			a.log.Error("stop announcer", "mode", mode, "error", err)
		}
	}
}

// close withdraws every VIP (the announcers send withdrawals and close
// their sessions) and stops. Called first when the daemon stops.
func (a *advertiser) close() {
	if a == nil {
		return
	}
	a.mu.Lock()
	if a.stopping {
		a.mu.Unlock()
		return
	}
	a.stopping = true
	anns := a.announcers
	a.announcers = map[string]ha.Announcer{}
	a.mu.Unlock()
	close(a.done)
	a.reconcileMu.Lock()
	defer a.reconcileMu.Unlock()
	a.closeAnnouncers(anns)
	if err := a.speaker.close(); err != nil {
		a.log.Error("close the bgp speaker", "error", err)
	}
	if len(anns) > 0 {
		a.log.Info("vips withdrawn: the daemon is stopping")
	}
}
