package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	stdsync "sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/telcolb/telcolb/dataplane"
	"github.com/telcolb/telcolb/ha"
	"github.com/telcolb/telcolb/ha/member"
	"github.com/telcolb/telcolb/ha/sync"
)

// HA conntrack sync inside the daemon: the datapath's conntrack changes go
// to the other members of the HA group (ha/sync), their records come into
// this datapath, and the node announces no VIP until every reachable peer
// has sent it its table (no VIP taken before the bulk resync completes).

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
	defaultHARefresh      = 3 * time.Second
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
	Node        sync.NodeConfig
	Refresh     time.Duration
	JoinTimeout time.Duration
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

// ConntrackSource is what the HA sync needs of the datapath
// (*dataplane.Datapath, through DatapathSource).
type ConntrackSource interface {
	ConntrackChanges() (ChangeReader, error)
	DumpConntrack() ([]dataplane.Record, error)
	ImportConntrack([]dataplane.Record) error
}

// ChangeReader is *dataplane.ChangeReader: Read waits for changes and
// returns dataplane.ErrChangesClosed once closed.
type ChangeReader interface {
	Read() ([]dataplane.Record, error)
	Close() error
}

// DatapathSource adapts *dataplane.Datapath to ConntrackSource.
type DatapathSource struct{ *dataplane.Datapath }

// ConntrackChanges opens the datapath's change reader.
func (d DatapathSource) ConntrackChanges() (ChangeReader, error) {
	return d.Datapath.ConntrackChanges()
}

// HA runs the conntrack sync of one node.
type HA struct {
	cfg  HAConfig
	log  *slog.Logger
	dp   ConntrackSource
	node *sync.Node
	// live is the liveness path's heartbeats (n2liveness.go); nil: none.
	live  *member.Node
	n2    *N2Replica
	rd    ChangeReader
	start time.Time

	mu stdsync.Mutex
	// imported are the keys (kind + key) whose entry here is a peer's
	// copy. They are not sent back: the ageing of a copy is no deletion
	// of the peer's flow, and a refresh of a copy would overwrite the
	// owner's newer state. The entry becomes ours (claim) when it changes
	// state here, when it carries traffic here (its last packet is newer
	// than the copy's), and when the peer it came from is down: a peer
	// rejoining later then gets it in our bulk resync.
	imported map[string]haCopy
	// owned are the keys this node sends, with when their flow last saw a
	// packet (zero: unknown). Two nodes can own one flow (both claimed it
	// while apart, or a rejoining node's pinned table holds its old copy):
	// a peer's record for an owned key wins only if its flow saw a packet
	// more recently (ties: the smaller node name), so the node carrying the
	// traffic keeps it and the other one takes its copy.
	owned map[string]time.Time
	// moves counts entries changing hands (telcolb_ha_entries_*_total):
	// after a crossover they settle; counts that keep growing while no
	// node fails are ownership moving back and forth.
	moves   haMoves
	ready   bool
	onReady func()
	// draining: a planned drain is on (ha_drain.go); drain is its
	// barrier's state for GET /v1/ha, nil when not draining.
	draining bool
	drain    *drainState

	// refreshMu serialises refreshes (the loop's and a drain's).
	refreshMu stdsync.Mutex

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     stdsync.WaitGroup
}

// StartHA dumps the local conntrack table into the sync (before any peer
// connects), then starts the sync node, the change producer and the
// refresh.
func StartHA(ctx context.Context, cfg HAConfig, dp ConntrackSource, log *slog.Logger) (*HA, error) {
	h := &HA{cfg: cfg, log: log.With("component", "ha"), dp: dp, imported: map[string]haCopy{}, owned: map[string]time.Time{}, start: time.Now()}
	// The reader opens first: a change between the dump and the reader
	// would otherwise be lost.
	rd, err := dp.ConntrackChanges()
	if err != nil {
		return nil, fmt.Errorf("ha: %w", err)
	}
	// The clock is read before the dump: a record's age counts from the
	// dump's start (see refreshLoop).
	now := time.Now()
	recs, err := dp.DumpConntrack()
	if err != nil {
		rd.Close()
		return nil, fmt.Errorf("ha: %w", err)
	}
	nc := cfg.Node
	nc.Logger = h.log
	nc.Initial = make([]sync.Record, 0, len(recs))
	for _, r := range recs {
		nc.Initial = append(nc.Initial, toSync(r))
		h.owned[mapKey(r.Kind, r.Key)] = lastSeen(r, now)
	}
	nc.Apply = h.apply
	nc.OnSynced = func(string) { h.checkReady() }
	nc.OnPeerLost = h.peerLost // n2takeover.go
	ctx, h.cancel = context.WithCancel(ctx)
	h.ctx = ctx
	h.node, err = sync.Start(ctx, nc)
	if err != nil {
		h.cancel()
		rd.Close()
		return nil, fmt.Errorf("ha: %w", err)
	}
	h.rd = rd
	h.n2 = newN2Replica(h.node, h.log.With("records", "n2"))
	h.live, err = startLiveness(ctx, cfg.Liveness, h.log, &h.wg)
	if err != nil {
		h.cancel()
		_ = h.node.Close()
		rd.Close()
		return nil, fmt.Errorf("ha: %w", err)
	}
	if h.live != nil {
		live := h.live
		h.n2.setLiveness(func(peer string) (member.MemberState, bool) { return memberState(live, peer) })
	}
	h.log.Info("ha sync started", "node", nc.Self, "listen", h.node.Addr().String(), "peers", len(nc.Peers), "localRecords", len(recs))
	h.wg.Add(2)
	go h.produce()
	go h.refreshLoop(ctx)
	return h, nil
}

// SetOnReady sets what to call when the node becomes ready (the
// advertiser's kick).
func (h *HA) SetOnReady(f func()) {
	h.mu.Lock()
	h.onReady = f
	h.mu.Unlock()
	h.checkReady()
}

// Close stops the sync. The datapath keeps its entries.
func (h *HA) Close() error {
	h.cancel()
	err := h.node.Close()
	if h.live != nil {
		_ = h.live.Close()
	}
	h.rd.Close()
	h.wg.Wait()
	return err
}

// Addr is where the sync listens.
func (h *HA) Addr() net.Addr { return h.node.Addr() }

// Waiting says why the node must not announce yet ("" when ready): the
// peers connected whose bulk resync to us has not completed, and, until
// the join timeout, the peers not connected yet. Once ready, a node stays
// ready: a peer rejoining later must not withdraw the VIPs we serve.
func (h *HA) Waiting() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ready {
		return ""
	}
	var waiting []string
	for _, p := range h.cfg.Node.Peers {
		if h.node.Synced(p.Name) {
			continue
		}
		if h.node.Up(p.Name) || time.Since(h.start) < h.cfg.JoinTimeout {
			waiting = append(waiting, p.Name)
		}
	}
	if len(waiting) > 0 {
		return "ha resync pending from " + strings.Join(waiting, ", ")
	}
	h.ready = true
	h.log.Info("ha resync complete: node ready")
	return ""
}

func (h *HA) checkReady() {
	if h.Waiting() != "" {
		return
	}
	h.mu.Lock()
	f := h.onReady
	h.mu.Unlock()
	if f != nil {
		f()
	}
}

func toSync(r dataplane.Record) sync.Record {
	return sync.Record{Kind: r.Kind, Key: r.Key, Value: r.Value, Deleted: r.Deleted}
}

func mapKey(kind uint16, key []byte) string {
	return string([]byte{byte(kind >> 8), byte(kind)}) + string(key)
}

// haCopy is an entry imported from a peer: which one, and when its flow
// last saw a packet according to the copy (zero: unknown).
type haCopy struct {
	from string
	seen time.Time
	// importing: the datapath may already hold this copy's new entry,
	// dated when the import wrote it, while seen is still the estimate
	// from before the import (which can wait long for the datapath's
	// lock, and writes a large batch over hundreds of milliseconds). A
	// refresh in that window would take the difference for traffic here.
	importing bool
	// imported is when the import of this copy returned. A refresh
	// judges a copy by a dump that began after that only: a dump begun
	// before read the entry as it was before the copy was written (this
	// node's own last packet, or an older copy), and would take the
	// difference for traffic here, claim the flow, and make the peer
	// yield it and claim it back on its next dump, round after round
	// (TestHACrossoverSettlesOwnership).
	imported time.Time
}

// claimSlack is how much newer than the copy's a flow's last packet must
// be to count as traffic here (and, between two owners, as the newer
// one): the ages in records are exact, their conversion to this node's
// clock is off by the transfer time.
const claimSlack = 50 * time.Millisecond

// lastSeen is when the record's flow last saw a packet on this node's
// clock (zero: unknown).
func lastSeen(r dataplane.Record, now time.Time) time.Time {
	idle, ok := dataplane.RecordIdle(r)
	if !ok {
		return time.Time{}
	}
	return now.Add(-idle)
}

// theirsWins decides between our record of a flow and a peer's: the one
// whose flow saw a packet more recently; the smaller node name on a tie.
func (h *HA) theirsWins(from string, theirs, ours time.Time) bool {
	switch {
	case ours.IsZero():
		return true
	case theirs.IsZero():
		return false
	case theirs.After(ours.Add(claimSlack)):
		return true
	case ours.After(theirs.Add(claimSlack)):
		return false
	}
	return from < h.cfg.Node.Self
}

// apply writes peers' records into the datapath (from the sync node's
// goroutine, in order).
func (h *HA) apply(recs []sync.Applied) {
	out := make([]dataplane.Record, 0, len(recs))
	var n2 []sync.Applied
	now := time.Now()
	h.mu.Lock()
	for _, a := range recs {
		r := a.Record
		if r.Kind == RecordN2 {
			// N2 proxy state is parked in the N2 proxies, not the datapath.
			n2 = append(n2, a)
			continue
		}
		dr := dataplane.Record{Kind: r.Kind, Key: r.Key, Value: r.Value, Deleted: r.Deleted}
		k := mapKey(r.Kind, r.Key)
		seen := lastSeen(dr, now)
		if ours, mine := h.owned[k]; mine {
			// A peer's deletion of a flow we carry (its copy ended, or its
			// resync's sweep of what it no longer has) is not ours to act on;
			// an older copy of a flow we carry does not replace ours (our
			// refresh sends ours to the peer).
			if r.Deleted || !h.theirsWins(a.From, seen, ours) {
				continue
			}
			delete(h.owned, k)
			h.moves.yielded++
		}
		if r.Deleted {
			delete(h.imported, k)
		} else {
			if c, ok := h.imported[k]; ok && c.seen.After(seen) {
				// Until the import below has rewritten the entry, the
				// datapath still holds the previous copy's (later) dating.
				seen = c.seen
			}
			h.imported[k] = haCopy{from: a.From, seen: seen, importing: true}
		}
		out = append(out, dr)
	}
	h.mu.Unlock()
	if len(n2) > 0 && h.n2 != nil {
		h.n2.apply(n2)
	}
	if len(out) == 0 {
		return
	}
	if err := h.dp.ImportConntrack(out); err != nil {
		// The records named are refused, the others applied.
		h.log.Warn("import conntrack records from a peer", "records", len(out), "error", err)
	}
	// The copies' last packet times again, on the clock after the import:
	// the datapath dated them when it wrote them, which may be long after
	// the times above (the import waits for the datapath's lock, held by
	// an ageing round over the whole table). Dated before, a copy would
	// look older than its entry by that wait and be taken for traffic
	// here (claimSlack) at the next refresh, and sent back to its owner.
	after := time.Now()
	h.mu.Lock()
	for _, dr := range out {
		k := mapKey(dr.Kind, dr.Key)
		if c, ok := h.imported[k]; ok && !dr.Deleted {
			c.seen = lastSeen(dr, after)
			c.importing = false
			c.imported = after
			h.imported[k] = c
		}
	}
	h.mu.Unlock()
}

// produce sends this datapath's changes to the peers.
func (h *HA) produce() {
	defer h.wg.Done()
	for {
		recs, err := h.rd.Read()
		if errors.Is(err, dataplane.ErrChangesClosed) {
			return
		}
		if err != nil {
			h.log.Warn("read conntrack changes", "error", err)
		}
		h.mu.Lock()
		for _, r := range recs {
			k := mapKey(r.Kind, r.Key)
			_, copied := h.imported[k]
			if r.Deleted {
				delete(h.imported, k)
				if copied {
					continue // a peer's copy aged out here: not ours to delete
				}
				delete(h.owned, k)
				err = h.node.Delete(r.Kind, r.Key)
			} else {
				if copied {
					h.moves.takenChanged++
				}
				delete(h.imported, k) // changed here: ours now
				h.owned[k] = lastSeen(r, time.Now())
				err = h.node.Put(toSync(r))
			}
			if err != nil {
				h.log.Warn("queue conntrack record for peers", "kind", r.Kind, "error", err)
			}
		}
		h.mu.Unlock()
	}
}

// ReadyGate says why the node must not announce VIPs yet ("" when it
// may). *HA is one.
type ReadyGate interface {
	Waiting() string
}

// KickAdvertiser makes the advertiser look again (the HA gate opened).
func (s *Server) KickAdvertiser() { s.adv.trigger() }

// gate applies the ready gate to a plan: nothing announced while it is
// closed, every served VIP saying why.
func (s *Server) gate(byMode map[string][]ha.VIP, reasons map[netip.Addr]string, served map[netip.Addr]*servedVIP) map[string][]ha.VIP {
	if s.ready == nil {
		return byMode
	}
	why := s.ready.Waiting()
	if why == "" {
		return byMode
	}
	for addr := range served {
		if reasons[addr] == "" {
			reasons[addr] = why
		}
	}
	return map[string][]ha.VIP{}
}
