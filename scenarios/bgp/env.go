package bgp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// EchoPort is the backend's UDP echo port (the service port too).
const EchoPort = 7

// NodeConfig is the advertisement configuration of node n; med, when not
// nil, ranks the node (lower wins at the router).
func NodeConfig(n int, med *uint32) api.AdvertisementConfig {
	bfd := &api.BFDProfile{ReceiveIntervalMs: BFDIntervalMs, TransmitIntervalMs: BFDIntervalMs, DetectMultiplier: BFDMultiplier}
	return api.AdvertisementConfig{
		NodeName: fmt.Sprintf("lb%d", n),
		BGP: &api.BGPConfig{ASN: NodeASN, RouterID: NodeAddr(n, 0).String(), Peers: []api.BGPPeer{
			{Name: "router4", Address: RouterLAN[0].String(), ASN: RouterASN, HoldTimeSeconds: 9, BFD: bfd},
			{Name: "router6", Address: RouterLAN[1].String(), ASN: RouterASN, HoldTimeSeconds: 9, BFD: bfd},
		}},
		Advertisements: []api.Advertisement{{Name: "pub", Mode: api.AdvertiseBGP, Prefixes: VIPPrefix[:], MED: med, Communities: []string{"65001:100", "65001:1:2"}}},
	}
}

// Services are the two services every node serves: the IPv4 and the IPv6
// VIP, UDP echo on be1, onearm (the backend answers the node that
// forwarded, whichever it is).
func Services() []api.Service {
	var out []api.Service
	for fam, name := range []string{"echo4", "echo6"} {
		out = append(out, api.Service{Name: name, VIP: VIPs[fam].String(), Port: EchoPort, Protocol: api.ProtocolUDP, Mode: api.ModeOneArm,
			Endpoints: []api.Endpoint{{Address: BackendIP[fam].String(), Port: EchoPort}}})
	}
	return out
}

// Env is the running lab: topology, router, the two daemons, the backend.
type Env struct {
	Topo    *Topo
	Router  Router
	Daemons []*l4.Daemon
	dirs    []string
	servers []*l4.Server
}

// Up starts everything on top of topo: the backend's echo servers, the
// router (start), and a telcolb daemon per node loaded with its
// advertisement configuration file (med per node) and the services.
func Up(ctx context.Context, topo *Topo, start func(ctx context.Context, h *lab.Host) (Router, error), meds []*uint32) (_ *Env, err error) {
	e := &Env{Topo: topo}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.Down(context.Background()))
		}
	}()
	for _, addr := range []string{fmt.Sprintf("[::]:%d", EchoPort)} { // dual-stack
		s, err := l4.ServeUDP(topo.BE, addr, "be1")
		if err != nil {
			return nil, err
		}
		e.servers = append(e.servers, s)
	}
	if e.Router, err = start(ctx, topo.Router); err != nil {
		return nil, err
	}
	bins, err := l4.Build(ctx, "")
	if err != nil {
		return nil, err
	}
	for i, h := range topo.Nodes {
		dir, err := os.MkdirTemp("", "telcolb-bgp-")
		if err != nil {
			return nil, err
		}
		e.dirs = append(e.dirs, dir)
		raw, err := yaml.Marshal(NodeConfig(i+1, meds[i]))
		if err != nil {
			return nil, err
		}
		cfgFile := filepath.Join(dir, "advertisement.yaml")
		if err := os.WriteFile(cfgFile, raw, 0o600); err != nil {
			return nil, err
		}
		d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bins, Host: h, Interfaces: []string{"eth0"},
			StateDir: filepath.Join(dir, "state"), PinPath: "/sys/fs/bpf/" + topo.Lab.ID + "-" + h.Name,
			ExtraArgs: []string{"--advertisement-config=" + cfgFile, "--log-format=text"}})
		if err != nil {
			return nil, err
		}
		e.Daemons = append(e.Daemons, d)
		for _, s := range Services() {
			if err := d.Client.CreateService(ctx, s); err != nil {
				return nil, fmt.Errorf("%s: create %s: %w", h.Name, s.Name, err)
			}
		}
	}
	return e, nil
}

// Down removes the daemons' datapaths and state, stops the router and the
// servers.
func (e *Env) Down(ctx context.Context) error {
	var errs []error
	for _, d := range e.Daemons {
		errs = append(errs, d.Destroy(ctx))
	}
	if e.Router != nil {
		errs = append(errs, e.Router.Close())
	}
	for _, s := range e.servers {
		errs = append(errs, s.Close())
	}
	for _, d := range e.dirs {
		errs = append(errs, os.RemoveAll(d))
	}
	return errors.Join(errs...)
}

// Reply is one echo answer seen by a prober: when, and which node forwarded
// it (the source the backend saw: onearm rewrites it to the node's address).
type Reply struct {
	At   time.Time
	Node netip.Addr
}

// Prober sends a request every Interval from the client to a VIP on one
// socket and records the answers.
type Prober struct {
	Interval time.Duration
	mu       sync.Mutex
	replies  []Reply
	sent     int
	start    time.Time
	stop     chan struct{}
	wg       sync.WaitGroup
	conn     net.Conn
}

// StartProber starts probing vip:EchoPort from h every 10 ms.
func StartProber(ctx context.Context, h *lab.Host, vip netip.Addr) (*Prober, error) {
	c, err := l4.HostDialer(h)(ctx, "udp", netip.AddrPortFrom(vip, EchoPort).String())
	if err != nil {
		return nil, err
	}
	p := &Prober{Interval: 10 * time.Millisecond, stop: make(chan struct{}), conn: c, start: time.Now()}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(p.Interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				if _, err := c.Write([]byte("ping\n")); err == nil {
					p.mu.Lock()
					p.sent++
					p.mu.Unlock()
				}
			}
		}
	}()
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			if err != nil {
				select {
				case <-p.stop:
					return
				default:
				}
				// ICMP errors (no route yet) come back as read errors on a
				// connected socket: keep listening.
				time.Sleep(time.Millisecond)
				continue
			}
			now := time.Now()
			f := strings.Fields(string(buf[:n]))
			var node netip.Addr
			if len(f) == 2 {
				if ap, err := netip.ParseAddrPort(f[1]); err == nil {
					node = ap.Addr().Unmap()
				}
			}
			p.mu.Lock()
			p.replies = append(p.replies, Reply{At: now, Node: node})
			p.mu.Unlock()
		}
	}()
	return p, nil
}

// Stop ends probing.
func (p *Prober) Stop() {
	close(p.stop)
	_ = p.conn.SetReadDeadline(time.Now())
	p.wg.Wait()
	p.conn.Close()
}

// Replies returns the answers so far.
func (p *Prober) Replies() []Reply {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Reply(nil), p.replies...)
}

// Sent is how many requests went out.
func (p *Prober) Sent() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent
}

// Blackout is the longest time without an answer between from and until.
func Blackout(replies []Reply, from, until time.Time) time.Duration {
	last := from
	var worst time.Duration
	for _, r := range replies {
		if r.At.Before(from) || r.At.After(until) {
			continue
		}
		if g := r.At.Sub(last); g > worst {
			worst = g
		}
		last = r.At
	}
	if g := until.Sub(last); g > worst {
		worst = g
	}
	return worst
}

// FirstFrom is the first answer at or after t forwarded by node.
func FirstFrom(replies []Reply, node netip.Addr, t time.Time) (time.Time, bool) {
	for _, r := range replies {
		if !r.At.Before(t) && r.Node == node {
			return r.At, true
		}
	}
	return time.Time{}, false
}
