package n4

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/telcolb/telcolb/l7parse/pfcp"
)

// Session Report Requests across a restart of the proxy.
//
// A UPF's Session Report Request is relayed to the SMF under a sequence
// number of the proxy's. If the proxy dies after relaying it and before
// the UPF has the answer, the UPF retransmits it (same sequence number);
// a proxy that knew nothing of the first relay would relay it again under
// a new number, and the SMF, which tells retransmissions apart by sequence
// number (TS 29.244 §6.4), would act on the report twice. So each report
// relayed is part of the persisted State from the step that relays it
// (the shell journals a step's changes before its datagrams leave) until
// its cache entry expires (CacheTTL): the restored proxy sends it again
// under the same sequence number, which the SMF recognises as a
// retransmission, and a report already answered is answered from the
// restored cache. Requests the SMFs relay through the proxy are not kept
// this way (see state.go).

// RelayState is a UPF's Session Report Request relayed to an SMF: the
// request as sent (with the proxy's sequence number Seq) and, once the
// SMF answered, the answer as relayed back to the UPF.
type RelayState struct {
	UPF     string         `json:"upf"`
	UPFSeq  uint32         `json:"upfSeq"`
	Seq     uint32         `json:"seq"`
	SID     uint64         `json:"sid"`
	SMF     netip.AddrPort `json:"smf"`
	Data    []byte         `json:"data"`
	Resp    []byte         `json:"resp,omitempty"`
	Expires time.Time      `json:"expires"`
}

// Key identifies the relay: the UPF and its sequence number.
func (r RelayState) Key() RelayKey { return RelayKey{UPF: r.UPF, UPFSeq: r.UPFSeq} }

// RelayKey names a relayed report in Changes.RelaysGone.
type RelayKey struct {
	UPF    string `json:"upf"`
	UPFSeq uint32 `json:"upfSeq"`
}

// relayOf returns the persistent record of cache entry e, if it is one: a
// request from a UPF that the proxy relayed to an SMF.
func (m *Machine) relayOf(k rxKey, e *rxEntry) (RelayState, bool) {
	if e == nil || e.side != UPFSide || e.relay == nil || e.relay.side != SMFSide {
		return RelayState{}, false
	}
	i, ok := m.byAddr[k.from]
	if !ok {
		return RelayState{}, false
	}
	t := e.relay
	r := RelayState{UPF: m.upfs[i].cfg.Name, UPFSeq: k.seq, Seq: t.seq, SMF: t.to, Data: t.data, Resp: e.resp, Expires: e.expires}
	if r.SID = t.sid; t.sess != nil {
		r.SID = t.sess.sid
	}
	return r, true
}

// touchRx records that cache entry k changed or went, if it is (or was) a
// persisted relay.
func (m *Machine) touchRx(k rxKey, e *rxEntry) {
	if e == nil || e.relay == nil || e.side != UPFSide {
		return
	}
	if m.rxDirty == nil {
		m.rxDirty = map[rxKey]struct{}{}
	}
	m.rxDirty[k] = struct{}{}
}

// exportRelays lists the persisted relays, in key order.
func (m *Machine) exportRelays() []RelayState {
	var out []RelayState
	for k, e := range m.rx {
		if r, ok := m.relayOf(k, e); ok {
			out = append(out, r)
		}
	}
	sortRelays(out)
	return out
}

// takeRelayChanges adds the relays that changed, or went, to c.
func (m *Machine) takeRelayChanges(c *Changes) {
	for k := range m.rxDirty {
		if r, ok := m.relayOf(k, m.rx[k]); ok {
			c.Relays = append(c.Relays, r)
		} else if i, ok := m.byAddr[k.from]; ok {
			c.RelaysGone = append(c.RelaysGone, RelayKey{UPF: m.upfs[i].cfg.Name, UPFSeq: k.seq})
		}
	}
	c.RelaysGone = append(c.RelaysGone, m.relaysGone...)
	m.relaysGone = nil
	sortRelays(c.Relays)
	sort.Slice(c.RelaysGone, func(a, b int) bool { return relayLess(c.RelaysGone[a], c.RelaysGone[b]) })
	clear(m.rxDirty)
}

func sortRelays(rs []RelayState) {
	sort.Slice(rs, func(a, b int) bool { return relayLess(rs[a].Key(), rs[b].Key()) })
}

func relayLess(a, b RelayKey) bool {
	if a.UPF != b.UPF {
		return a.UPF < b.UPF
	}
	return a.UPFSeq < b.UPFSeq
}

// checkRelays validates the relays of a State before Restore applies it.
func checkRelays(rs []RelayState) error {
	seqs := map[uint32]bool{}
	keys := map[RelayKey]bool{}
	for _, r := range rs {
		if r.Seq == 0 || r.Seq > 0xffffff || seqs[r.Seq] || keys[r.Key()] {
			return fmt.Errorf("n4: restore: relayed report %s/%d: sequence number %d zero, too large or listed twice", r.UPF, r.UPFSeq, r.Seq)
		}
		seqs[r.Seq], keys[r.Key()] = true, true
		msg, err := pfcp.Parse(r.Data)
		if err != nil || msg.Type != pfcp.SessionReportReq || msg.Seq != r.Seq || !r.SMF.IsValid() {
			return fmt.Errorf("n4: restore: relayed report %s/%d: not a Session Report Request numbered %d to a valid SMF address", r.UPF, r.UPFSeq, r.Seq)
		}
	}
	return nil
}

// restoreRelays puts the relays back in the cache; those not answered yet
// are outstanding again and go out on the first Tick, under their old
// sequence numbers. Relays of a UPF no longer configured are dropped
// (they are reported gone by the next TakeChanges).
func (m *Machine) restoreRelays(rs []RelayState) {
	sorted := append([]RelayState(nil), rs...)
	sort.SliceStable(sorted, func(a, b int) bool { return sorted[a].Expires.Before(sorted[b].Expires) })
	for _, r := range sorted {
		i := -1
		for j, u := range m.upfs {
			if u.cfg.Name == r.UPF {
				i = j
			}
		}
		if i < 0 {
			m.relaysGone = append(m.relaysGone, r.Key())
			continue
		}
		from := m.upfs[i].cfg.Addr
		t := &txn{kind: txRelay, seq: r.Seq, to: r.SMF, side: SMFSide, data: r.Data, tries: 1, upf: i,
			sess: m.sessions[r.SID], sid: r.SID, from: from, fromSeq: r.UPFSeq, reqType: pfcp.SessionReportReq}
		k := rxKey{from, r.UPFSeq}
		m.rx[k] = &rxEntry{resp: r.Resp, side: UPFSide, expires: r.Expires, relay: t}
		m.rxq = append(m.rxq, expiry{k, r.Expires})
		if r.Resp == nil {
			m.txns[r.Seq] = t // sent is zero: due at the first Tick
		}
	}
}
