package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	stdsync "sync"
	"time"

	"github.com/telcolb/telcolb/dataplane"
	"github.com/telcolb/telcolb/ha"
	"github.com/telcolb/telcolb/ha/member"
	"github.com/telcolb/telcolb/ha/sync"
)

// HA conntrack sync inside the daemon: the datapath's conntrack changes go
// to the other members of the HA group (ha/sync), their records come into
// this datapath, and the node announces no VIP until every reachable peer
// has sent it its table (no VIP taken before the bulk resync completes).

// ConntrackSource is what the HA sync needs of the datapath
// (*dataplane.Datapath, through DatapathSource).
type ConntrackSource interface {
	ConntrackChanges() (ChangeReader, error)
	DumpConntrack() ([]dataplane.Record, error)
	ImportConntrack([]dataplane.Record) error
	// HoldsRecord says whether the datapath holds an entry under the
	// record's key now.
	HoldsRecord(dataplane.Record) (bool, error)
}

// conntrackScanner is a ConntrackSource that can walk its table and encode
// only the entries the walk keeps (*dataplane.Datapath's ScanConntrack):
// the refresh then skips the idle entries it sent before without encoding
// them, and those idle since before the last round began without looking
// at them (since). Without it the refresh filters a whole dump.
type conntrackScanner interface {
	ScanConntrack(since dataplane.ScanMark, keep func(kind uint16, key []byte, idle time.Duration, known bool) bool) ([]dataplane.Record, dataplane.ScanMark, error)
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
	// gone are the keys deleted here lately (the datapath's own deletion
	// read, or a peer's applied), with when the deletion was taken in: a
	// refresh whose dump began before that may still hold the entry, and
	// must not take it for one of this node's (neither owned nor a copy
	// any more) and send it, brought back to life, to the peers. Kept
	// until a dump begun after the deletion.
	gone map[string]time.Time
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
	// lastScan: the walk of the last refresh that completed by a scan
	// (under refreshMu; 0 before the first).
	lastScan dataplane.ScanMark

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     stdsync.WaitGroup
}

// StartHA dumps the local conntrack table into the sync (before any peer
// connects), then starts the sync node, the change producer and the
// refresh.
func StartHA(ctx context.Context, cfg HAConfig, dp ConntrackSource, log *slog.Logger) (*HA, error) {
	h := &HA{cfg: cfg, log: log.With("component", "ha"), dp: dp, imported: map[string]haCopy{}, owned: map[string]time.Time{}, gone: map[string]time.Time{}, start: time.Now()}
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
		k := mapKey(r.Kind, r.Key)
		nc.Initial = append(nc.Initial, toSync(r, k))
		h.owned[k] = lastSeen(r, now)
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
