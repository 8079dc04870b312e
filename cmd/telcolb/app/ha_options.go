package app

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/telcolb/telcolb/ha/member"
	"github.com/telcolb/telcolb/ha/sync"
)

// HAOptions are the --ha-* flags (key "ha" in the --config file).
type HAOptions struct {
	// NodeName is this node's name in the group; its certificate names it
	// as a DNS SAN. Empty: HA sync off.
	NodeName string `json:"nodeName"`
	// ListenAddress is where peers connect (host:port).
	ListenAddress string `json:"listenAddress"`
	// Peers are the other members, name=host:port each.
	Peers []string `json:"peers"`
	// Members is the whole group, this node included (name=host:port
	// each): the same list for every member, so one ConfigMap configures
	// a DaemonSet. This node's entry is dropped from the peers and, when
	// ListenAddress is empty, gives its listen address. Excludes Peers.
	Members     []string `json:"members"`
	TLSCertFile string   `json:"tlsCertFile"`
	TLSKeyFile  string   `json:"tlsKeyFile"`
	TLSCAFile   string   `json:"tlsCAFile"`
	// RefreshInterval is how often live entries are sent again so a
	// peer's copy does not age out while the flow only carries traffic
	// (which sends no change event). Default 3s.
	RefreshInterval string `json:"refreshInterval"`
	// JoinTimeout is how long a starting node waits for a peer that does
	// not connect before it stops waiting for it (a lone survivor must
	// serve). Default 10s.
	JoinTimeout string `json:"joinTimeout"`
	// DrainTimeout bounds how long a planned drain waits for the peers to
	// acknowledge every change before it withdraws the VIPs anyway
	// (ha_drain.go). Default 5s.
	DrainTimeout string `json:"drainTimeout"`
	// KeepaliveInterval is the longest the sync connection to a peer
	// stays without a message from this node (a keepalive then). Default
	// 1s.
	KeepaliveInterval string `json:"keepaliveInterval"`
	// PeerTimeout is how long a peer may stay silent before it is
	// declared lost (a dead node or a cut link, which TCP tells only after
	// minutes). Peers of a version without keepalives are not timed out.
	// Default 4s; more than the keepalive interval.
	PeerTimeout string `json:"peerTimeout"`
	// N2TakeoverAbort says when a lost peer's gNB associations are
	// aborted (n2takeover.go): owner (default) only for VIPs this node
	// announces by an advertisement that elects an owner (L2); peer-lost
	// also for VIPs no advertisement gives an owner (BGP, where every
	// node announces, or a route moved outside the daemon), on the sync's
	// verdict alone; off never.
	N2TakeoverAbort string `json:"n2TakeoverAbort"`
	// LivenessMembers are the members' heartbeat addresses on a network
	// other than the sync link (name=ip:port, this node included; the
	// names are the sync's): the liveness path the N2 takeover ABORT
	// needs for VIPs without an owner (n2liveness.go). Empty: none.
	LivenessMembers []string `json:"livenessMembers"`
	// LivenessInterval is how often the liveness heartbeats go; a peer
	// missing 3 is lost on that path. Default 100ms.
	LivenessInterval string `json:"livenessInterval"`
}

const (
	defaultHARefresh = 3 * time.Second
	// defaultHAGather: a wake-up of the producer, and then of the sync's
	// loop, per change event was most of what the sync cost a node
	// carrying thousands of new flows a second (each a ring buffer
	// poll, a goroutine hand-off and a sync message). At 2 ms a node
	// taking 2,000 new flows a second still woke about 500 times a
	// second, sending as many messages and drawing as many
	// acknowledgements; at 10 ms its daemon's CPU per flow fell by a
	// fifth (TestBenchHASyncCPUPerFlow, 109 to 84.5 us), and 10 ms is a
	// fifth of the sync lag's 50 ms budget. A lone change is not
	// delayed: the wait comes after a read, not before.
	defaultHAGather       = 10 * time.Millisecond
	defaultHAJoinTimeout  = 10 * time.Second
	defaultHADrainTimeout = 5 * time.Second
)

// The --ha-n2-takeover-abort values.
const (
	TakeoverAbortOwner    = "owner"
	TakeoverAbortPeerLost = "peer-lost"
	TakeoverAbortOff      = "off"
)

func addHAFlags(fs *pflag.FlagSet, h *HAOptions) {
	fs.StringVar(&h.NodeName, "ha-node-name", "", "this node's name in the HA group (its certificate's DNS SAN); empty disables HA sync")
	fs.StringVar(&h.ListenAddress, "ha-listen-address", "", "host:port where HA peers connect")
	fs.StringSliceVar(&h.Peers, "ha-peers", nil, "other members of the HA group, name=host:port, comma separated")
	fs.StringSliceVar(&h.Members, "ha-members", nil, "every member of the HA group, this node included, name=host:port, comma separated (instead of --ha-peers: one list for all members)")
	fs.StringVar(&h.TLSCertFile, "ha-tls-cert-file", "", "this node's certificate for the HA sync (mutual TLS)")
	fs.StringVar(&h.TLSKeyFile, "ha-tls-key-file", "", "key of --ha-tls-cert-file")
	fs.StringVar(&h.TLSCAFile, "ha-tls-ca-file", "", "CA every HA group member's certificate chains to")
	fs.StringVar(&h.RefreshInterval, "ha-refresh-interval", "", "how often live conntrack entries are sent again to peers (default 3s; well below the shortest conntrack timeout)")
	fs.StringVar(&h.JoinTimeout, "ha-join-timeout", "", "how long a starting node waits for an unreachable peer before announcing VIPs (default 10s)")
	fs.StringVar(&h.DrainTimeout, "ha-drain-timeout", "", "how long a planned drain waits for the peers to acknowledge every change before it withdraws the VIPs anyway (default 5s)")
	fs.StringVar(&h.KeepaliveInterval, "ha-keepalive-interval", "", "longest time the sync connection to a peer stays without a message from this node (default 1s)")
	fs.StringVar(&h.PeerTimeout, "ha-peer-timeout", "", "how long a peer may stay silent before it is declared lost (default 4s; more than --ha-keepalive-interval)")
	fs.StringVar(&h.N2TakeoverAbort, "ha-n2-takeover-abort", "", "when to abort a lost peer's gNB associations: owner (default: only for VIPs this node owns by its L2 advertisement, at once), peer-lost (also for VIPs without an owner, BGP or routed from outside, on the sync's verdict alone after 1.5s: aborts a live peer's associations if only the sync link is cut), off; with --ha-liveness-members, VIPs without an owner are aborted in both modes once the liveness heartbeats have lost the peer too, and never while they hear it")
	fs.StringSliceVar(&h.LivenessMembers, "ha-liveness-members", nil, "every member of the HA group, this node included, name=ip:port on a network other than the sync link (the service side): heartbeats that only tell liveness, so the N2 takeover ABORTs a dead peer's gNB associations on BGP VIPs (about 300ms after the sync's verdict) and none of a live peer whose sync link alone is cut")
	fs.StringVar(&h.LivenessInterval, "ha-liveness-interval", "", "how often the --ha-liveness-members heartbeats go; a peer missing 3 is lost on that path (default 100ms)")
}

// setFlag copies one --ha-* flag given on the command line.
func (h *HAOptions) setFlag(name string, f HAOptions) {
	switch name {
	case "ha-node-name":
		h.NodeName = f.NodeName
	case "ha-listen-address":
		h.ListenAddress = f.ListenAddress
	case "ha-peers":
		h.Peers = f.Peers
	case "ha-members":
		h.Members = f.Members
	case "ha-tls-cert-file":
		h.TLSCertFile = f.TLSCertFile
	case "ha-tls-key-file":
		h.TLSKeyFile = f.TLSKeyFile
	case "ha-tls-ca-file":
		h.TLSCAFile = f.TLSCAFile
	case "ha-refresh-interval":
		h.RefreshInterval = f.RefreshInterval
	case "ha-join-timeout":
		h.JoinTimeout = f.JoinTimeout
	case "ha-drain-timeout":
		h.DrainTimeout = f.DrainTimeout
	case "ha-keepalive-interval":
		h.KeepaliveInterval = f.KeepaliveInterval
	case "ha-peer-timeout":
		h.PeerTimeout = f.PeerTimeout
	case "ha-n2-takeover-abort":
		h.N2TakeoverAbort = f.N2TakeoverAbort
	case "ha-liveness-members":
		h.LivenessMembers = f.LivenessMembers
	case "ha-liveness-interval":
		h.LivenessInterval = f.LivenessInterval
	}
}

// HAConfig is the checked form of HAOptions.
type HAConfig struct {
	Node    sync.NodeConfig
	Refresh time.Duration
	// Gather is how long the producer waits after reading the datapath's
	// changes before it reads again (zero: defaultHAGather; negative:
	// no wait), so the changes of a busy datapath come in batches.
	Gather time.Duration
	// FullRefreshEvery: one refresh round in that many sends every owned
	// entry, not only those that carried traffic (zero:
	// refreshFullEvery); a round after the datapath dropped change events
	// is full too (ha_refresh.go).
	FullRefreshEvery int
	JoinTimeout      time.Duration
	// DrainTimeout: zero is defaultHADrainTimeout.
	DrainTimeout time.Duration
	// TakeoverAbort is one of the TakeoverAbort* values.
	TakeoverAbort string
	// Liveness is the liveness path's heartbeats (n2liveness.go); nil:
	// none.
	Liveness *member.NodeConfig
}

// Config checks the options; nil when HA sync is off. Errors name the flag.
func (h HAOptions) Config() (*HAConfig, error) {
	if h.NodeName == "" {
		for flag, v := range map[string]bool{"ha-listen-address": h.ListenAddress != "", "ha-peers": len(h.Peers) > 0, "ha-members": len(h.Members) > 0,
			"ha-tls-cert-file": h.TLSCertFile != "", "ha-tls-key-file": h.TLSKeyFile != "", "ha-tls-ca-file": h.TLSCAFile != "",
			"ha-liveness-members": len(h.LivenessMembers) > 0} {
			if v {
				return nil, fmt.Errorf("%s is set but ha-node-name is empty (HA sync off)", flag)
			}
		}
		return nil, nil
	}
	c := &HAConfig{Refresh: defaultHARefresh, JoinTimeout: defaultHAJoinTimeout, DrainTimeout: defaultHADrainTimeout, TakeoverAbort: TakeoverAbortOwner}
	keepalive, peerTimeout := sync.DefaultKeepaliveInterval, sync.DefaultPeerTimeout
	if err := h.membersToPeers(); err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(h.ListenAddress); err != nil {
		return nil, fmt.Errorf("ha-listen-address %q: %w", h.ListenAddress, err)
	}
	if len(h.Peers) == 0 {
		return nil, errors.New("ha-peers: at least one peer (name=host:port) is needed with ha-node-name")
	}
	seen := map[string]bool{h.NodeName: true}
	var peers []sync.Peer
	for _, p := range h.Peers {
		name, addr, ok := strings.Cut(p, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("ha-peers %q: use name=host:port", p)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("ha-peers %q: %w", p, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("ha-peers %q: name %s given twice or equal to ha-node-name", p, name)
		}
		seen[name] = true
		peers = append(peers, sync.Peer{Name: name, Addr: addr})
	}
	for flag, v := range map[string]string{"ha-tls-cert-file": h.TLSCertFile, "ha-tls-key-file": h.TLSKeyFile, "ha-tls-ca-file": h.TLSCAFile} {
		if v == "" {
			return nil, fmt.Errorf("%s is required with ha-node-name (the sync uses mutual TLS)", flag)
		}
	}
	for flag, p := range map[string]struct {
		raw string
		d   *time.Duration
	}{"ha-refresh-interval": {h.RefreshInterval, &c.Refresh}, "ha-join-timeout": {h.JoinTimeout, &c.JoinTimeout}, "ha-drain-timeout": {h.DrainTimeout, &c.DrainTimeout},
		"ha-keepalive-interval": {h.KeepaliveInterval, &keepalive}, "ha-peer-timeout": {h.PeerTimeout, &peerTimeout}} {
		if p.raw == "" {
			continue
		}
		d, err := time.ParseDuration(p.raw)
		if err != nil || d < 100*time.Millisecond {
			return nil, fmt.Errorf("%s %q: a duration of at least 100ms", flag, p.raw)
		}
		*p.d = d
	}
	if peerTimeout <= keepalive {
		return nil, fmt.Errorf("ha-peer-timeout %v: must exceed ha-keepalive-interval %v (a live peer would be declared lost)", peerTimeout, keepalive)
	}
	switch h.N2TakeoverAbort {
	case "":
	case TakeoverAbortOwner, TakeoverAbortPeerLost, TakeoverAbortOff:
		c.TakeoverAbort = h.N2TakeoverAbort
	default:
		return nil, fmt.Errorf("ha-n2-takeover-abort %q: want %s, %s or %s", h.N2TakeoverAbort, TakeoverAbortOwner, TakeoverAbortPeerLost, TakeoverAbortOff)
	}
	names := map[string]bool{}
	for _, p := range peers {
		names[p.Name] = true
	}
	lc, err := h.livenessConfig(names)
	if err != nil {
		return nil, err
	}
	c.Liveness = lc
	c.Node = sync.NodeConfig{Self: h.NodeName, Listen: h.ListenAddress, Peers: peers,
		CertFile: h.TLSCertFile, KeyFile: h.TLSKeyFile, CAFile: h.TLSCAFile,
		Machine: sync.Config{KeepaliveInterval: keepalive, PeerTimeout: peerTimeout}}
	return c, nil
}

// membersToPeers turns --ha-members into --ha-peers (and the listen
// address when not given). A list that does not name this node is refused:
// a node name from the downward API that matches no member is a
// misconfiguration, not a group of one.
func (h *HAOptions) membersToPeers() error {
	if len(h.Members) == 0 {
		return nil
	}
	if len(h.Peers) > 0 {
		return errors.New("ha-peers and ha-members exclude each other: list the group once")
	}
	self := false
	var peers []string
	for _, m := range h.Members {
		name, addr, ok := strings.Cut(m, "=")
		if !ok || name == "" {
			return fmt.Errorf("ha-members %q: use name=host:port", m)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("ha-members %q: %w", m, err)
		}
		if name != h.NodeName {
			peers = append(peers, m)
			continue
		}
		if self {
			return fmt.Errorf("ha-members: %s listed twice", name)
		}
		self = true
		if h.ListenAddress == "" {
			h.ListenAddress = addr
		}
	}
	if !self {
		return fmt.Errorf("ha-members does not list ha-node-name %q (name=host:port)", h.NodeName)
	}
	h.Peers, h.Members = peers, nil
	return nil
}
