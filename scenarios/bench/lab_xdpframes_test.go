package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/telcolb/telcolb/scenarios/bench/figure"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// sender is one load generator, bound to a destination and a flow count.
type sender interface {
	Send(packets int) (FloodResult, error)
	Close() error
}

// load is a sender and the host whose namespace it sends from.
type load struct {
	host *lab.Host
	sender
}

// feeder makes the load for cfg.
type feeder func(r *rig, cfg FloodConfig) (load, error)

// socketFeed: Flood's raw-socket datagrams from the client, which reach
// the lb's veth as skbs (what a local sender or a container gives a veth).
func socketFeed(r *rig, cfg FloodConfig) (load, error) {
	return load{r.lab.Client, socketSender{cfg}}, nil
}

type socketSender struct{ cfg FloodConfig }

func (s socketSender) Send(packets int) (FloodResult, error) {
	c := s.cfg
	c.Packets = packets
	return Flood(c)
}

func (socketSender) Close() error { return nil }

// xdpFramesFeed: XDPGen's frames from the client, redirected into its
// veth, which reach the lb's veth as xdp_frames (what a NIC driver gives
// XDP: a buffer, no skb).
func xdpFramesFeed(r *rig, cfg FloodConfig) (load, error) {
	return r.xdpGen(r.lab.Client, r.lab.ClientIface(0), r.lab.LBClientIface(0).MAC, cfg)
}

// skipLBFeed: the frames the lb would send on, made by XDPGen in the lb's
// namespace and redirected straight into its backend-side veth: the path
// without the lb's work (the generator, a veth transmit, the switch, the
// backend's drop), the floor the lb-side figures of
// cpuPerPacketXDPFrames are measured from.
func skipLBFeed(r *rig, cfg FloodConfig) (load, error) {
	return r.xdpGen(r.lab.LB, r.lab.LBBackendIface(0), r.lab.BackendIface(0, 0).MAC, cfg)
}

func (r *rig) xdpGen(h *lab.Host, out *lab.Iface, dstMAC net.HardwareAddr, cfg FloodConfig) (load, error) {
	var g *XDPGen
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName(out.Name)
		if err != nil {
			return fmt.Errorf("%s interface: %w", h.Name, err)
		}
		g, err = NewXDPGen(XDPGenConfig{FloodConfig: cfg, SrcMAC: out.MAC, DstMAC: dstMAC, Ifindex: ifi.Index})
		return err
	})
	return load{h, g}, err
}

// cpuPerPacketXDPFrames is the XDP-mode figure with the lb fed as a NIC
// would feed it. The socket-fed XDP phase of cpuPerPacket measures mostly
// veth's conversions: a socket's skb must become an xdp_buff for native XDP
// (a copy when headroom is short or the skb is cloned or nonlinear), and
// plain forwarding in that phase pays for the senders' software checksums
// and NAPI. Here the client's XDPGen redirects xdp_frames into its veth, so
// xdp_ingress on the lb runs on the frame as on a NIC's buffer and
// XDP_REDIRECTs it on without an skb; a variant without XDP gets an skb
// built around the frame, as a NIC driver builds one.
//
// XDP replaces the kernel's forwarding instead of adding to it (telcolb's
// path comes out cheaper than plain forwarding), so the cost over plain
// forwarding the other figures use would be negative. What is compared is
// the lb's whole work per packet: a variant's path minus the "skip" path
// (skipLBFeed: the same generator sending the lb's output frame from the
// lb's namespace straight to the backend side, so everything but the lb's
// work), paired within each sub-round. That floor errs against telcolb:
// its output enters the switch as an xdp_frame, like skip's, while
// nftables hands the switch an skb, which is cheaper there, so nftables'
// figure is if anything too low.
//
// Two phases per round, rotating, with GRO on for every lb interface and
// their peers (NAPI on every receiving veth, which veth needs to take
// redirected frames: the lb's from the generator, the switch's from
// xdp_ingress or skip; the same for every variant): "frames detached",
// skip, plain forwarding and nftables DNAT with no telcolb program; "frames
// xdp", the daemon with --attach=xdp, skip, plain (what xdp_ingress costs
// a packet it passes) and telcolb. nftables is measured detached so that
// it does not pay xdp_ingress's miss cost, which would flatter telcolb.
// measureCPU checks the sink received every frame (XDPGen's counter says
// how many were sent), so no variant is cheap because it dropped.
func (r *rig) cpuPerPacketXDPFrames(ctx context.Context, t *testing.T) {
	skip := setup{name: "skip", up: noop, down: noop, targets: []target{{variant: "skip", dst: r.beAddr, feed: skipLBFeed}}}
	plain := setup{name: "plain", up: noop, down: noop, targets: []target{{variant: "plain", dst: r.beAddr}}}
	nftables := setup{name: "nftables", up: r.startNftables, down: r.stopNftables, targets: []target{{variant: "nftables", dst: r.vipNft}}}
	telcolb := setup{name: "telcolb", up: noop, down: noop, targets: []target{{variant: "telcolb_default", dst: r.vip}}}
	napi := func() (func() error, error) {
		var ifs []*lab.Iface
		for _, i := range r.lab.LB.Ifaces() {
			ifs = append(ifs, i)
			if i.Peer != nil {
				ifs = append(ifs, i.Peer)
			}
		}
		return setOffloads(ctx, ifs, "gro", "on")
	}
	detached := figure.Variant{Name: "frames_detached", Measure: func(round int) (map[string]float64, error) {
		restore, err := napi()
		if err != nil {
			return nil, err
		}
		v, err := r.phase(ctx, xdpFramesFeed, "fdet", round, []setup{skip, plain, nftables}, "skip", []string{"plain", "nftables"})
		return v, errors.Join(err, restore())
	}}
	xdp := figure.Variant{Name: "frames_xdp", Measure: func(round int) (map[string]float64, error) {
		restore, err := napi()
		if err != nil {
			return nil, err
		}
		if err := r.startTelcolb(ctx, "--attach=xdp"); err != nil {
			return nil, errors.Join(err, restore())
		}
		v, err := r.phase(ctx, xdpFramesFeed, "fxdp", round, []setup{skip, plain, telcolb}, "skip", []string{"plain", "telcolb_default"})
		return v, errors.Join(err, r.stopTelcolb(ctx), restore())
	}}
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 9, Tolerance: 0.1}, []figure.Variant{detached, xdp},
		func(s *figure.Samples) []figure.Figure {
			var figs []figure.Figure
			for _, f := range flowCounts {
				k := func(series string) string { return fmt.Sprintf("%s_%d", series, f) }
				name := func(prefix, what string) string { return fmt.Sprintf("lab_%s_%s_xdpframes_%d", prefix, what, f) }
				lb := func(what, series string) figure.Figure {
					return s.Combine(name("lb_work_ns_per_pkt", what), "ns", figure.Added, figure.Above(0),
						func(v []float64) float64 { return v[0] }, k(series))
				}
				figs = append(figs,
					s.Measured(name("cpu_ns_per_pkt", "skip_lb"), "ns", figure.Above(0), k("fdet_skip")),
					s.Measured(name("cpu_ns_per_pkt", "plain"), "ns", figure.Above(0), k("fdet_plain")),
					s.Measured(name("cpu_ns_per_pkt", "nftables"), "ns", figure.Above(0), k("fdet_nftables")),
					s.Measured(name("cpu_ns_per_pkt", "telcolb_xdp"), "ns", figure.Above(0), k("fxdp_telcolb_default")),
					lb("plain", "fdet_cost_plain"),
					lb("plain_telcolb_xdp_attached", "fxdp_cost_plain"),
					lb("nftables", "fdet_cost_nftables"),
					lb("telcolb_xdp", "fxdp_cost_telcolb_default"),
					s.Combine(fmt.Sprintf("lab_lb_work_ratio_telcolb_xdp_vs_nftables_xdpframes_%d", f), "ratio", figure.CostRatio, figure.AtMost(0.25),
						func(v []float64) float64 { return v[0] / v[1] }, k("fxdp_cost_telcolb_default"), k("fdet_cost_nftables")))
			}
			return figs
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CPU measured: %v in the sender thread, %v in ksoftirqd/%d", r.threadCPU, r.ksoftCPU, r.cpu)
	figure.Report(t, figs...)
}
