package app

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/telcolb/telcolb/dataplane"
	"github.com/telcolb/telcolb/sctplb/n4"
)

// Options are the daemon's settings. Every flag has a camelCase key of the
// same name in the --config YAML file; flags given on the command line win.
type Options struct {
	APIAddress string `json:"apiAddress"`
	// APITLSCertFile and APITLSKeyFile serve the API over TLS (apitls.go);
	// re-read when they change.
	APITLSCertFile string `json:"apiTLSCertFile"`
	APITLSKeyFile  string `json:"apiTLSKeyFile"`
	// APIAllowInsecureHTTP allows plain HTTP on a non-loopback APIAddress
	// (the bearer token then crosses the network in clear text).
	APIAllowInsecureHTTP bool `json:"apiAllowInsecureHTTP"`
	// ProfilingAddress serves Go's runtime profiles (profiling.go) on a
	// loopback host:port; empty serves none.
	ProfilingAddress string   `json:"profilingAddress"`
	Interfaces       []string `json:"interfaces"`
	StateDir         string   `json:"stateDir"`
	BPFPinPath       string   `json:"bpfPinPath"`
	TokenFile        string   `json:"tokenFile"`
	MaxConns         uint32   `json:"maxConns"`
	// MaxConnsIPv6 sizes the IPv6 conntrack map (IPv6 and NAT64 flows)
	// apart from the IPv4 one; 0: MaxConns.
	MaxConnsIPv6 uint32 `json:"maxConnsIPv6"`
	LogLevel     string `json:"logLevel"`
	LogFormat    string `json:"logFormat"`
	// ForceClsact attaches through clsact even where tcx exists.
	ForceClsact bool `json:"forceClsact"`
	// Attach says how the datapath runs on each interface (TC always, XDP
	// in front of it): a default mode and/or ifname=mode entries, comma
	// separated; see dataplane.ParseHooks. Default "tc".
	Attach string `json:"attach"`
	// ICMPSendRedirects leaves the node's IPv4 ICMP redirects on. By
	// default the daemon turns them off (redirects.go): a redirect from a
	// node's kernel sends a backend's packets past every LB node.
	ICMPSendRedirects bool `json:"icmpSendRedirects"`
	// SocketLB balances the connections and datagrams the node itself
	// originates toward a VIP (cgroup socket programs, dataplane/socklb.go);
	// on by default.
	SocketLB bool `json:"socketLB"`
	// SocketLBCgroup is the cgroup v2 directory the socket programs are
	// attached to; empty: the root of the cgroup v2 hierarchy (every
	// process of the node).
	SocketLBCgroup string `json:"socketLBCgroup"`
	// N2Transport chooses the N2 proxies' SCTP stack: auto (kernel SCTP
	// when the kernel has it, else userspace), kernel or userspace.
	N2Transport string `json:"n2Transport"`
	// PFCPUPFLoss is what PFCP proxies do with the sessions of a lost UPF:
	// release (default) or move (to other UPFs; right when the SMF
	// allocates the F-TEIDs).
	PFCPUPFLoss string `json:"pfcpUPFLoss"`
	// PFCPHeartbeatInterval paces the PFCP proxies' heartbeats (a
	// duration, default 10s); T1 is half of it (at most 3s) and a UPF
	// unreachable for 6 intervals is lost.
	PFCPHeartbeatInterval string `json:"pfcpHeartbeatInterval"`
	// LocalVIPInterface is the dummy interface on which the VIPs of the
	// services the daemon terminates (N2, PFCP) become local addresses
	// while served (default telcolb0, created if absent); empty disables it.
	LocalVIPInterface string `json:"localVIPInterface"`
	// EndpointTrafficMetrics adds per-endpoint packet and byte counters to
	// /metrics: two more series per endpoint, off by default so a node
	// with a thousand services stays under a few thousand series
	// (docs/metrics.md).
	EndpointTrafficMetrics bool `json:"endpointTrafficMetrics"`
	// AdvertisementConfig is a file holding an api.AdvertisementConfig
	// (YAML or JSON): how this node announces the VIPs it serves (BGP
	// peers, BFD, advertisements) without the controller.
	AdvertisementConfig string `json:"advertisementConfig"`
	// HA configures the conntrack state sync with the other members of an
	// HA group (ha.go); off while HANodeName is empty.
	HA HAOptions `json:"ha"`
	// Cleanup removes the pinned datapath and exits (flag --cleanup or the
	// "cleanup" subcommand); not settable from the file on purpose.
	Cleanup bool `json:"-"`
	// NodeSetup applies the node settings the datapath relies on (IPv4
	// ICMP redirects off on "all" and the interfaces) and exits, failing
	// when they cannot be applied (flag --node-setup or the "node-setup"
	// subcommand): for a privileged init container, where the daemon
	// itself runs without write access to /proc/sys.
	NodeSetup bool `json:"-"`
}

// DefaultOptions are used for everything neither the file nor a flag sets.
func DefaultOptions() Options {
	return Options{
		APIAddress:            "127.0.0.1:8091",
		StateDir:              DefaultStateDir,
		BPFPinPath:            "/sys/fs/bpf/telcolb",
		MaxConns:              262144,
		LogLevel:              "info",
		LogFormat:             "json",
		Attach:                string(dataplane.HookTC),
		N2Transport:           "auto",
		PFCPUPFLoss:           "release",
		PFCPHeartbeatInterval: "10s",
		LocalVIPInterface:     "telcolb0",
		SocketLB:              true,
	}
}

// ErrHelp is returned by ParseOptions when --help was asked for.
var ErrHelp = pflag.ErrHelp

// ParseOptions reads the command line (without the program name), merging
// in the --config file.
func ParseOptions(args []string, usage io.Writer) (Options, error) {
	o := DefaultOptions()
	var f Options
	var configPath string
	fs := pflag.NewFlagSet("telcolb", pflag.ContinueOnError)
	fs.SetOutput(usage)
	fs.StringVar(&f.APIAddress, "api-address", o.APIAddress, "host:port of the REST API; every request needs the bearer token, loopback included")
	fs.StringVar(&f.APITLSCertFile, "api-tls-cert-file", "", "PEM certificate (chain) of the REST API; with --api-tls-key-file the API is served over TLS, and the files are re-read when they change")
	fs.StringVar(&f.APITLSKeyFile, "api-tls-key-file", "", "PEM private key of --api-tls-cert-file")
	fs.BoolVar(&f.APIAllowInsecureHTTP, "api-allow-insecure-http", false, "serve plain HTTP on a non-loopback --api-address (the bearer token crosses the network in clear text)")
	fs.StringSliceVar(&f.Interfaces, "interfaces", nil, "interfaces to attach the datapath to, comma separated")
	fs.StringVar(&f.ProfilingAddress, "profiling-address", "", "loopback host:port serving Go's runtime profiles (/debug/pprof/: CPU, heap, allocations, goroutines) without authentication; empty serves none")
	fs.StringVar(&f.StateDir, "state-dir", o.StateDir, "directory of the persisted rules (services.json)")
	fs.StringVar(&f.BPFPinPath, "bpf-pin-path", o.BPFPinPath, "bpffs directory where maps and links are pinned")
	fs.StringVar(&f.TokenFile, "token-file", "", "file holding the API bearer token (mode 0600 or stricter); default <state-dir>/"+DefaultTokenFileName+", created with a random token when missing")
	fs.Uint32Var(&f.MaxConns, "max-conns", o.MaxConns, "conntrack capacity per address family, in entries (a connection takes two): IPv4 and IPv6 each have a map of this size (IPv6: unless --max-conns-ipv6 is set), both preallocated")
	fs.Uint32Var(&f.MaxConnsIPv6, "max-conns-ipv6", o.MaxConnsIPv6, "IPv6 conntrack capacity in entries (IPv6 flows and the IPv6 side of NAT64 flows); 0: the same as --max-conns. A node with little IPv6 saves that map's preallocated memory")
	fs.StringVar(&f.LogLevel, "log-level", o.LogLevel, "debug, info, warn or error")
	fs.StringVar(&f.LogFormat, "log-format", o.LogFormat, "json or text")
	fs.BoolVar(&f.ForceClsact, "force-clsact", false, "attach through a clsact qdisc even where tcx is available")
	fs.StringVar(&f.Attach, "attach", o.Attach, "datapath hook per interface: tc, xdp (native XDP in front of TC for established flows; fails where the driver lacks it), xdp-generic, or auto (xdp where the driver has it, else tc; veth and tun/tap stay on tc); a default and/or ifname=mode entries, e.g. --attach=auto or --attach=eth0=xdp,eth1=tc")
	fs.BoolVar(&f.ICMPSendRedirects, "icmp-send-redirects", false, "leave IPv4 ICMP redirects on (by default the daemon sets net.ipv4.conf.{all,<interface>}.send_redirects=0: a redirect would send backends' packets past the LB nodes)")
	fs.BoolVar(&f.SocketLB, "socket-lb", o.SocketLB, "balance the traffic this node originates toward a VIP at the socket (cgroup connect/sendmsg programs); false detaches them")
	fs.StringVar(&f.SocketLBCgroup, "socket-lb-cgroup", "", "cgroup v2 directory the socket programs attach to; default the cgroup v2 root")
	fs.StringVar(&f.N2Transport, "n2-transport", o.N2Transport, "SCTP stack of N2 proxies: auto, kernel or userspace")
	fs.StringVar(&f.PFCPUPFLoss, "pfcp-upf-loss", o.PFCPUPFLoss, "PFCP proxies: release or move the sessions of a lost UPF")
	fs.StringVar(&f.PFCPHeartbeatInterval, "pfcp-heartbeat-interval", o.PFCPHeartbeatInterval, "PFCP proxies: heartbeat interval (a UPF silent for 6 is lost)")
	fs.StringVar(&f.LocalVIPInterface, "local-vip-interface", o.LocalVIPInterface, "dummy interface holding the VIPs of N2 and PFCP services as local addresses while served (created if absent); empty disables")
	fs.BoolVar(&f.EndpointTrafficMetrics, "endpoint-traffic-metrics", false, "also export per-endpoint packet and byte counters (two more series per endpoint)")
	fs.StringVar(&f.AdvertisementConfig, "advertisement-config", "", "YAML file with this node's advertisement configuration (nodeName, bgp, advertisements); replaces the one persisted from the API at start")
	addHAFlags(fs, &f.HA)
	fs.StringVar(&configPath, "config", "", "YAML file with the same settings in camelCase (apiAddress, interfaces, ...)")
	fs.BoolVar(&f.Cleanup, "cleanup", false, "remove the pinned datapath (rules, connections, attachments) and exit")
	fs.BoolVar(&f.NodeSetup, "node-setup", false, "apply the node settings the datapath relies on (net.ipv4.conf.{all,<interface>}.send_redirects=0) and exit, failing when they cannot be applied (a privileged init container)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch rest := fs.Args(); {
	case len(rest) == 1 && rest[0] == "cleanup":
		f.Cleanup = true
	case len(rest) == 1 && rest[0] == "node-setup":
		f.NodeSetup = true
	case len(rest) > 0:
		return o, fmt.Errorf("unexpected arguments %q (the subcommands are cleanup and node-setup)", rest)
	}
	if configPath != "" {
		raw, err := os.ReadFile(configPath)
		if err != nil {
			return o, fmt.Errorf("read config: %w", err)
		}
		if err := yaml.UnmarshalStrict(raw, &o); err != nil {
			return o, fmt.Errorf("config %s: %w", configPath, err)
		}
	}
	fs.Visit(func(fl *pflag.Flag) {
		switch fl.Name {
		case "api-address":
			o.APIAddress = f.APIAddress
		case "api-tls-cert-file":
			o.APITLSCertFile = f.APITLSCertFile
		case "api-tls-key-file":
			o.APITLSKeyFile = f.APITLSKeyFile
		case "api-allow-insecure-http":
			o.APIAllowInsecureHTTP = f.APIAllowInsecureHTTP
		case "profiling-address":
			o.ProfilingAddress = f.ProfilingAddress
		case "interfaces":
			o.Interfaces = f.Interfaces
		case "state-dir":
			o.StateDir = f.StateDir
		case "bpf-pin-path":
			o.BPFPinPath = f.BPFPinPath
		case "token-file":
			o.TokenFile = f.TokenFile
		case "max-conns":
			o.MaxConns = f.MaxConns
		case "max-conns-ipv6":
			o.MaxConnsIPv6 = f.MaxConnsIPv6
		case "log-level":
			o.LogLevel = f.LogLevel
		case "log-format":
			o.LogFormat = f.LogFormat
		case "force-clsact":
			o.ForceClsact = f.ForceClsact
		case "attach":
			o.Attach = f.Attach
		case "icmp-send-redirects":
			o.ICMPSendRedirects = f.ICMPSendRedirects
		case "socket-lb":
			o.SocketLB = f.SocketLB
		case "socket-lb-cgroup":
			o.SocketLBCgroup = f.SocketLBCgroup
		case "n2-transport":
			o.N2Transport = f.N2Transport
		case "pfcp-upf-loss":
			o.PFCPUPFLoss = f.PFCPUPFLoss
		case "pfcp-heartbeat-interval":
			o.PFCPHeartbeatInterval = f.PFCPHeartbeatInterval
		case "local-vip-interface":
			o.LocalVIPInterface = f.LocalVIPInterface
		case "endpoint-traffic-metrics":
			o.EndpointTrafficMetrics = f.EndpointTrafficMetrics
		case "advertisement-config":
			o.AdvertisementConfig = f.AdvertisementConfig
		default:
			o.HA.setFlag(fl.Name, f.HA)
		}
	})
	o.Cleanup = f.Cleanup
	o.NodeSetup = f.NodeSetup
	if o.NodeSetup && o.Cleanup {
		return o, errors.New("node-setup and cleanup: choose one")
	}
	if o.NodeSetup && o.ICMPSendRedirects {
		return o, errors.New("node-setup with --icmp-send-redirects (icmpSendRedirects): the only setting node-setup applies is turning ICMP redirects off")
	}
	if err := o.check(); err != nil {
		return o, err
	}
	return o, nil
}

func (o *Options) check() error {
	if _, _, err := net.SplitHostPort(o.APIAddress); err != nil {
		return fmt.Errorf("api-address %q: %w", o.APIAddress, err)
	}
	if err := o.checkAPITLS(); err != nil {
		return err
	}
	if err := checkProfilingAddress(o.ProfilingAddress); err != nil {
		return err
	}
	if _, err := ParseLogLevel(o.LogLevel); err != nil {
		return err
	}
	if o.LogFormat != "json" && o.LogFormat != "text" {
		return fmt.Errorf("log-format %q: use json or text", o.LogFormat)
	}
	switch o.N2Transport {
	case "auto", "kernel", "userspace":
	default:
		return fmt.Errorf("n2-transport %q: use auto, kernel or userspace", o.N2Transport)
	}
	if _, err := o.PFCP(); err != nil {
		return err
	}
	if o.MaxConns == 0 {
		return errors.New("max-conns must be positive")
	}
	if o.StateDir == "" || o.BPFPinPath == "" {
		return errors.New("state-dir and bpf-pin-path must not be empty")
	}
	for _, ifname := range o.Interfaces {
		if ifname == "" {
			return errors.New("interfaces: empty interface name")
		}
	}
	if _, err := o.Hook(""); err != nil {
		return err
	}
	if _, err := o.HA.Config(); err != nil {
		return err
	}
	return nil
}

// ParseLogLevel maps a --log-level value to a slog level.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log-level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

// NewLogger builds the daemon's logger from the options.
func NewLogger(o Options, w io.Writer) *slog.Logger {
	lvl, _ := ParseLogLevel(o.LogLevel) // checked by ParseOptions
	hopts := &slog.HandlerOptions{Level: lvl}
	if o.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, hopts))
	}
	return slog.New(slog.NewJSONHandler(w, hopts))
}

// PFCP returns the PFCP proxies' configuration the options describe.
func (o *Options) PFCP() (PFCPConfig, error) {
	var c PFCPConfig
	switch o.PFCPUPFLoss {
	case "", "release":
		c.OnLoss = n4.Release
	case "move":
		c.OnLoss = n4.Move
	default:
		return c, fmt.Errorf("pfcp-upf-loss %q: use release or move", o.PFCPUPFLoss)
	}
	if o.PFCPHeartbeatInterval != "" {
		d, err := time.ParseDuration(o.PFCPHeartbeatInterval)
		if err != nil || d < 100*time.Millisecond {
			return c, fmt.Errorf("pfcp-heartbeat-interval %q: a duration of at least 100ms", o.PFCPHeartbeatInterval)
		}
		c.HeartbeatInterval, c.T1, c.LossTimeout = d, min(d/2, 3*time.Second), 6*d
	}
	return c, nil
}

// Hook is the datapath hook of interface ifname (--attach). An interface
// --attach names that --interfaces does not is an error: it would be
// silently ignored.
func (o *Options) Hook(ifname string) (dataplane.Hook, error) {
	hooks, err := dataplane.ParseHooks(o.Attach)
	if err != nil {
		return "", fmt.Errorf("attach: %w", err)
	}
	for name := range hooks {
		if name != "" && !slices.Contains(o.Interfaces, name) {
			return "", fmt.Errorf("attach: interface %s is not in interfaces %v", name, o.Interfaces)
		}
	}
	if h, ok := hooks[ifname]; ok {
		return h, nil
	}
	return hooks[""], nil
}
