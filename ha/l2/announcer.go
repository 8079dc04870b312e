// Package l2 makes the VIPs a node owns reachable on its L2 segments: it
// answers ARP requests and Neighbor Solicitations for them with the
// interface's MAC and announces a VIP it takes over with a burst of
// gratuitous ARP / unsolicited Neighbor Advertisements (override set). Which
// node owns a VIP is decided by ha/member; Announcer ties the two together
// and implements ha.Announcer for advertisements of mode l2.
package l2

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/ha"
	"github.com/telcolb/telcolb/ha/member"
)

// Config configures an Announcer.
type Config struct {
	// Node is this node's name, one of Members.
	Node    string
	Members []member.Peer
	// Interval and DetectMultiplier of the heartbeats (member defaults if zero).
	Interval         time.Duration
	DetectMultiplier int
	// Interfaces answer for a VIP whose advertisement names none.
	Interfaces []string
	// DefaultInterfaces, when Interfaces is empty too, gives the interfaces
	// (the daemon passes the ones its datapath is attached to).
	DefaultInterfaces func() []string
	Responder         ResponderConfig
	Logger            *slog.Logger
	// Registerer, when set, receives the L2 metrics (metrics.go).
	Registerer prometheus.Registerer
	// FenceHold: see member.Config (default 5 heartbeat intervals).
	FenceHold time.Duration
	// NoFencing turns split-brain fencing off: claims seen on the segment
	// are not acted on (both sides of a partition answer, as before issue
	// 15). For comparison in tests only.
	NoFencing bool
}

// Announcer implements ha.Announcer for mode l2.
type Announcer struct {
	cfg    Config
	log    *slog.Logger
	node   *member.Node
	resp   *Responder
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	ifs     map[netip.Addr][]string // VIP -> interfaces, from Set
	owned   []netip.Addr
	fenced  []netip.Addr
	owners  map[netip.Addr]string
	changes uint64 // VIPs whose owner changed, as this node saw it
	metrics *collector
}

var _ ha.Announcer = (*Announcer)(nil)

// New binds the heartbeat socket and starts the member machine; nothing is
// answered until Set gives VIPs and the warm-up has passed.
func New(cfg Config) (*Announcer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Responder.Logger == nil {
		cfg.Responder.Logger = cfg.Logger
	}
	a := &Announcer{cfg: cfg, log: cfg.Logger, ifs: map[netip.Addr][]string{}, done: make(chan struct{})}
	node, err := member.Listen(member.NodeConfig{
		Self: cfg.Node, Members: cfg.Members, Interval: cfg.Interval, DetectMultiplier: cfg.DetectMultiplier,
		FenceHold: cfg.FenceHold, Logger: cfg.Logger, OnChange: a.onChange, OnAnnounce: a.onAnnounce,
	})
	if err != nil {
		return nil, fmt.Errorf("l2: %w", err)
	}
	a.node = node
	// A node cut off from the segment built its view hearing nobody: when
	// its link is back it gives up and re-learns ownership (a fresh
	// takeover, with its gratuitous burst) instead of announcing VIPs the
	// others hold now.
	rc := cfg.Responder
	user := rc.OnLinkUp
	rc.OnLinkUp = func(iface string) {
		node.Rewarm()
		if user != nil {
			user(iface)
		}
	}
	if !cfg.NoFencing {
		// Another MAC claiming a VIP we answer for or are fenced from is the
		// split-brain input of the member machine; MACs in the canonical
		// text form are the identities both sides compare.
		rc.OnClaim = func(_ string, vip netip.Addr, ours, theirs net.HardwareAddr) {
			node.Claim(vip, ours.String(), theirs.String())
		}
	}
	a.resp = NewResponder(rc)
	if cfg.Registerer != nil {
		a.metrics = &collector{a: a}
		if err := cfg.Registerer.Register(a.metrics); err != nil {
			node.Close()
			return nil, fmt.Errorf("l2: register metrics: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() {
		defer close(a.done)
		if err := node.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("l2: member node stopped", "err", err)
		}
	}()
	return a, nil
}

// Set replaces the VIPs this node may announce (level-triggered).
func (a *Announcer) Set(_ context.Context, vips []ha.VIP) error {
	ifs := map[netip.Addr][]string{}
	var addrs []netip.Addr
	var errs []error
	for _, v := range vips {
		names := v.Advertisement.Interfaces
		if len(names) == 0 {
			names = a.cfg.Interfaces
		}
		if len(names) == 0 && a.cfg.DefaultInterfaces != nil {
			names = a.cfg.DefaultInterfaces()
		}
		if len(names) == 0 {
			errs = append(errs, fmt.Errorf("l2: vip %v (advertisement %q): no interface to answer on", v.Addr, v.Advertisement.Name))
			continue
		}
		addr := v.Addr.Unmap()
		if _, dup := ifs[addr]; !dup {
			addrs = append(addrs, addr)
		}
		ifs[addr] = append(ifs[addr], names...)
	}
	var all []string
	for v, names := range ifs {
		slices.Sort(names)
		ifs[v] = slices.Compact(names)
		all = append(all, ifs[v]...)
	}
	errs = append(errs, a.resp.Prepare(all))
	a.mu.Lock()
	a.ifs = ifs
	err := a.pushLocked()
	a.mu.Unlock()
	a.node.SetVIPs(addrs)
	return errors.Join(append(errs, err)...)
}

func (a *Announcer) onChange(owned, fenced []netip.Addr, owners map[netip.Addr]string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for v, o := range owners {
		if a.owners[v] != o {
			a.changes++
		}
	}
	a.owned, a.fenced, a.owners = owned, fenced, owners
	if err := a.pushLocked(); err != nil {
		a.log.Error("l2: answering", "err", err)
	}
}

func (a *Announcer) onAnnounce(vips []netip.Addr) { a.resp.Announce(vips) }

// pushLocked hands the responder the owned and the fenced VIPs that are
// still wanted, on their interfaces.
func (a *Announcer) pushLocked() error {
	pick := func(vips []netip.Addr) map[netip.Addr][]string {
		m := map[netip.Addr][]string{}
		for _, v := range vips {
			if ifs, ok := a.ifs[v]; ok {
				m[v] = ifs
			}
		}
		return m
	}
	return a.resp.Update(pick(a.owned), pick(a.fenced))
}

// Announced reports, per VIP given to Set, its owner and, when this node
// owns it, the interfaces it is answered on.
func (a *Announcer) Announced() map[netip.Addr]ha.Announcement {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := map[netip.Addr]ha.Announcement{}
	for v, ifs := range a.ifs {
		an := ha.Announcement{Owner: a.owners[v]}
		if slices.Contains(a.owned, v) {
			for _, i := range ifs {
				an.Via = append(an.Via, "l2/"+i)
			}
		}
		r[v] = an
	}
	return r
}

// Members returns the liveness of the group as this node sees it.
func (a *Announcer) Members() []member.MemberState { return a.node.Members() }

// Stats returns the responder's per-interface counters.
func (a *Announcer) Stats() map[string]Stats { return a.resp.Stats() }

// Close stops answering at once and tells the other members, which take
// this node's VIPs over without waiting for the detection time.
func (a *Announcer) Close() error {
	a.mu.Lock()
	a.owned, a.fenced = nil, nil
	err := a.pushLocked()
	a.mu.Unlock()
	a.node.Leave()
	a.cancel()
	<-a.done
	if a.metrics != nil {
		a.cfg.Registerer.Unregister(a.metrics)
	}
	return errors.Join(err, a.node.Close(), a.resp.Close())
}
