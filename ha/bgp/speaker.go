// Package bgp announces VIPs with an embedded gobgp (osrg/gobgp/v3) speaker:
// a /32 or /128 per VIP (or the covering prefix of an advertisement's
// aggregation length), next hop self, the advertisement's communities,
// local preference and MED. Each peer with a BFD profile gets a BFD session
// (ha/bfd); BFD going down resets the BGP session and holds it down until
// BFD is up again, so a failed path is noticed in the detection time
// instead of the hold time.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	gapi "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha"
	"github.com/telcolb/telcolb/ha/bfd"
)

// Options are the speaker's dependencies.
type Options struct {
	Logger *slog.Logger
	// BFD runs the BFD sessions; nil makes a manager of the speaker's own.
	BFD *bfd.Manager
	// ConnectRetry is how long a peer waits between connection attempts
	// (default 2 s; gobgp's 120 s default would keep a router that
	// restarted without the VIPs for two minutes).
	ConnectRetry time.Duration
	// OnPeerState, when set, is called on each BGP session state change
	// (metrics).
	OnPeerState func(peer, state string)
}

// Speaker is the embedded BGP speaker. It implements ha.Announcer.
//
// One Speaker owns one gobgp server for its whole life: a configuration
// change restarts the sessions on it (Restart: StopBgp, then StartBgp with
// the new global configuration, export policy, peers and the routes
// re-added) instead of building a new server, because a gobgp v3.37.0
// server never lets its Serve goroutine return: every discarded server
// would stay in memory with its tables.
type Speaker struct {
	log    *slog.Logger
	srv    *server.BgpServer
	bfdm   *bfd.Manager
	ownBFD bool
	opts   Options
	cancel context.CancelFunc

	// mu guards the peers' state and cfg; it is never held across a call
	// into gobgp (whose event callbacks take it). cfg is written under
	// both routeMu and mu, so either is enough to read it.
	mu      sync.Mutex
	cfg     api.BGPConfig
	peers   map[string]*peer // by name
	running bool             // between a start and a Stop
	closed  bool
	// bfdMu serialises the BFD-driven hold-downs.
	bfdMu sync.Mutex
	// routeMu serialises Set, Stop, Restart and Close and guards routes,
	// vips and want.
	routeMu sync.Mutex
	routes  map[netip.Prefix]*route
	vips    map[netip.Addr]netip.Prefix
	// want is the last Set's input, announced again after a restart.
	want []ha.VIP
}

type peer struct {
	cfg   api.BGPPeer
	addr  netip.Addr
	state string
	since time.Time
	// heldDown: BFD went down, the session is disabled until BFD is Up.
	heldDown       bool
	lastDownReason string
	bfd            *bfd.Peer
	bfdStop        chan struct{}
	// adminKick wakes the goroutine that makes gobgp's admin state of
	// the peer follow heldDown (holddown.go).
	adminKick chan struct{}
	// removed: the peer left with a Stop; its BFD session must not start.
	removed bool
}

type route struct {
	prefix  netip.Prefix
	attrs   string // canonical form of the attributes, to notice changes
	path    *gapi.Path
	adv     api.Advertisement
	markers [][3]uint32 // the peers a restricted route may go to (export.go)
}

var _ ha.Announcer = (*Speaker)(nil)

// Config returns the configuration the speaker runs.
func (s *Speaker) Config() api.BGPConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

func family(a netip.Addr) *gapi.Family {
	if a.Is4() {
		return &gapi.Family{Afi: gapi.Family_AFI_IP, Safi: gapi.Family_SAFI_UNICAST}
	}
	return &gapi.Family{Afi: gapi.Family_AFI_IP6, Safi: gapi.Family_SAFI_UNICAST}
}

func (s *Speaker) addPeer(ctx context.Context, pc api.BGPPeer) error {
	addr, err := netip.ParseAddr(pc.Address)
	if err != nil {
		return fmt.Errorf("bgp: peer %s address: %w", pc.Name, err)
	}
	addr = addr.Unmap()
	hold := uint64(pc.HoldTimeSeconds)
	if hold == 0 {
		hold = 90
	}
	keep := uint64(pc.KeepaliveTimeSeconds)
	if keep == 0 {
		keep = hold / 3
	}
	p := &gapi.Peer{
		Conf: &gapi.PeerConf{NeighborAddress: addr.String(), PeerAsn: pc.ASN, AuthPassword: pc.Password, Description: pc.Name},
		Timers: &gapi.Timers{Config: &gapi.TimersConfig{
			HoldTime: hold, KeepaliveInterval: keep,
			ConnectRetry:           uint64(max(1, s.opts.ConnectRetry/time.Second)),
			IdleHoldTimeAfterReset: 1,
		}},
		Transport: &gapi.Transport{RemotePort: uint32(pc.Port), LocalAddress: pc.SourceAddress},
		// One family per session, the peer address's: an IPv4 session
		// carries IPv4 VIPs, an IPv6 session IPv6 VIPs (MP-BGP), each with
		// a next hop of its own family.
		AfiSafis: []*gapi.AfiSafi{{Config: &gapi.AfiSafiConfig{Family: family(addr), Enabled: true}}},
	}
	if pc.EBGPMultihop {
		p.EbgpMultihop = &gapi.EbgpMultihop{Enabled: true, MultihopTtl: 255}
	}
	if err := s.srv.AddPeer(ctx, &gapi.AddPeerRequest{Peer: p}); err != nil {
		return fmt.Errorf("bgp: add peer %s (%s): %w", pc.Name, addr, err)
	}
	st := &peer{cfg: pc, addr: addr, state: "idle", since: time.Now()}
	s.mu.Lock()
	s.peers[pc.Name] = st
	s.mu.Unlock()
	if pc.BFD != nil {
		st.bfdStop = make(chan struct{})
		st.adminKick = make(chan struct{}, 1)
		go s.runBFD(st)
		go s.runAdmin(st)
	}
	return nil
}

// runBFD starts the peer's BFD session, retrying while the local address
// toward the peer does not exist yet.
func (s *Speaker) runBFD(p *peer) {
	prof := p.cfg.BFD
	cfg := bfd.PeerConfig{
		Remote:        p.addr,
		DesiredMinTx:  time.Duration(orDefault(prof.TransmitIntervalMs, 300)) * time.Millisecond,
		RequiredMinRx: time.Duration(orDefault(prof.ReceiveIntervalMs, 300)) * time.Millisecond,
		DetectMult:    uint8(orDefault(prof.DetectMultiplier, 3)),
		// A peer that is not directly connected gets RFC 5883 multihop
		// BFD: its packets arrive with a TTL below 255.
		Multihop: p.cfg.EBGPMultihop || prof.Multihop,
		MinTTL:   uint8(prof.MinimumTTL),
	}
	if p.cfg.SourceAddress != "" {
		cfg.Local, _ = netip.ParseAddr(p.cfg.SourceAddress)
	}
	for {
		bp, err := s.bfdm.Add(cfg, func(bfd.State, bfd.Diag) { s.bfdChanged(p) })
		if err == nil {
			s.mu.Lock()
			if s.closed || p.removed {
				s.mu.Unlock()
				bp.Close()
				return
			}
			p.bfd = bp
			s.mu.Unlock()
			return
		}
		s.log.Warn("bfd session not started, retrying", "peer", p.cfg.Name, "error", err)
		select {
		case <-p.bfdStop:
			return
		case <-time.After(time.Second):
		}
	}
}

func orDefault(v, d uint32) uint32 {
	if v == 0 {
		return d
	}
	return v
}

func (s *Speaker) onEvent(r *gapi.WatchEventResponse) {
	pe := r.GetPeer()
	if pe == nil || pe.Peer == nil || pe.Peer.State == nil {
		return
	}
	addr, err := netip.ParseAddr(pe.Peer.State.NeighborAddress)
	if err != nil {
		return
	}
	state := sessionState(pe.Peer.State.SessionState)
	var notify func()
	s.mu.Lock()
	for _, p := range s.peers {
		if p.addr == addr.Unmap() && p.state != state {
			if p.state == "established" {
				if p.lastDownReason == "" || !p.heldDown {
					p.lastDownReason = "session went " + state
				}
			}
			p.state = state
			p.since = time.Now()
			s.log.Info("bgp session state", "peer", p.cfg.Name, "state", state)
			if s.opts.OnPeerState != nil {
				name := p.cfg.Name
				notify = func() { s.opts.OnPeerState(name, state) }
			}
		}
	}
	s.mu.Unlock()
	if notify != nil {
		notify()
	}
}

func sessionState(st gapi.PeerState_SessionState) string {
	switch st {
	case gapi.PeerState_IDLE:
		return "idle"
	case gapi.PeerState_CONNECT:
		return "connect"
	case gapi.PeerState_ACTIVE:
		return "active"
	case gapi.PeerState_OPENSENT:
		return "opensent"
	case gapi.PeerState_OPENCONFIRM:
		return "openconfirm"
	case gapi.PeerState_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// routeOf is the prefix announced for vip under adv.
func routeOf(vip netip.Addr, adv api.Advertisement) netip.Prefix {
	bits := vip.BitLen()
	if vip.Is4() && adv.AggregationLength != 0 {
		bits = int(adv.AggregationLength)
	}
	if vip.Is6() && adv.AggregationLengthV6 != 0 {
		bits = int(adv.AggregationLengthV6)
	}
	return netip.PrefixFrom(vip, bits).Masked()
}

// Set announces exactly the given VIPs (level-triggered): new routes are
// added, routes whose attributes (peers included) changed are replaced in
// place (an implicit replace on the wire, no withdrawal in between), the
// others are withdrawn. It only changes the local RIB; gobgp sends the
// updates.
func (s *Speaker) Set(ctx context.Context, vips []ha.VIP) error {
	s.routeMu.Lock()
	defer s.routeMu.Unlock()
	s.mu.Lock()
	closed, running := s.closed, s.running
	s.mu.Unlock()
	if closed {
		return errors.New("bgp: speaker closed")
	}
	s.want = append([]ha.VIP(nil), vips...)
	if !running {
		return errStopped
	}
	return s.apply(ctx, s.want)
}

// apply makes the local RIB hold exactly the routes of vips. routeMu is
// held, so the configuration (peers, markers) cannot change meanwhile.
func (s *Speaker) apply(ctx context.Context, vips []ha.VIP) error {
	want := map[netip.Prefix]*route{}
	wantVIP := map[netip.Addr]netip.Prefix{}
	// Sorted so that the advertisement an aggregate takes its attributes
	// from does not depend on map order.
	sorted := append([]ha.VIP(nil), vips...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Addr.Less(sorted[j].Addr) })
	for _, v := range sorted {
		if v.Advertisement.Mode != api.AdvertiseBGP {
			continue
		}
		pfx := routeOf(v.Addr.Unmap(), v.Advertisement)
		wantVIP[v.Addr.Unmap()] = pfx
		if want[pfx] != nil {
			continue
		}
		attrs, err := attrKey(v.Advertisement)
		if err != nil {
			return fmt.Errorf("bgp: advertisement %s: %w", v.Advertisement.Name, err)
		}
		mk, ok := s.markers(v.Advertisement)
		if !ok {
			// It names none of the peers (possible with the VIPs of a
			// Set made under an earlier configuration): it goes nowhere.
			delete(wantVIP, v.Addr.Unmap())
			continue
		}
		want[pfx] = &route{prefix: pfx, attrs: fmt.Sprintf("%s to=%v", attrs, mk), adv: v.Advertisement, markers: mk}
	}
	var errs []error
	for pfx, r := range s.routes {
		if want[pfx] == nil {
			if err := s.withdraw(ctx, r); err != nil {
				errs = append(errs, fmt.Errorf("withdraw %s: %w", pfx, err))
				continue
			}
			delete(s.routes, pfx)
		}
	}
	for pfx, w := range want {
		if r := s.routes[pfx]; r != nil && r.attrs == w.attrs {
			continue
		}
		// A changed route is added over the old one: gobgp replaces it,
		// sends the new attributes to the peers that keep it and a
		// withdrawal to the peers that lose it (export.go).
		path, err := buildPath(pfx, w.adv, w.markers)
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %s: %w", pfx, err))
			continue
		}
		if _, err := s.srv.AddPath(ctx, &gapi.AddPathRequest{TableType: gapi.TableType_GLOBAL, Path: path}); err != nil {
			errs = append(errs, fmt.Errorf("announce %s: %w", pfx, err))
			continue
		}
		w.path = path
		s.routes[pfx] = w
	}
	s.vips = wantVIP
	if len(errs) > 0 {
		return fmt.Errorf("bgp: %w", errors.Join(errs...))
	}
	return nil
}

// withdraw removes a route by its path (NLRI and family). Deleting by
// UUID would do: gobgp then scans the whole table per deletion, which makes
// withdrawing thousands of VIPs quadratic.
func (s *Speaker) withdraw(ctx context.Context, r *route) error {
	return s.srv.DeletePath(ctx, &gapi.DeletePathRequest{TableType: gapi.TableType_GLOBAL, Family: r.path.Family, Path: r.path})
}

// attrKey validates an advertisement's attributes and returns them in a
// canonical form.
func attrKey(adv api.Advertisement) (string, error) {
	std, large, err := parseCommunities(adv.Communities)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "c=%v l=%v", std, large)
	if adv.LocalPreference != nil {
		fmt.Fprintf(&b, " lp=%d", *adv.LocalPreference)
	}
	if adv.MED != nil {
		fmt.Fprintf(&b, " med=%d", *adv.MED)
	}
	return b.String(), nil
}

// parseCommunities splits standard and large communities (api.ParseCommunity).
func parseCommunities(in []string) ([]uint32, [][3]uint32, error) {
	var std []uint32
	var large [][3]uint32
	for _, c := range in {
		pc, err := api.ParseCommunity(c)
		if err != nil {
			return nil, nil, err
		}
		if pc.Large {
			large = append(large, pc.Parts)
		} else {
			std = append(std, pc.Standard)
		}
	}
	return std, large, nil
}

func buildPath(pfx netip.Prefix, adv api.Advertisement, markers [][3]uint32) (*gapi.Path, error) {
	nlri, err := anypb.New(&gapi.IPAddressPrefix{Prefix: pfx.Addr().String(), PrefixLen: uint32(pfx.Bits())})
	if err != nil {
		return nil, err
	}
	attrs := []proto.Message{&gapi.OriginAttribute{Origin: 0}} // IGP
	fam := family(pfx.Addr())
	// An unspecified next hop is "self": gobgp puts the session's local
	// address in its place for each peer.
	if pfx.Addr().Is4() {
		attrs = append(attrs, &gapi.NextHopAttribute{NextHop: "0.0.0.0"})
	} else {
		attrs = append(attrs, &gapi.MpReachNLRIAttribute{Family: fam, NextHops: []string{"::"}, Nlris: []*anypb.Any{nlri}})
	}
	std, large, err := parseCommunities(adv.Communities)
	if err != nil {
		return nil, err
	}
	large = append(large, markers...)
	if len(std) > 0 {
		attrs = append(attrs, &gapi.CommunitiesAttribute{Communities: std})
	}
	if len(large) > 0 {
		lc := make([]*gapi.LargeCommunity, len(large))
		for i, l := range large {
			lc[i] = &gapi.LargeCommunity{GlobalAdmin: l[0], LocalData1: l[1], LocalData2: l[2]}
		}
		attrs = append(attrs, &gapi.LargeCommunitiesAttribute{Communities: lc})
	}
	if adv.LocalPreference != nil {
		attrs = append(attrs, &gapi.LocalPrefAttribute{LocalPref: *adv.LocalPreference})
	}
	if adv.MED != nil {
		attrs = append(attrs, &gapi.MultiExitDiscAttribute{Med: *adv.MED})
	}
	pattrs := make([]*anypb.Any, 0, len(attrs))
	for _, a := range attrs {
		m, err := anypb.New(a)
		if err != nil {
			return nil, err
		}
		pattrs = append(pattrs, m)
	}
	return &gapi.Path{Family: fam, Nlri: nlri, Pattrs: pattrs}, nil
}

// Announced reports the VIPs announced and through which established
// sessions of their family ("bgp/<peer>"), among the peers their
// advertisement names.
func (s *Speaker) Announced() map[netip.Addr]ha.Announcement {
	s.routeMu.Lock()
	defer s.routeMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[netip.Addr]ha.Announcement, len(s.vips))
	var up []*peer
	for _, p := range s.peers {
		if p.state == "established" {
			up = append(up, p)
		}
	}
	sort.Slice(up, func(i, j int) bool { return up[i].cfg.Name < up[j].cfg.Name })
	for v, pfx := range s.vips {
		via := []string{}
		r := s.routes[pfx]
		for _, p := range up {
			if p.addr.Is4() == v.Is4() && (r == nil || allowed(r.adv, p.cfg.Name)) {
				via = append(via, "bgp/"+p.cfg.Name)
			}
		}
		out[v] = ha.Announcement{Via: via}
	}
	return out
}

// PeerStatus reports each BGP session, in configuration order.
func (s *Speaker) PeerStatus(ctx context.Context) []api.BGPPeerStatus {
	sent := map[string]int{}
	_ = s.srv.ListPeer(ctx, &gapi.ListPeerRequest{EnableAdvertised: true}, func(p *gapi.Peer) {
		if p.State == nil {
			return
		}
		n := 0
		for _, af := range p.AfiSafis {
			if af.State != nil {
				n += int(af.State.Advertised)
			}
		}
		if a, err := netip.ParseAddr(p.State.NeighborAddress); err == nil {
			sent[a.Unmap().String()] = n
		}
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]api.BGPPeerStatus, 0, len(s.cfg.Peers))
	for _, pc := range s.cfg.Peers {
		p := s.peers[pc.Name]
		if p == nil {
			continue
		}
		st := api.BGPPeerStatus{Name: pc.Name, Address: p.addr.String(), State: p.state, Since: p.since.UTC().Format(time.RFC3339), PrefixesSent: sent[p.addr.String()], LastDownReason: p.lastDownReason}
		if p.state != "established" {
			st.PrefixesSent = 0
		}
		if p.bfd != nil {
			st.BFD = p.bfd.Status().State.String()
		} else if pc.BFD != nil {
			st.BFD = "Down"
		}
		out = append(out, st)
	}
	return out
}

// BFDStatus reports each BFD session.
func (s *Speaker) BFDStatus() []api.BFDSessionStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []api.BFDSessionStatus
	for _, pc := range s.cfg.Peers {
		p := s.peers[pc.Name]
		if p == nil || pc.BFD == nil {
			continue
		}
		mode := "single-hop"
		if pc.EBGPMultihop || pc.BFD.Multihop {
			mode = "multihop"
		}
		if p.bfd == nil {
			out = append(out, api.BFDSessionStatus{Peer: pc.Name, State: "Down", Mode: mode})
			continue
		}
		st := p.bfd.Status()
		out = append(out, api.BFDSessionStatus{
			Peer: pc.Name, State: st.State.String(), Since: st.Since.UTC().Format(time.RFC3339), Mode: mode,
			LocalDiscriminator: st.LocalDiscr, RemoteDiagnostic: st.RemoteDiag.String(),
			TransmitIntervalMs: uint32(st.TxInterval / time.Millisecond), DetectTimeMs: uint32(st.DetectTime / time.Millisecond),
		})
	}
	return out
}
