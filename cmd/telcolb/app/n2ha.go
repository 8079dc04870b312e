package app

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	stdsync "sync"
	"time"

	"github.com/telcolb/telcolb/ha/member"
	"github.com/telcolb/telcolb/ha/sync"
	"github.com/telcolb/telcolb/sctplb"
	"github.com/telcolb/telcolb/sctplb/steer"
)

// N2 proxy state in the HA sync. A node's N2 proxies publish their
// replicable state (NG Setup results, established UE contexts; steer's
// replicate.go) as records of kind RecordN2; the peers keep them and park
// them in their proxy of the same service, which acts on them only when
// the gNBs reconnect to it (the VIP moved) asking for UE retention. Only
// the node whose proxy serves the gNBs (the one the VIP routes to) has
// anything to publish: a standby's proxy has no associations.
//
// The wire key is the service name, a zero byte and steer's record key:
// services are matched by name on every node, like conntrack records.

// RecordN2 is the sync record kind of N2 proxy state (dataplane's kinds
// are 1 and 2).
const RecordN2 uint16 = 3

// N2Replica connects the N2 proxies to the HA sync.
type N2Replica struct {
	log  *slog.Logger
	node *sync.Node

	mu stdsync.Mutex
	// held are the peers' records per service (steer key -> value and
	// the peer it came from): what a proxy started later, or restarted,
	// gets, and what a takeover aborts (n2takeover.go).
	held map[string]map[string]heldN2
	// running finds the service's proxy (n2Manager.running); nil until the
	// server wires it.
	running func(name string) (*sctplb.Proxy, bool)
	// takeover is the ABORT of a lost peer's gNB associations
	// (n2takeover.go).
	takeover n2Takeover
	// owner says who announces a VIP (the advertiser's vipOwner); nil
	// until the server wires it: ownerNone.
	owner func(netip.Addr) vipOwner
	// heard says when the sync and the L2 election last heard a peer
	// (n2alive.go); nil until the server wires it: never alive by it.
	heard func(peer string) (syncAt, l2At time.Time)
	// liveness is the liveness path's state of a peer (n2liveness.go);
	// nil: no path (pathNone).
	liveness func(peer string) (member.MemberState, bool)
}

// heldN2 is one peer's record.
type heldN2 struct {
	from  string
	value []byte
}

func newN2Replica(node *sync.Node, log *slog.Logger) *N2Replica {
	return &N2Replica{node: node, log: log, held: map[string]map[string]heldN2{}, takeover: newN2Takeover()}
}

// N2Replica is the HA sync's link for the N2 proxies; nil when h is.
func (h *HA) N2Replica() *N2Replica {
	if h == nil {
		return nil
	}
	return h.n2
}

// Held is how many peers' N2 records the node keeps, every service (0
// for a nil replica).
func (r *N2Replica) Held() int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, h := range r.held {
		n += len(h)
	}
	return n
}

func (r *N2Replica) setRunning(f func(string) (*sctplb.Proxy, bool)) {
	r.mu.Lock()
	r.running = f
	r.mu.Unlock()
}

func n2WireKey(svc string, key []byte) []byte {
	b := append([]byte(svc), 0)
	return append(b, key...)
}

// publisher is service svc's sctplb.Config.Publish: the proxy's changes go
// to the peers (Put never blocks).
func (r *N2Replica) publisher(svc string) func([]steer.Record) {
	return func(recs []steer.Record) {
		for _, x := range recs {
			err := r.node.Put(sync.Record{Kind: RecordN2, Key: n2WireKey(svc, x.Key), Value: x.Value, Deleted: x.Deleted})
			if err != nil {
				r.log.Warn("queue N2 record for peers", "service", svc, "error", err)
			}
		}
	}
}

// apply keeps peers' N2 records and hands them to the running proxies
// (from the sync node's goroutine, in order).
func (r *N2Replica) apply(recs []sync.Applied) {
	bySvc := map[string][]steer.Record{}
	r.mu.Lock()
	for _, a := range recs {
		x := a.Record
		svc, key, ok := bytes.Cut(x.Key, []byte{0})
		if !ok || len(svc) == 0 || len(key) == 0 {
			r.log.Warn("N2 record from a peer without a service name: dropped", "key", x.Key)
			continue
		}
		name := string(svc)
		h := r.held[name]
		if h == nil {
			h = map[string]heldN2{}
			r.held[name] = h
		}
		if x.Deleted {
			delete(h, string(key))
		} else {
			h[string(key)] = heldN2{from: a.From, value: x.Value}
		}
		bySvc[name] = append(bySvc[name], steer.Record{Key: key, Value: x.Value, Deleted: x.Deleted})
	}
	running := r.running
	r.mu.Unlock()
	if running == nil {
		return
	}
	for svc, l := range bySvc {
		if p, ok := running(svc); ok {
			r.importInto(svc, p, l)
		}
	}
}

func (r *N2Replica) importInto(svc string, p *sctplb.Proxy, recs []steer.Record) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Import(ctx, recs); err != nil {
		r.log.Warn("park peer's N2 records in the proxy", "service", svc, "records", len(recs), "error", err)
	}
}

// attach gives a proxy that just started what the peers sent so far.
func (r *N2Replica) attach(svc string, p *sctplb.Proxy) {
	r.mu.Lock()
	var recs []steer.Record
	// gNB records before UE records, as a proxy publishes them.
	for _, first := range []bool{true, false} {
		for k, v := range r.held[svc] {
			if (k[0] == 'g') == first {
				recs = append(recs, steer.Record{Key: []byte(k), Value: v.value})
			}
		}
	}
	r.mu.Unlock()
	r.importInto(svc, p, recs)
}
