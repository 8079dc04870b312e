package n4

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/telcolb/telcolb/l7parse/pfcp"
)

// What outlives a Machine. A proxy that restarts (the daemon restarted, or
// its service changed) must not look restarted to anyone: the SMFs keep
// the proxy's Recovery Time Stamp, and every session keeps its SEID, its
// UPF and the requests needed to rebuild it. State carries exactly that;
// the shell keeps it on disk (a snapshot plus a journal of Changes) and a
// new Machine takes it with Restore before its first Step.
//
// What is deliberately not kept: the requests the SMFs relay through the
// proxy while in flight, and the SMF side of the retransmission cache (the
// SMFs retransmit, and a request the old proxy had relayed but not
// answered is relayed again: the UPF sees the same request twice only if
// the old relay had reached it, which TS 29.244 peers answer idempotently
// for Modification and Deletion; an Establishment in flight is not kept at
// all, so its retransmission makes a new session), heartbeat timers, and
// UPF features (refreshed by the association setup every restored UPF goes
// through). The other direction is kept: a UPF's Session Report Request
// relayed to an SMF stays in the State, with its sequence number toward the
// SMF and the SMF's answer once it came, until its cache entry expires
// (relay.go), so a restored proxy sends it again only as a retransmission
// and the SMF acts on each report once.

// State is the persistent part of a Machine: its node-level records and
// its sessions.
type State struct {
	Node
	Sessions []SessionState `json:"sessions,omitempty"`
	// Relays are the UPFs' Session Report Requests relayed to SMFs whose
	// cache entries have not expired (relay.go).
	Relays []RelayState `json:"relays,omitempty"`
}

// Node is the node-level part of State.
type Node struct {
	// Recovery is the proxy's Recovery Time Stamp (NTP seconds) toward
	// every peer; a restored Machine keeps it.
	Recovery uint32 `json:"recovery"`
	// NextSID is above every SEID the proxy may have handed out, persisted
	// or not (reserved in blocks): a restored proxy never reuses one that
	// a UPF may still hold from an establishment in flight at the crash.
	NextSID uint64 `json:"nextSID"`
	// NextSeq likewise counts the sequence numbers handed out: peers cache
	// requests by sequence number, and a restored proxy starting again at
	// 1 would have its new requests taken for retransmissions.
	NextSeq uint64     `json:"nextSeq"`
	UPFs    []UPFState `json:"upfs,omitempty"`
	SMFs    []SMFState `json:"smfs,omitempty"`
}

// UPFState is what is known of a UPF: the Recovery Time Stamp it last
// announced, so a restored proxy replays its sessions only if it restarted
// meanwhile.
type UPFState struct {
	Name     string `json:"name"`
	Recovery uint32 `json:"recovery"`
}

// SMFState is an associated SMF.
type SMFState struct {
	Addr     netip.AddrPort `json:"addr"`
	Node     string         `json:"node"`
	Recovery uint32         `json:"recovery"`
}

// SessionState is one established session. HasUP false means it must be
// (re)established on its UPF: it was being replayed or moved.
type SessionState struct {
	SID uint64 `json:"sid"`
	// SMF is the Node ID of the session's SMF (its address may change
	// with a new association from the same node).
	SMF    string   `json:"smf"`
	CPSEID uint64   `json:"cpSEID"`
	UPSEID uint64   `json:"upSEID,omitempty"`
	HasUP  bool     `json:"hasUP,omitempty"`
	UPF    string   `json:"upf"`
	Est    []byte   `json:"est"`
	Mods   [][]byte `json:"mods,omitempty"`
}

// Changes are what changed since the previous TakeChanges: the node-level
// records when they changed (nil otherwise), sessions to write (new or
// changed) and sessions to remove.
type Changes struct {
	Node     *Node
	Sessions []SessionState
	Deleted  []uint64
	// Relays were relayed or answered; RelaysGone expired or were dropped.
	Relays     []RelayState `json:",omitempty"`
	RelaysGone []RelayKey   `json:",omitempty"`
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool {
	return c.Node == nil && len(c.Sessions) == 0 && len(c.Deleted) == 0 && len(c.Relays) == 0 && len(c.RelaysGone) == 0
}

// Builder folds a State and the Changes that followed it into the current
// State: the shell's journal replay, and the tests' check that the
// Changes a Machine reports add up to what it holds.
type Builder struct {
	node     Node
	sessions map[uint64]SessionState
	relays   map[RelayKey]RelayState
}

// DiscardChanges forgets what changed, for a shell that keeps no journal.
func (m *Machine) DiscardChanges() {
	clear(m.dirty)
	clear(m.rxDirty)
	m.relaysGone = nil
	m.nodeDirty = false
}

// NewBuilder starts from s.
func NewBuilder(s State) *Builder {
	b := &Builder{node: s.Node, sessions: make(map[uint64]SessionState, len(s.Sessions)), relays: map[RelayKey]RelayState{}}
	for _, x := range s.Sessions {
		b.sessions[x.SID] = x
	}
	for _, r := range s.Relays {
		b.relays[r.Key()] = r
	}
	return b
}

// Apply adds c.
func (b *Builder) Apply(c Changes) {
	if c.Node != nil {
		b.node = *c.Node
	}
	for _, x := range c.Sessions {
		b.sessions[x.SID] = x
	}
	for _, sid := range c.Deleted {
		delete(b.sessions, sid)
	}
	for _, r := range c.Relays {
		b.relays[r.Key()] = r
	}
	for _, k := range c.RelaysGone {
		delete(b.relays, k)
	}
}

// Len is the number of sessions.
func (b *Builder) Len() int { return len(b.sessions) }

// State returns the folded State, sessions in SEID order.
func (b *Builder) State() State {
	s := State{Node: b.node}
	for _, x := range b.sessions {
		s.Sessions = append(s.Sessions, x)
	}
	sort.Slice(s.Sessions, func(i, j int) bool { return s.Sessions[i].SID < s.Sessions[j].SID })
	for _, r := range b.relays {
		s.Relays = append(s.Relays, r)
	}
	sortRelays(s.Relays)
	return s
}

// persistent reports whether a session belongs in State: established (or
// being rebuilt after having been), including while its SMF's deletion
// request is out (a retransmission after a restart must still reach the
// UPF), but not when the proxy itself deletes it for an SMF that is gone.
func (x *session) persistent() bool {
	switch x.state {
	case sessUp:
		return true
	case sessDeleting:
		return !x.dropping
	case sessReplaying:
		return x.est != nil
	}
	return false
}

func (m *Machine) sessionState(x *session) SessionState {
	st := SessionState{SID: x.sid, SMF: string(x.smf.node), CPSEID: x.cpSEID, UPF: m.upfs[x.upf].cfg.Name, Est: x.est, Mods: x.mods}
	// The UPF's SEID counts only once the session is whole on the UPF;
	// until then a restored proxy replays it.
	if x.hasUP && x.state != sessReplaying {
		st.UPSEID, st.HasUP = x.upSEID, true
	}
	return st
}

// touch records that session x changed (or went: it is no longer held).
func (m *Machine) touch(x *session) {
	if m.dirty == nil {
		m.dirty = map[uint64]struct{}{}
	}
	m.dirty[x.sid] = struct{}{}
}

// touchNode records a change of the UPF or SMF records.
func (m *Machine) touchNode() { m.nodeDirty = true }

// Export returns the Machine's persistent state, sessions in SEID order.
func (m *Machine) Export() State {
	s := State{Node: m.nodeRecord()}
	for _, x := range m.sessions {
		if x.persistent() && m.smfs[x.smf.addr] == x.smf {
			s.Sessions = append(s.Sessions, m.sessionState(x))
		}
	}
	sort.Slice(s.Sessions, func(a, b int) bool { return s.Sessions[a].SID < s.Sessions[b].SID })
	s.Relays = m.exportRelays()
	return s
}

func (m *Machine) nodeRecord() Node {
	n := Node{Recovery: m.recovery, NextSID: m.sidCeil, NextSeq: m.seqCeil}
	for _, u := range m.upfs {
		n.UPFs = append(n.UPFs, UPFState{Name: u.cfg.Name, Recovery: u.recovery})
	}
	for _, s := range m.smfs {
		n.SMFs = append(n.SMFs, SMFState{Addr: s.addr, Node: string(s.node), Recovery: s.recovery})
	}
	sort.Slice(n.SMFs, func(a, b int) bool { return n.SMFs[a].Addr.String() < n.SMFs[b].Addr.String() })
	return n
}

// TakeChanges returns what changed since the last call (or since Restore)
// and starts a new round. A session listed as changed that is no longer
// persistent is reported as deleted.
func (m *Machine) TakeChanges() Changes {
	var c Changes
	if m.nodeDirty {
		n := m.nodeRecord()
		c.Node = &n
	}
	for sid := range m.dirty {
		x := m.sessions[sid]
		if x != nil && x.persistent() && m.smfs[x.smf.addr] == x.smf {
			c.Sessions = append(c.Sessions, m.sessionState(x))
		} else {
			c.Deleted = append(c.Deleted, sid)
		}
	}
	sort.Slice(c.Sessions, func(a, b int) bool { return c.Sessions[a].SID < c.Sessions[b].SID })
	sort.Slice(c.Deleted, func(a, b int) bool { return c.Deleted[a] < c.Deleted[b] })
	m.takeRelayChanges(&c)
	clear(m.dirty)
	m.nodeDirty = false
	return c
}

// Restore loads s into a Machine that has not stepped yet. The proxy keeps
// s's Recovery Time Stamp. A session whose UPF is no longer configured is
// handled as if that UPF were lost: with OnLoss Move it is placed on the
// configured UPF holding the fewest sessions and replayed there once that
// UPF is associated; with Release it is forgotten (reported deleted by the
// next TakeChanges). A session not established on its UPF is replayed to it
// once associated. State that does not hold together (a SEID twice, a
// session of an unknown SMF or without its establishment) is an error and
// changes nothing.
func (m *Machine) Restore(s State) error {
	if m.started {
		return errors.New("n4: Restore after the machine started")
	}
	if s.Recovery == 0 {
		return errors.New("n4: restore: no Recovery Time Stamp")
	}
	byName := map[string]int{}
	for i, u := range m.upfs {
		byName[u.cfg.Name] = i
	}
	smfs := map[netip.AddrPort]*smf{}
	byNode := map[string]*smf{}
	for _, st := range s.SMFs {
		if !st.Addr.IsValid() || smfs[st.Addr] != nil || st.Node == "" || byNode[st.Node] != nil {
			return fmt.Errorf("n4: restore: SMF %v (%s) invalid or listed twice", st.Addr, st.Node)
		}
		sm := &smf{node: pfcp.NodeID(st.Node), addr: st.Addr, recovery: st.Recovery}
		smfs[st.Addr], byNode[st.Node] = sm, sm
	}
	sessions := map[uint64]*session{}
	var orphans []*session
	for _, st := range s.Sessions {
		if st.SID == 0 || sessions[st.SID] != nil {
			return fmt.Errorf("n4: restore: session SEID %#x zero or listed twice", st.SID)
		}
		sm := byNode[st.SMF]
		if sm == nil {
			return fmt.Errorf("n4: restore: session %#x of SMF %q, which has no association", st.SID, st.SMF)
		}
		if _, err := pfcp.Parse(st.Est); err != nil {
			return fmt.Errorf("n4: restore: session %#x: stored establishment: %w", st.SID, err)
		}
		x := &session{sid: st.SID, smf: sm, cpSEID: st.CPSEID, upSEID: st.UPSEID, hasUP: st.HasUP,
			est: st.Est, mods: st.Mods, state: sessUp, upf: -1}
		if i, ok := byName[st.UPF]; ok {
			x.upf = i
		} else {
			orphans = append(orphans, x)
		}
		sessions[x.sid] = x
	}
	if err := checkRelays(s.Relays); err != nil {
		return err
	}
	// Valid: apply.
	m.recovery = s.Recovery
	m.nextSID, m.sidCeil = s.NextSID, s.NextSID
	m.seqN, m.seqCeil = s.NextSeq, s.NextSeq
	for _, st := range s.UPFs {
		if i, ok := byName[st.Name]; ok {
			m.upfs[i].recovery = st.Recovery
		}
	}
	m.smfs, m.sessions = smfs, sessions
	for _, x := range sessions {
		if x.upf >= 0 {
			m.upfs[x.upf].sessions++
		}
	}
	sort.Slice(orphans, func(a, b int) bool { return orphans[a].sid < orphans[b].sid })
	for _, x := range orphans {
		if m.cfg.OnLoss == Release {
			delete(m.sessions, x.sid)
			m.touch(x)
			m.log.Info("session of a removed UPF released", "sid", x.sid)
			continue
		}
		allowed, _ := m.allowed(x.est)
		j := -1
		for i, u := range m.upfs {
			if (allowed == nil || allowed[i]) && (j < 0 || u.sessions < m.upfs[j].sessions) {
				j = i
			}
		}
		x.upf, x.hasUP = j, false
		m.upfs[j].sessions++
		m.touch(x)
	}
	for _, x := range m.sessions {
		x.smf.sessions++
		m.nextSID = max(m.nextSID, x.sid)
		if !x.hasUP {
			x.state = sessReplaying
			m.upfs[x.upf].replayQ = append(m.upfs[x.upf].replayQ, x)
		}
	}
	for _, u := range m.upfs {
		sort.Slice(u.replayQ, func(a, b int) bool { return u.replayQ[a].sid < u.replayQ[b].sid })
	}
	m.restoreRelays(s.Relays)
	return nil
}
