package l4

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// xdpCarried sums the daemon's pinned xdp_stats: the packets xdp_ingress
// carried itself.
func xdpCarried(t *testing.T, e *Env) uint64 {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(e.Daemon.PinPath(), "xdp_stats"), nil)
	if err != nil {
		t.Fatalf("xdp_stats: %v", err)
	}
	defer m.Close()
	var per []struct{ Packets, Bytes, Sessions uint64 }
	if err := m.Lookup(uint32(0), &per); err != nil {
		t.Fatalf("xdp_stats: %v", err)
	}
	var n uint64
	for _, c := range per {
		n += c.Packets
	}
	return n
}

// xdpMetric is the daemon's telcolb_xdp_packets_total.
func xdpMetric(t *testing.T, e *Env) float64 {
	t.Helper()
	text, err := e.Daemon.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, "telcolb_xdp_packets_total "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("telcolb_xdp_packets_total %q: %v", v, err)
			}
			return f
		}
	}
	t.Fatalf("no telcolb_xdp_packets_total in /metrics")
	return 0
}

// TestXDPModeCarriesEstablishedFlowsEndToEnd: with --attach=xdp on the lab's
// veths, UDP and TCP flows through a VIP (default and fullnat, IPv4 and
// IPv6) get every answer from an endpoint, and once a flow is established
// its packets in both directions are carried by xdp_ingress (its counter
// advances by at least the packets sent after the opening ones) while the
// connection's counters still count every packet.
func TestXDPModeCarriesEstablishedFlowsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("lab")
	}
	e := upXDP(t)
	ctx := context.Background()
	const asks = 20
	for _, mc := range []modeCase{modeCases[0], modeCases[2]} {
		for _, v6 := range []bool{false, true} {
			for _, proto := range []string{api.ProtocolUDP, api.ProtocolTCP} {
				name := fmt.Sprintf("xdp-%s-%s-%s", mc.mode, proto, family(v6))
				t.Run(name, func(t *testing.T) {
					vip := mc.vip(v6)
					port := UDPPort
					if proto == api.ProtocolTCP {
						port = EchoPort
					}
					svc := api.Service{Name: name, VIP: vip.String(), Port: uint16(port), Protocol: proto,
						Mode: mc.mode, Endpoints: endpoints(e, port, v6)}
					if err := e.Daemon.Client.ApplyService(ctx, svc); err != nil {
						t.Fatalf("apply: %v", err)
					}
					t.Cleanup(func() { _ = e.Daemon.Client.DeleteService(ctx, name) })
					before := xdpCarried(t, e)
					ask := dialAsker(t, ctx, e, proto, hostPort(vip, port))
					want := mc.source(e, vip, v6).String()
					for i := 0; i < asks; i++ {
						r, err := ask()
						if err != nil {
							t.Fatalf("ask %d: %v", i, err)
						}
						if got := r.Source.Addr().String(); got != want {
							t.Fatalf("ask %d: endpoint saw %s, want %s", i, r.Source, want)
						}
					}
					carried := xdpCarried(t, e) - before
					// Each ask is a request and an answer (TCP: and an
					// ACK or two); the first of each direction, and
					// TCP's handshake, are TC's.
					if carried < 2*(asks-2) {
						t.Fatalf("XDP carried %d packets of %d asks, want at least %d", carried, asks, 2*(asks-2))
					}
					conns, err := e.Daemon.Client.Conntrack(ctx)
					if err != nil {
						t.Fatal(err)
					}
					for _, c := range conns {
						if c.Service == name && (c.OrigPackets < asks || c.ReplyPackets < asks) {
							t.Fatalf("connection counted %d/%d packets for %d asks: XDP packets uncounted", c.OrigPackets, c.ReplyPackets, asks)
						}
					}
					// What an operator sees: the same count in the
					// daemon's metrics, and the interfaces in health.
					if got := xdpMetric(t, e); got < float64(before+carried) {
						t.Fatalf("telcolb_xdp_packets_total %v, want at least the %d the map counted", got, before+carried)
					}
					h, err := e.Daemon.Client.Health(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if len(h.XDPInterfaces) == 0 {
						t.Fatalf("health lists no XDP interface: %+v", h)
					}
					t.Logf("XDP carried %d packets", carried)
				})
			}
		}
	}
}

// dialAsker opens one flow (UDP socket or TCP connection) from the client
// to addr and returns its ask function.
func dialAsker(t *testing.T, ctx context.Context, e *Env, proto, addr string) func() (Reply, error) {
	t.Helper()
	if proto == api.ProtocolTCP {
		s, err := DialTCPSession(ctx, e.Lab.Client, addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		t.Cleanup(func() { _ = s.c.Close() })
		return s.Ask
	}
	c, err := HostDialer(e.Lab.Client)(ctx, "udp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return func() (Reply, error) { return udpExchange(c) }
}

// upXDP is up with the daemon attached in XDP mode everywhere. The lab's
// client and backends send from veths with TX checksum offload off, like
// a wire: XDP has no skb to carry a partial checksum (bpf/lib/xdp_fast.h).
func upXDP(t *testing.T) *Env {
	t.Helper()
	if testing.Short() {
		t.Skip("lab")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: eBPF and network namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e, err := Up(ctx, EnvConfig{Lab: lab.Config{Backends: 2}, DaemonArgs: []string{"--attach=xdp"}})
	if err != nil {
		t.Fatalf("environment: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("telcolb log:\n%s", e.Daemon.Log())
		}
		if err := e.Down(context.Background()); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	for _, h := range e.Lab.Hosts() {
		if h == e.Lab.LB {
			continue
		}
		for _, i := range h.Ifaces() {
			if i.Peer == nil {
				continue
			}
			if _, err := h.Exec(ctx, "ethtool", "-K", i.Name, "tx", "off", "gro", "on"); err != nil {
				t.Fatalf("tx checksum offload off on %s/%s: %v", h.Name, i.Name, err)
			}
		}
	}
	return e
}
