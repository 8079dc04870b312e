package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telcolb/telcolb/api"
	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb"
	"github.com/telcolb/telcolb/sctplb/steer"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/auto"
	"github.com/telcolb/telcolb/sctplb/transport/usrsctp"
)

// N2 services (api.Service.N2) get no eBPF rule: the daemon terminates the
// gNBs' SCTP associations itself with an sctplb.Proxy listening on
// VIP[,secondary VIPs]:Port and steers each UE to one of the service's
// endpoints (the AMFs). The VIPs must therefore be local addresses of the
// daemon's network namespace; with the usrsctp transport (no kernel SCTP)
// they must sit on a real interface, not lo, which usrsctp ignores.
//
// Every N2 service shares one SCTP transport, opened at the first N2
// service: usrsctp allows a single stack per process, started in the
// daemon's namespace.
//
// Endpoints added to or removed from a running N2 service are applied live
// (sctplb.Proxy.AddAMF / RemoveAMF): an added AMF gets an association per
// gNB and a share of new UEs; a removed AMF's UEs are released toward their
// gNBs and come back with their 5G-S-TMSI onto the remaining AMFs; nothing
// else is disturbed. A change of VIPs, port, selection or of an existing
// endpoint's weight restarts that service's proxy instead: its gNB
// associations drop, the gNBs reconnect and redo NG Setup, the UE contexts
// it held are gone (UEs re-register or return with their 5G-S-TMSI, which
// still names their AMF) and its metrics restart from 0. An update that
// changes none of these leaves the proxy alone.

// N2Config lets tests and embedders choose the N2 proxies' transport.
type N2Config struct {
	// Transport carries every N2 proxy; nil opens auto.Open (kernel SCTP
	// when available, else usrsctp) at the first N2 service.
	Transport transport.Transport
	// TransportMode forces auto.Open's choice ("", auto, kernel, userspace).
	TransportMode string
	// Usrsctp tunes the userspace stack; its zero value means N2Timers().
	Usrsctp usrsctp.Config
	// Replica, when set (HA sync on), replicates every N2 proxy's state
	// to the peers and parks theirs in the proxy of the same service
	// (n2ha.go).
	Replica *N2Replica
}

// N2Timers are the usrsctp timers of the daemon's N2 stack unless N2Config
// says otherwise: a crashed AMF or gNB is noticed in seconds (heartbeat
// 1 s, RTO 100 ms to 1 s, association aborted after 6 retransmissions),
// where the RFC 9260 defaults (30 s heartbeats, RTO up to 60 s, 10
// retransmissions) take minutes and leave its UEs stranded. Kernel SCTP
// keeps the node's net.sctp sysctls.
//
// A peer that stops answering while data is outstanding is given 4.5 s
// (the RTO doubling from 100 ms to its 1 s cap, seven timeouts) before
// the association goes and its UEs with it. With 4 retransmissions it was
// 2.5 s, and a stalled AMF process on a loaded machine (a paused pod would
// do the same) lost its association in the middle of a registration: CI's
// run of TestN2UEsSurviveANodeFailure, and TestN2LabThroughTheDaemon's
// 3 s stall, which fails with 4.
//
// The raw SCTP sockets get 4 MiB buffers: usrsctp's own 128 KiB overflowed
// when a takeover brought a thousand UEs' uplinks at once (348 packets
// dropped by lb2's socket in one run, each costing its sender an RTO: last
// UE answered 1.4 s after the kill instead of 0.5 s;
// TestN2UEsSurviveANodeFailure).
func N2Timers() usrsctp.Config {
	return usrsctp.Config{
		RTOMin: 100 * time.Millisecond, RTOInitial: 300 * time.Millisecond, RTOMax: time.Second,
		HeartbeatInterval: time.Second, PathMaxRetrans: 2, AssocMaxRetrans: 6,
		RawSocketBuffer: N2RawSocketBuffer,
	}
}

// N2RawSocketBuffer is the daemon's usrsctp raw socket buffer size.
const N2RawSocketBuffer = 4 << 20

// n2Manager runs the N2 proxies and owns the SCTP transport they share.
type n2Manager struct {
	proxyManager[n2Spec, *sctplb.Proxy]
	cfg N2Config

	// tr and closer are guarded by proxyManager.mu.
	tr     transport.Transport
	closer io.Closer
}

func newN2Manager(cfg N2Config, reg prometheus.Registerer, log *slog.Logger) *n2Manager {
	m := &n2Manager{cfg: cfg, tr: cfg.Transport}
	if cfg.Replica != nil {
		cfg.Replica.setRunning(m.running)
	}
	m.proxyManager = newProxyManager(proxyKind[n2Spec, *sctplb.Proxy]{
		name: "N2 proxy", errPrefix: "n2 service",
		restarting:  "N2 service changed: restarting its proxy; its gNBs reconnect and its UE contexts are dropped",
		configOf:    n2SpecOf,
		reconfigure: m.reconfigure,
		start:       m.start,
		describe: func(_ api.Service, sp n2Spec) []any {
			return []any{"listen", sp.Listen.String(), "amfs", len(sp.AMFs), "policy", sp.Policy.String()}
		},
		fill: fillN2,
	}, reg, log)
	return m
}

// n2Spec is what a running proxy depends on; a change in it restarts the
// proxy.
type n2Spec struct {
	Listen transport.Endpoint
	AMFs   []sctplb.AMFEndpoint
	Policy steer.Policy
}

// n2SpecOf maps an api.Service onto a proxy configuration; leastconn
// means "fewest UE contexts" (policyOf).
func n2SpecOf(svc api.Service) (n2Spec, error) {
	var sp n2Spec
	if svc.PortEnd != 0 && svc.PortEnd != svc.Port {
		return sp, &api.FieldError{Field: "portEnd", Message: "an N2 service listens on one port, not a range"}
	}
	for i, v := range append([]string{svc.VIP}, svc.SecondaryVIPs...) {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return sp, &api.FieldError{Field: "vip", Message: fmt.Sprintf("address %d: %v", i, err)}
		}
		sp.Listen.Addrs = append(sp.Listen.Addrs, a)
	}
	sp.Listen.Port = svc.Port
	bs, weighted, err := backendsOf(svc, svc.Port)
	if err != nil {
		return sp, err
	}
	for _, b := range bs {
		sp.AMFs = append(sp.AMFs, sctplb.AMFEndpoint{Name: b.name, Address: transport.Endpoint{Addrs: []netip.Addr{b.addr.Addr()}, Port: b.addr.Port()}, Weight: b.weight})
	}
	sp.Policy, err = policyOf(svc, weighted, steer.RoundRobin, steer.Weighted, steer.LeastUEs, "N2 services steer UEs", "UEs")
	return sp, err
}

// start runs under proxyManager.mu, which transportLocked needs: the first
// N2 service opens the shared transport.
func (m *n2Manager) start(svc api.Service, sp n2Spec, _ *liveProxy[n2Spec, *sctplb.Proxy], reg prometheus.Registerer) (*sctplb.Proxy, func(context.Context) error, error) {
	tr, err := m.transportLocked()
	if err != nil {
		return nil, nil, err
	}
	pc := sctplb.Config{
		Transport: tr, Listen: sp.Listen, AMFs: sp.AMFs, Policy: sp.Policy,
		Name: svc.Name, Registerer: reg, Logger: m.log.With("n2", svc.Name),
	}
	if r := m.cfg.Replica; r != nil {
		pc.Publish = r.publisher(svc.Name)
	}
	p, err := sctplb.New(pc)
	if err != nil {
		return nil, nil, fmt.Errorf("n2 service %s: %w", svc.Name, err)
	}
	ln, err := tr.Listen(sp.Listen)
	if err != nil {
		return nil, nil, &api.FieldError{Field: "vip", Message: fmt.Sprintf("N2 proxy cannot listen on %v (the VIP must be a local address of the daemon, on a real interface for usrsctp): %v", sp.Listen, err)}
	}
	run := func(ctx context.Context) error { return p.Serve(ctx, ln) }
	if r := m.cfg.Replica; r != nil {
		run = func(ctx context.Context) error {
			// Import blocks until the loop runs; it is parked, not acted on.
			go r.attach(svc.Name, p)
			return p.Serve(ctx, ln)
		}
	}
	return p, run, nil
}

// reconfigure applies an AMF-only change in place; any other change, or
// an AMF the proxy refuses, restarts the proxy.
func (m *n2Manager) reconfigure(name string, p *sctplb.Proxy, cur, next n2Spec) (bool, error) {
	if err := updateAMFs(p, cur, next); err != nil {
		m.log.Info("N2 service cannot be updated in place", "service", name, "reason", err)
		return false, nil
	}
	m.log.Info("N2 service's AMFs updated in place", "service", name, "amfs", len(next.AMFs))
	return true, nil
}

// updateAMFs applies an AMF-only change to a running proxy: new AMFs are
// added before old ones go, so replacing every AMF never empties the proxy.
func updateAMFs(p *sctplb.Proxy, cur, next n2Spec) error {
	if !reflect.DeepEqual(cur.Listen, next.Listen) || cur.Policy != next.Policy {
		return errors.New("listen endpoint or policy changed")
	}
	old := map[string]sctplb.AMFEndpoint{}
	for _, a := range cur.AMFs {
		old[a.Name] = a
	}
	keep := map[string]bool{}
	var add []sctplb.AMFEndpoint
	for _, a := range next.AMFs {
		keep[a.Name] = true
		o, ok := old[a.Name]
		switch {
		case !ok:
			add = append(add, a)
		case o.Weight != a.Weight:
			return fmt.Errorf("weight of %s changed", a.Name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, a := range add {
		if err := p.AddAMF(ctx, a); err != nil {
			return err
		}
	}
	for _, a := range cur.AMFs {
		if !keep[a.Name] {
			if err := p.RemoveAMF(ctx, a.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *n2Manager) transportLocked() (transport.Transport, error) {
	if m.tr != nil {
		return m.tr, nil
	}
	// NGAP decoding through free5gc logs every decode at info level.
	ngapl.SilenceLibraryLogs()
	uc := m.cfg.Usrsctp
	if reflect.DeepEqual(uc, usrsctp.Config{}) {
		uc = N2Timers()
	}
	tr, mode, closer, err := auto.Open(auto.Config{Mode: auto.Mode(m.cfg.TransportMode), Usrsctp: uc, Logger: m.log})
	if err != nil {
		return nil, fmt.Errorf("open SCTP transport for N2: %w", err)
	}
	m.log.Info("SCTP transport for N2 proxies opened", "mode", mode)
	m.tr, m.closer = tr, closer
	return tr, nil
}

func (m *n2Manager) stats(name string) (sctplb.Stats, bool) {
	p, ok := m.running(name)
	if !ok {
		return sctplb.Stats{}, false
	}
	return p.Stats(), true
}

// fill puts the proxy's state into a service status: an endpoint's
// ActiveConnections is the UE contexts its AMF holds, the service's the
// total. The datapath counters do not apply to an N2 service.
func fillN2(p *sctplb.Proxy, st *api.ServiceStatus) {
	s := p.Stats()
	amfs := map[string]sctplb.AMFStats{}
	for _, a := range s.AMFs {
		amfs[a.Name] = a
	}
	var total uint64
	for i, ep := range st.Endpoints {
		a, ok := amfs[backendName(api.Endpoint{Address: ep.Address, Port: ep.Port}, st.Service.Port)]
		n := uint64(a.UEs)
		st.Endpoints[i].ActiveConnections = n
		total += n
		if ok {
			// An AMF the probe reaches but whose NG associations are all
			// down (refused NG Setup, SCTP lost) serves no gNB.
			st.Endpoints[i].N2 = a.State()
			if a.State() == "down" {
				st.Endpoints[i].Healthy = false
				if st.Endpoints[i].LastProbeError == "" {
					st.Endpoints[i].LastProbeError = "N2: no NG association to this AMF is up"
				}
			}
		}
	}
	st.ActiveConnections = total
}

// close stops every proxy and releases the transport.
func (m *n2Manager) close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopAllLocked()
	if m.closer != nil {
		err := m.closer.Close()
		m.closer, m.tr = nil, m.cfg.Transport
		if err != nil {
			return fmt.Errorf("close N2 transport: %w", err)
		}
	}
	return nil
}

// sctpTransport opens (once) and returns the SCTP transport the N2 proxies
// use, for the Diameter agents of SCTP services, which share it.
func (m *n2Manager) sctpTransport() (transport.Transport, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.transportLocked()
}
