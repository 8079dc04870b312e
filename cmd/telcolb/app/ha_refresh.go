package app

import (
	"context"
	"time"

	"github.com/telcolb/telcolb/dataplane"
	"github.com/telcolb/telcolb/ha/sync"
)

// The refresh of the entries this node owns (HA sync, ha.go).

// refreshFullEvery: by default one refresh in that many sends every owned
// entry (HAConfig.FullRefreshEvery), the others only the entries whose
// flow saw a packet since they were last sent (refreshSame: the last
// packet time read again from an idle entry moves by clock jitter only).
// A full round catches up what no event told. An entry whose change event
// a full ring buffer dropped is known when it happens (the datapath counts
// the drops), and the next round is then full. The periodic one is the
// safety net, and bounds how stale the ages of idle entries are in the
// table a peer's bulk resync is sent from (they date from their last
// send; a copy whose owner then fails lives on that much longer). Every
// 10th round, as before, was a fifth of the records a loaded node sent (a
// 20,000-entry table every 10 s where 2,000 flows a second came and went):
// 40 rounds are 2 minutes at the default 3 s.
const (
	refreshFullEvery = 40
	refreshSame      = 10 * time.Millisecond
)

// refreshLoop sends the live entries owned here again each interval:
// imported entries age on the importer's clock and a flow that only
// carries traffic sends no event. An idle entry's copy ages exactly as the
// entry does, so only the entries that carried traffic since they were
// last sent go each round: sending the whole table every round made the
// peer import thousands of unchanged records per second, and new flows'
// records queued behind them (sync lag of seconds on a loaded machine,
// young flows lost at a failure). A full round sends everything. The sync
// coalesces a key changed twice before it is sent.
func (h *HA) refreshLoop(ctx context.Context) {
	defer h.wg.Done()
	t := time.NewTicker(h.cfg.Refresh)
	defer t.Stop()
	every := h.cfg.FullRefreshEvery
	if every <= 0 {
		every = refreshFullEvery
	}
	lost := h.eventsLost()
	for round := 1; ; round++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := h.eventsLost()
		full := round%every == 0 || now != lost
		if now != lost {
			h.log.Warn("ha refresh: the datapath dropped conntrack change events (ring buffer full): sending every entry", "eventsLost", now-lost)
		}
		lost = now
		h.refresh(full)
		h.checkReady()
	}
}

// eventsLost is how many change events the datapath dropped so far (0
// when it does not count them).
func (h *HA) eventsLost() uint64 {
	if l, ok := h.dp.(eventsLoster); ok {
		if n, err := l.ConntrackEventsLost(); err == nil {
			return n
		}
	}
	return 0
}

// refresh puts the owned entries whose flow saw a packet since they were
// last sent (all of them when full) and takes over the copies that carry
// traffic here or whose peer is down. A drain runs a full one too, so
// refreshes are serialised (refreshMu).
func (h *HA) refresh(full bool) {
	h.refreshMu.Lock()
	defer h.refreshMu.Unlock()
	// The clock is read before the dump: the records' ages count from
	// its start, and a dump of a few thousand entries under load takes
	// hundreds of milliseconds. Read after, every idle copy's last
	// packet would look that much newer than its import: traffic here
	// (claimSlack), so the standby would take over every flow each
	// round and send it back, and the owner take it back.
	now := time.Now()
	recs, mark, err := h.refreshRecords(now, full)
	if err != nil {
		h.log.Warn("ha refresh: dump conntrack", "error", err)
		return
	}
	// What the records leave with: their ages count from the dump's
	// start, and the dump itself took this long.
	dumped := time.Since(now)
	claimed := 0
	var batch []sync.Record
	var kb []byte
	h.mu.Lock()
	// The keys dumped, to drop the marks of copies the datapath no longer
	// holds: only while there are copies (h.mu is held throughout, so
	// none are added meanwhile).
	var dumpedKeys map[string]bool
	if len(h.imported) > 0 {
		dumpedKeys = make(map[string]bool, len(recs))
	}
	for _, r := range recs {
		// Looked up by the key in a reused buffer (no string made); a
		// string is made for the entries sent only, which the maps keep.
		kb = sync.AppendKeyOf(kb[:0], r.Kind, r.Key)
		if dumpedKeys != nil {
			dumpedKeys[string(kb)] = true
		}
		seen := lastSeen(r, now)
		if c, copied := h.imported[string(kb)]; copied {
			if c.importing {
				// Its import (a peer's deletion too) is being applied:
				// judged once it has been.
				continue
			}
			// A copy becomes ours when its flow carries traffic here, or
			// when the peer it came from is gone: we then serve it, and a
			// rejoining peer's bulk resync must carry it. A draining node
			// takes no flow over for its traffic: what still arrives here
			// is in flight while the routes move to the peer.
			traffic := !h.draining && c.imported.Before(now) && !seen.IsZero() && seen.After(c.seen.Add(claimSlack))
			if traffic {
				h.moves.takenTraffic++
			} else if h.node.Up(c.from) {
				continue
			} else {
				h.moves.takenPeerDown++
			}
			delete(h.imported, string(kb))
			claimed++
		} else if prev, ok := h.owned[string(kb)]; ok && !full && idleSinceSent(prev, seen) {
			continue // idle since last sent: the peer's copy ages as ours
		} else if at, deleted := h.gone[string(kb)]; !ok && deleted && !at.Before(now) {
			continue // deleted while this dump ran: the dump's copy is stale
		}
		k := string(kb)
		h.owned[k] = seen
		batch = append(batch, toSync(dataplane.AgeRecord(r, dumped), k))
	}
	// One hand-over for the round (see produce), under h.mu.
	if err := h.node.PutAll(batch); err != nil {
		h.log.Warn("ha refresh: queue records", "error", err)
	}
	// Marks of copies the datapath no longer holds (their deletion was
	// read while the key could not be looked up): gone with the entry.
	for k, c := range h.imported {
		if dumpedKeys != nil && !dumpedKeys[k] && !c.importing && c.imported.Before(now) {
			delete(h.imported, k)
		}
	}
	// Deletions taken in before this dump began: later dumps begin later.
	for k, at := range h.gone {
		if at.Before(now) {
			delete(h.gone, k)
		}
	}
	h.mu.Unlock()
	if mark != 0 {
		h.lastScan = mark
	}
	if claimed > 0 {
		h.log.Info("ha: peers' entries taken over (traffic here, or their node is down)", "entries", claimed)
	}
}

// idleSinceSent says whether an owned entry last sent with its flow seen
// at prev (zero: unknown) is seen at seen: idle since, its peer's copy
// ageing as ours does.
func idleSinceSent(prev, seen time.Time) bool {
	return !seen.IsZero() && !prev.IsZero() && seen.Sub(prev).Abs() < refreshSame
}

// refreshRecords are the records a refresh begun at now looks at: every
// entry when full; otherwise those not owned, or owned and seen since last
// sent, and the peers' copies. A datapath that scans (conntrackScanner)
// encodes only those; on a loaded node the others are nearly all of its
// table. Which entries are skipped is decided again, on the records, by
// the refresh, with the state of then: an entry skipped here is one that
// refresh would skip too, or one whose state changed during the walk,
// which the next round judges.
//
// Nor is an entry looked at when its flow was last seen before the last
// completed round's walk began and no peer's copy is held: that round
// judged it as it is now (and the one before it, the rest). It was sent
// then (owned and idle since: skipped) or already idle since sent
// (skipped), or left to a later event (changed or deleted during that
// walk: the event is sent). A copy is judged every round, whatever its
// age: the one of a peer that went down since becomes ours, however idle.
// A full round returns no mark: the next scan goes by the older one,
// which leaves out less.
func (h *HA) refreshRecords(now time.Time, full bool) ([]dataplane.Record, dataplane.ScanMark, error) {
	sc, ok := h.dp.(conntrackScanner)
	if !ok || full {
		recs, err := h.dp.DumpConntrack()
		return recs, 0, err
	}
	h.mu.Lock()
	copies := len(h.imported)
	h.mu.Unlock()
	since := h.lastScan
	if copies > 0 {
		since = 0
	}
	var kb []byte
	return sc.ScanConntrack(since, func(kind uint16, key []byte, idle time.Duration, known bool) bool {
		if !known {
			return true
		}
		// The map key in a reused buffer: a lookup by string(kb)
		// allocates nothing, for the thousands of entries of a round.
		kb = sync.AppendKeyOf(kb[:0], kind, key)
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, copied := h.imported[string(kb)]; copied {
			return true
		}
		prev, owned := h.owned[string(kb)]
		return !owned || !idleSinceSent(prev, now.Add(-idle))
	})
}
