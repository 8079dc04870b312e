package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	gapi "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha/bfd"
)

// The speaker's life: New creates its one gobgp server and starts it;
// Restart and Stop end the sessions and start them again on that server;
// Close ends it.

// errStopped is returned by Set while the speaker is stopped.
var errStopped = errors.New("bgp: speaker stopped")

// New creates the speaker's gobgp server and starts it with cfg (validated
// by api.ValidateAdvertisementConfig).
func New(ctx context.Context, cfg api.BGPConfig, opts Options) (*Speaker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ConnectRetry <= 0 {
		opts.ConnectRetry = 2 * time.Second
	}
	if cfg.RouterID == "" {
		return nil, errNoRouterID
	}
	s := &Speaker{
		log:    opts.Logger.With("component", "bgp"),
		opts:   opts,
		peers:  map[string]*peer{},
		routes: map[netip.Prefix]*route{},
		vips:   map[netip.Addr]netip.Prefix{},
		bfdm:   opts.BFD,
	}
	if s.bfdm == nil {
		s.bfdm = bfd.NewManager(opts.Logger.With("component", "bfd"))
		s.ownBFD = true
	}
	s.srv = server.NewBgpServer(server.LoggerOption(&logAdapter{log: s.log}))
	go s.srv.Serve()
	// The watcher outlives StopBgp: it is registered once per server.
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := s.srv.WatchEvent(wctx, &gapi.WatchEventRequest{Peer: &gapi.WatchEventRequest_Peer{}}, s.onEvent); err != nil {
		s.shutdown()
		return nil, fmt.Errorf("bgp: watch peer events: %w", err)
	}
	s.routeMu.Lock()
	err := s.start(ctx, cfg)
	s.routeMu.Unlock()
	if err != nil {
		s.shutdown()
		return nil, err
	}
	return s, nil
}

var errNoRouterID = errors.New("bgp: router ID required (the daemon picks the node's first IPv4 address when the configuration has none)")

// Restart stops the sessions (as Stop does) and starts them again with cfg
// on the same gobgp server; the VIPs of the last Set are announced again
// (to cfg's peers that their advertisement names). On error the speaker is
// left stopped, and a later Restart may start it.
func (s *Speaker) Restart(ctx context.Context, cfg api.BGPConfig) error {
	if cfg.RouterID == "" {
		return errNoRouterID
	}
	s.routeMu.Lock()
	defer s.routeMu.Unlock()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errors.New("bgp: speaker closed")
	}
	if err := s.stop(ctx); err != nil {
		s.log.Warn("bgp speaker stopped with errors before restarting", "error", err)
	}
	return s.start(ctx, cfg)
}

// start starts gobgp with cfg, defines the export policy, adds the peers
// and announces the last Set's VIPs. routeMu is held. On error it stops
// again.
func (s *Speaker) start(ctx context.Context, cfg api.BGPConfig) error {
	listen := int32(cfg.ListenPort)
	if listen == 0 {
		listen = -1 // gobgp: negative means no listener; 0 would mean 179
	}
	s.mu.Lock()
	s.cfg = cfg
	s.peers = map[string]*peer{}
	s.mu.Unlock()
	if err := s.srv.StartBgp(ctx, &gapi.StartBgpRequest{Global: &gapi.Global{Asn: cfg.ASN, RouterId: cfg.RouterID, ListenPort: listen}}); err != nil {
		return fmt.Errorf("bgp: start speaker: %w", err)
	}
	s.mu.Lock()
	s.running = true
	s.mu.Unlock()
	// StartBgp reset gobgp's policies and made an empty table: the export
	// policy is defined again before any peer exists, so no path ever
	// leaves unfiltered.
	if err := s.installExportPolicy(ctx); err != nil {
		_ = s.stop(ctx)
		return err
	}
	for _, pc := range cfg.Peers {
		if err := s.addPeer(ctx, pc); err != nil {
			_ = s.stop(ctx)
			return err
		}
	}
	s.routes = map[netip.Prefix]*route{}
	s.vips = map[netip.Addr]netip.Prefix{}
	if err := s.apply(ctx, s.want); err != nil {
		// The routes that could be added are; the next Set retries the
		// others, as after any failed Set.
		s.log.Error("announce the vips again after the restart", "error", err)
	}
	s.log.Info("bgp speaker started", "asn", cfg.ASN, "routerID", cfg.RouterID, "listenPort", cfg.ListenPort, "peers", len(cfg.Peers), "routes", len(s.routes))
	return nil
}

// Stop withdraws every route (gobgp sends the withdrawals, then a Cease
// NOTIFICATION as the peers are removed), stops the BFD sessions and stops
// gobgp, keeping its server for a later Restart. It forgets the VIPs: the
// caller stopping the speaker decides anew what to announce (the daemon's
// advertiser does so once the new configuration runs). A Set while
// stopped returns an error; its VIPs are announced by the next Restart.
func (s *Speaker) Stop(ctx context.Context) error {
	s.routeMu.Lock()
	defer s.routeMu.Unlock()
	s.want = nil
	return s.stop(ctx)
}

// stop is Stop with routeMu held; it does nothing when not running.
func (s *Speaker) stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return nil
	}
	s.running = false
	peers := make([]*peer, 0, len(s.peers))
	for _, p := range s.peers {
		p.removed = true
		peers = append(peers, p)
	}
	s.peers = map[string]*peer{}
	s.mu.Unlock()
	routes := s.routes
	s.routes = map[netip.Prefix]*route{}
	s.vips = map[netip.Addr]netip.Prefix{}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var errs []error
	for pfx, r := range routes {
		if err := s.withdraw(ctx, r); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", pfx, err))
		}
	}
	for _, p := range peers {
		if p.bfdStop != nil {
			close(p.bfdStop)
		}
		// Removing the peer sends a Cease NOTIFICATION: the router drops
		// the routes at once instead of waiting for the hold time.
		if err := s.srv.DeletePeer(ctx, &gapi.DeletePeerRequest{Address: p.addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("remove peer %s: %w", p.cfg.Name, err))
		}
		s.mu.Lock()
		bp := p.bfd
		p.bfd = nil
		s.mu.Unlock()
		if bp != nil {
			bp.Close()
		}
	}
	if err := s.srv.StopBgp(ctx, &gapi.StopBgpRequest{}); err != nil {
		errs = append(errs, fmt.Errorf("stop: %w", err))
	}
	s.log.Info("bgp speaker stopped", "withdrawn", len(routes))
	if len(errs) > 0 {
		return fmt.Errorf("bgp: stop: %w", errors.Join(errs...))
	}
	return nil
}

// Close stops the speaker for good (withdrawals and Cease first, as Stop)
// with its BFD sessions. Its gobgp server's Serve goroutine stays (gobgp
// v3.37.0 has no way to end it): one per Speaker, which is why a
// configuration change restarts a Speaker instead of replacing it.
func (s *Speaker) Close() error {
	s.routeMu.Lock()
	defer s.routeMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	err := s.stop(context.Background())
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.want = nil
	s.shutdown()
	if err != nil {
		return fmt.Errorf("bgp: close: %w", err)
	}
	return nil
}

// shutdown releases what New created besides the sessions.
func (s *Speaker) shutdown() {
	if s.cancel != nil {
		s.cancel()
	}
	if s.ownBFD {
		s.bfdm.Close()
	}
	s.srv.Stop()
}
