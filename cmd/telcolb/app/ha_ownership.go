package app

import (
	"errors"
	"fmt"
	"time"

	"github.com/telcolb/telcolb/dataplane"
	"github.com/telcolb/telcolb/ha/sync"
)

// Which node owns each conntrack entry (HA sync, ha.go): the change
// producer, the application of peers' records, and the rule between two
// copies of one flow. The refresh is ha_refresh.go.

// toSync is r for the sync, k its mapKey: the sync keys its table by the
// same string (sync.Record.ID), one string a record for both.
func toSync(r dataplane.Record, k string) sync.Record {
	return sync.Record{Kind: r.Kind, Key: r.Key, Value: r.Value, Deleted: r.Deleted, ID: k}
}

// mapKey is a record's key in the maps of owned entries, peers' copies
// and deletions: the sync table's own (sync.KeyOf).
func mapKey(kind uint16, key []byte) string {
	return sync.KeyOf(kind, key)
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
	// deleting: the peer deleted this copy; the mark stays while the
	// deletion is applied (never claimed, never sent meanwhile).
	deleting bool
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
	// yielded counts this batch's entries given up, by record kind: the
	// log line below says when ownership moves away from here, and what.
	yielded := map[uint16]int{}
	var example string
	now := time.Now()
	h.mu.Lock()
	for _, a := range recs {
		r := a.Record
		if r.Kind == RecordN2 {
			// N2 proxy state is parked in the N2 proxies, not the datapath.
			n2 = append(n2, a)
			continue
		}
		// Aged by the time its sender held the value (a bulk resync's
		// values were put up to minutes before): its flow's last packet
		// is that much older than the value says.
		dr := dataplane.AgeRecord(dataplane.Record{Kind: r.Kind, Key: r.Key, Value: r.Value, Deleted: r.Deleted}, r.Held)
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
			yielded[r.Kind]++
			if example == "" {
				example = fmt.Sprintf("%s from %s: its last packet %v after ours", dataplane.DescribeKey(dr), a.From, seen.Sub(ours).Round(time.Millisecond))
			}
		}
		if r.Deleted {
			// The mark stays, as a deletion in flight, until the import
			// below has deleted the entry: a refresh dumping meanwhile
			// would find the entry without its mark, take it for an
			// entry of this node's and send it back to the peer that
			// just deleted it.
			h.imported[k] = haCopy{from: a.From, importing: true, deleting: true}
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
	if len(yielded) > 0 {
		h.log.Info("ha: entries yielded to a peer's copy whose flow saw a packet more recently", "conntrack", yielded[dataplane.RecordConntrack], "associations", yielded[dataplane.RecordAssoc], "example", example)
	}
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
		c, ok := h.imported[k]
		if dr.Deleted {
			if ok && c.deleting {
				delete(h.imported, k)
			}
			h.gone[k] = after
		} else if ok {
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
	gather := h.cfg.Gather
	if gather == 0 {
		gather = defaultHAGather
	}
	for {
		recs, err := h.rd.Read()
		if errors.Is(err, dataplane.ErrChangesClosed) {
			return
		}
		if err != nil {
			h.log.Warn("read conntrack changes", "error", err)
		}
		changed := map[uint16]int{}
		held, checked := h.rewritten(recs)
		batch := make([]sync.Record, 0, len(recs))
		h.mu.Lock()
		// One clock read for the batch (a system call on some virtual
		// machines' clocks, per record before): every change in it was
		// made before the read began, so none happened after this time.
		now := time.Now()
		for _, r := range recs {
			k := mapKey(r.Kind, r.Key)
			c, copied := h.imported[k]
			if r.Deleted {
				if copied {
					// A peer's copy aged out here: not ours to delete. Its
					// mark goes with it, unless an import wrote the key
					// again after the deletion this record tells of (or
					// is writing it): the entry held then is the newer
					// copy, and without its mark the next refresh would
					// take it for an entry of this node's, send it to its
					// owner as newer than the owner's (its age was
					// converted twice, each time gaining the transfer
					// delay), and the owner would yield a flow it carries.
					if !c.importing && !held[k] && !c.imported.After(checked) {
						delete(h.imported, k)
						h.gone[k] = now
					}
					continue
				}
				delete(h.owned, k)
				h.gone[k] = now
				// An expiry is the peers' own to make (Record.Expired):
				// it leaves the sync's table, and goes to no peer.
				batch = append(batch, sync.Record{Kind: r.Kind, Key: r.Key, Deleted: true, Local: r.Expired, ID: k})
			} else {
				if copied && !c.deleting {
					h.moves.takenChanged++
					changed[r.Kind]++
				}
				delete(h.imported, k) // changed here: ours now
				h.owned[k] = lastSeen(r, now)
				batch = append(batch, toSync(r, k))
			}
		}
		// The read's records in one hand-over (one wake-up of the sync,
		// as few messages as it takes), under h.mu as each Put was: a
		// refresh's records of the same keys queue before or after them,
		// never in between.
		if err := h.node.PutAll(batch); err != nil {
			h.log.Warn("queue conntrack records for peers", "error", err)
		}
		h.mu.Unlock()
		if len(changed) > 0 {
			h.log.Info("ha: peers' entries taken over: their state changed here", "conntrack", changed[dataplane.RecordConntrack], "associations", changed[dataplane.RecordAssoc])
		}
		if gather > 0 {
			// The changes of the wait come in the next read's batch.
			select {
			case <-h.ctx.Done():
			case <-time.After(gather):
			}
		}
	}
}

// rewritten looks up, for the deletions among recs of keys held as
// peers' copies, whether the datapath holds the key again (an import
// wrote it after the deletion): produce keeps their marks. checked is
// when the lookups began: a copy imported after that was written after
// the deletion too. Outside h.mu: the lookups wait for the datapath's
// lock, which an ageing round holds for a while.
func (h *HA) rewritten(recs []dataplane.Record) (held map[string]bool, checked time.Time) {
	var look []dataplane.Record
	var kb []byte
	h.mu.Lock()
	for _, r := range recs {
		if !r.Deleted {
			continue
		}
		// The key in a reused buffer: a lookup by string(kb) makes no
		// string, for each of the thousands of expiries of an ageing
		// round (few of them copies).
		kb = sync.AppendKeyOf(kb[:0], r.Kind, r.Key)
		if c, copied := h.imported[string(kb)]; copied && !c.importing {
			look = append(look, r)
		}
	}
	h.mu.Unlock()
	checked = time.Now()
	if len(look) == 0 {
		return nil, checked // most reads: no copy was deleted
	}
	held = make(map[string]bool, len(look))
	for _, r := range look {
		ok, err := h.dp.HoldsRecord(r)
		if err != nil {
			// Unknown: keep the mark. A copy that is really gone loses
			// it at the next refresh (its key missing from the dump).
			h.log.Warn("ha: look up a deleted copy's key", "kind", r.Kind, "error", err)
			ok = true
		}
		held[mapKey(r.Kind, r.Key)] = ok
	}
	return held, checked
}
