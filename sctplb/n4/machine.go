package n4

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"time"

	"github.com/telcolb/telcolb/l7parse/pfcp"
)

type upfState uint8

const (
	upfSettingUp   upfState = iota // association setup outstanding or scheduled
	upfUp                          // associated
	upfUnreachable                 // heartbeats lost; retrying the association
	upfLost                        // unreachable past LossTimeout or released; retrying
)

func (s upfState) String() string {
	return [...]string{"setting-up", "up", "unreachable", "lost"}[s]
}

type upf struct {
	cfg      UPF
	state    upfState
	recovery uint32 // last Recovery Time Stamp seen, 0 before the first
	features []byte // its UP Function Features IE, offered to SMFs
	// sessions counts the sessions placed on this UPF (any state).
	sessions int
	missed   int // heartbeats unanswered in a row
	hbAt     time.Time
	hbOut    bool
	setupOut bool
	setupAt  time.Time
	downAt   time.Time // when it became unreachable
	// needReplay: it restarted; its sessions are replayed once associated.
	needReplay bool
	replayQ    []*session
	replaying  int // replay requests outstanding
	wrr        int
}

type smf struct {
	node     pfcp.NodeID
	addr     netip.AddrPort
	recovery uint32
	missed   int
	hbAt     time.Time
	hbOut    bool
	sessions int
}

type sessState uint8

const (
	sessEstablishing sessState = iota
	sessUp
	sessReplaying // being (re)established on its UPF; SMF requests wait
	sessDeleting
)

// session is one PFCP session. Its sid is the proxy's SEID on both sides.
type session struct {
	sid    uint64
	smf    *smf
	cpSEID uint64 // the SMF's
	upSEID uint64 // the UPF's; valid when hasUP
	hasUP  bool
	upf    int
	state  sessState
	// est and mods are the requests as sent to the UPF (proxy F-SEID and
	// Node ID in place), replayed after a restart or a move.
	est  []byte
	mods [][]byte
	step int // replay progress: 0 establishment, k mods[k-1]
	// held are SMF requests that arrived during a replay, handled after it.
	held []Datagram
	// dropping: the proxy deletes it on its own (its SMF released the
	// association or restarted); it is no longer persisted.
	dropping bool
}

type txKind uint8

const (
	txHeartbeat txKind = iota + 1
	txSetup
	txRelay   // a forwarded request; the answer goes back to origin
	txReplay  // one step of a session replay
	txDelete  // proxy-originated Session Deletion (SMF gone)
	txPFD     // PFD Management fanned out
	txRelease // Association Release toward a removed peer
)

// txn is a request the proxy sent and awaits an answer for.
type txn struct {
	kind  txKind
	seq   uint32
	to    netip.AddrPort
	side  Side
	data  []byte
	sent  time.Time
	tries int
	upf   int
	smf   *smf
	sess  *session
	// origin of a relayed request: who asked, with which sequence number.
	from    netip.AddrPort
	fromSeq uint32
	reqType uint8
	mod     []byte // a relayed Modification Request, stored once accepted
	// sid is the session of a restored relay whose session is gone (sess
	// nil), kept so that the persisted record does not change.
	sid uint64
}

type rxKey struct {
	from netip.AddrPort
	seq  uint32
}

// rxEntry remembers a request received: resp is nil while its answer is
// pending.
type rxEntry struct {
	resp    []byte
	side    Side
	expires time.Time
	// relay is the request the proxy relayed for it: if the proxy gave up
	// on it, the sender's next retransmission sends it again, with the
	// same sequence number, so the far end sees a retransmission and not a
	// second request.
	relay *txn
}

type expiry struct {
	key rxKey
	at  time.Time
}

// sidBlock is how many SEIDs (and sequence numbers) are reserved at a time
// in the persisted state.
const sidBlock = 4096

// Machine is the N4 steering state machine. It is not safe for concurrent
// use: one goroutine (the proxy loop) owns it.
type Machine struct {
	cfg      Config
	log      *slog.Logger
	recovery uint32
	upfs     []*upf
	rules    []rule
	byAddr   map[netip.AddrPort]int // UPF address -> index
	smfs     map[netip.AddrPort]*smf
	sessions map[uint64]*session
	txns     map[uint32]*txn
	rx       map[rxKey]*rxEntry
	rxq      []expiry // FIFO of rx expiries (constant TTL keeps it sorted)
	pfd      []byte   // latest PFD Management Request, for late UPFs
	nextSID  uint64
	// sidCeil is the SEID up to which nextSID may run before the persisted
	// State must say so (State.NextSID).
	sidCeil uint64
	// seqN counts the sequence numbers issued (the 24-bit number is its
	// low bits); seqCeil is how far the persisted State lets it run, so
	// a restored proxy never reuses a number a peer may still have cached
	// as a request it answered.
	seqN, seqCeil uint64
	// dirty and nodeDirty record what changed for TakeChanges.
	dirty     map[uint64]struct{}
	nodeDirty bool
	// rxDirty: cache entries of relayed reports that changed or went;
	// relaysGone: restored relays of UPFs no longer configured.
	rxDirty    map[rxKey]struct{}
	relaysGone []RelayKey
	rr         int
	now        time.Time
	started    bool
	out        []Action
}

// New validates cfg and returns a Machine.
func New(cfg Config) (*Machine, error) {
	if len(cfg.UPFs) == 0 {
		return nil, errors.New("n4: no UPF configured")
	}
	byAddr := map[netip.AddrPort]int{}
	names := map[string]bool{}
	for i, u := range cfg.UPFs {
		if u.Name == "" || names[u.Name] {
			return nil, fmt.Errorf("n4: upfs[%d]: empty or duplicate name %q", i, u.Name)
		}
		names[u.Name] = true
		if !u.Addr.IsValid() {
			return nil, fmt.Errorf("n4: upfs[%d] (%s): invalid address", i, u.Name)
		}
		if _, dup := byAddr[u.Addr]; dup {
			return nil, fmt.Errorf("n4: upfs[%d] (%s): address %v used twice", i, u.Name, u.Addr)
		}
		if u.Weight < 0 {
			return nil, fmt.Errorf("n4: upfs[%d] (%s): negative weight", i, u.Name)
		}
		byAddr[u.Addr] = i
	}
	idx := map[string]int{}
	for i, u := range cfg.UPFs {
		idx[u.Name] = i
	}
	rules, err := compileRules(cfg.Steering, idx)
	if err != nil {
		return nil, err
	}
	if cfg.Policy < RoundRobin || cfg.Policy > Weighted {
		return nil, fmt.Errorf("n4: unknown policy %d", cfg.Policy)
	}
	if !cfg.SMFSide.IsValid() || !cfg.UPFSide.IsValid() {
		return nil, errors.New("n4: SMFSide and UPFSide addresses required")
	}
	if cfg.NodeID == "" {
		cfg.NodeID = pfcp.NodeIDFromAddr(cfg.SMFSide)
	}
	if cfg.Recovery.IsZero() {
		return nil, errors.New("n4: Recovery time required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.T1, 3*time.Second)
	if cfg.N1 <= 0 {
		cfg.N1 = 3
	}
	def(&cfg.HeartbeatInterval, 10*time.Second)
	def(&cfg.LossTimeout, 60*time.Second)
	// Twice the life of the proxy's own requests: a sender whose request the
	// proxy gave up relaying still finds it when it retransmits.
	def(&cfg.CacheTTL, 2*cfg.T1*time.Duration(cfg.N1+1)+time.Second)
	if cfg.ReplayWindow <= 0 {
		cfg.ReplayWindow = 256
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Machine{
		cfg: cfg, log: cfg.Logger, recovery: pfcp.ToNTP(cfg.Recovery), byAddr: byAddr,
		smfs: map[netip.AddrPort]*smf{}, sessions: map[uint64]*session{}, txns: map[uint32]*txn{},
		rx: map[rxKey]*rxEntry{}, rules: rules,
		// The first TakeChanges carries the node records.
		nodeDirty: true,
	}
	for _, u := range cfg.UPFs {
		m.upfs = append(m.upfs, &upf{cfg: u})
	}
	return m, nil
}

// Step feeds one event and returns the actions to perform, in order. The
// returned slice is only valid until the next Step.
func (m *Machine) Step(now time.Time, ev Event) []Action {
	m.now = now
	m.out = m.out[:0]
	if !m.started {
		m.started = true
		for i := range m.upfs {
			m.setupUPF(i)
		}
	}
	switch e := ev.(type) {
	case Datagram:
		m.datagram(e)
	case Tick:
		m.tick()
	}
	return m.out
}

// Sessions returns the sessions held per UPF (index of Config.UPFs).
func (m *Machine) Sessions() []int {
	out := make([]int, len(m.upfs))
	for i, u := range m.upfs {
		out[i] = u.sessions
	}
	return out
}

// UPFNames returns the UPF names by index.
func (m *Machine) UPFNames() []string {
	out := make([]string, len(m.upfs))
	for i, u := range m.upfs {
		out[i] = u.cfg.Name
	}
	return out
}

// UPFUp reports, per UPF, whether its association is up.
func (m *Machine) UPFUp() []bool {
	out := make([]bool, len(m.upfs))
	for i, u := range m.upfs {
		out[i] = u.state == upfUp
	}
	return out
}

// SMFs returns the number of associated SMFs.
func (m *Machine) SMFs() int { return len(m.smfs) }

// RecoveryTimeStamp is the proxy's Recovery Time Stamp as on the wire.
func (m *Machine) RecoveryTimeStamp() uint32 { return m.recovery }

func (m *Machine) emit(a Action) { m.out = append(m.out, a) }

func (m *Machine) send(side Side, to netip.AddrPort, b []byte) {
	m.emit(Action{Kind: Send, Side: side, To: to, Data: b})
}

func (m *Machine) fail(reason string) {
	m.emit(Action{Kind: SteeringFailure, Reason: reason})
}

func (m *Machine) seq() uint32 {
	for {
		m.seqN++
		if m.seqN > m.seqCeil {
			m.seqCeil = m.seqN + sidBlock
			m.touchNode()
		}
		seq := uint32(m.seqN & 0xffffff)
		if seq == 0 {
			continue
		}
		if _, busy := m.txns[seq]; !busy {
			return seq
		}
	}
}

func (m *Machine) sid() uint64 {
	for {
		m.nextSID++
		if m.nextSID == 0 {
			continue
		}
		if m.nextSID > m.sidCeil {
			m.sidCeil = m.nextSID + sidBlock
			m.touchNode()
		}
		if _, busy := m.sessions[m.nextSID]; !busy {
			return m.nextSID
		}
	}
}

// request sends a request the proxy retries and awaits: data's sequence
// number is replaced by a fresh one.
func (m *Machine) request(t *txn) {
	t.seq = m.seq()
	pfcp.SetSeq(t.data, t.seq)
	t.sent, t.tries = m.now, 1
	m.txns[t.seq] = t
	if t.kind == txRelay {
		if e := m.rx[rxKey{t.from, t.fromSeq}]; e != nil {
			e.relay = t
			m.touchRx(rxKey{t.from, t.fromSeq}, e)
		}
	}
	m.send(t.side, t.to, t.data)
}

func (m *Machine) datagram(d Datagram) {
	side := SMFSide
	ui, isUPF := m.byAddr[d.From]
	if isUPF {
		side = UPFSide
	}
	msg, err := pfcp.Parse(d.Data)
	if err != nil {
		m.malformed(side, d, msg, err)
		return
	}
	if !pfcp.Known(msg.Type) {
		m.malformed(side, d, msg, &pfcp.Error{Kind: pfcp.Discard, Msg: "unknown message type"})
		return
	}
	m.emit(Action{Kind: Received, Side: side, MsgType: msg.Type})
	if !pfcp.IsRequest(msg.Type) {
		m.response(side, d, msg)
		return
	}
	if (msg.Type == pfcp.AssociationSetupRequest || msg.Type == pfcp.HeartbeatRequest) && msg.HasRecovery && m.restarted(d.From, msg.Recovery) {
		// Checked before the cache: the restarted peer's first request
		// may reuse the sequence number of one it sent before.
		m.forgetPeer(d.From)
	}
	key := rxKey{d.From, msg.Seq}
	if e := m.rx[key]; e != nil {
		m.emit(Action{Kind: Absorbed, Side: side, MsgType: msg.Type})
		if e.resp != nil {
			m.send(side, d.From, e.resp)
		} else if t := e.relay; t != nil && m.txns[t.seq] == nil {
			t.sent, t.tries = m.now, 1
			m.txns[t.seq] = t
			m.send(t.side, t.to, t.data)
		}
		return
	}
	// Deep check before anything is stored or relayed.
	if err := pfcp.Validate(d.Data); err != nil {
		m.malformed(side, d, msg, err)
		return
	}
	if err := msg.Require(pfcp.Mandatory(msg.Type)...); err != nil {
		m.malformed(side, d, msg, err)
		return
	}
	m.rx[key] = &rxEntry{side: side, expires: m.now.Add(m.cfg.CacheTTL)}
	m.rxq = append(m.rxq, expiry{key, m.now.Add(m.cfg.CacheTTL)})
	if isUPF {
		m.fromUPF(ui, d, msg)
	} else {
		m.fromSMF(d, msg)
	}
}

// answer sends resp for the request (from, seq) and caches it for
// retransmissions.
func (m *Machine) answer(side Side, from netip.AddrPort, seq uint32, resp []byte) {
	if e := m.rx[rxKey{from, seq}]; e != nil {
		e.resp = resp
		m.touchRx(rxKey{from, seq}, e)
	}
	m.send(side, from, resp)
}

// forget drops a pending request's cache entry so that a later
// retransmission is handled afresh (the answer never came).
func (m *Machine) forget(from netip.AddrPort, seq uint32) {
	if e := m.rx[rxKey{from, seq}]; e != nil && e.resp == nil {
		m.touchRx(rxKey{from, seq}, e)
		delete(m.rx, rxKey{from, seq})
	}
}

// restarted reports whether a known peer announces a new Recovery Time
// Stamp.
func (m *Machine) restarted(from netip.AddrPort, rec uint32) bool {
	if i, ok := m.byAddr[from]; ok {
		return m.upfs[i].recovery != 0 && m.upfs[i].recovery != rec
	}
	s := m.smfs[from]
	return s != nil && s.recovery != rec
}

// forgetPeer drops the cached requests of a peer that restarted: it numbers
// its requests afresh, and a new request with an old sequence number must
// not be taken for a retransmission.
func (m *Machine) forgetPeer(addr netip.AddrPort) {
	for k, e := range m.rx {
		if k.from == addr {
			m.touchRx(k, e)
			delete(m.rx, k)
		}
	}
}

// malformed applies TS 29.244 §7.6: discard, Version Not Supported, or a
// rejection with the cause of the error. Nothing else changes.
func (m *Machine) malformed(side Side, d Datagram, msg pfcp.Msg, err error) {
	m.emit(Action{Kind: Malformed, Side: side, MsgType: msg.Type})
	m.log.Debug("malformed PFCP message", "from", d.From, "err", err)
	var pe *pfcp.Error
	if !errors.As(err, &pe) {
		return
	}
	switch pe.Kind {
	case pfcp.BadVersion:
		m.send(side, d.From, pfcp.VersionNotSupportedResponse(msg.Seq))
		return
	case pfcp.Discard:
		return
	}
	if !pfcp.IsRequest(msg.Type) || msg.Type == pfcp.HeartbeatRequest {
		return // responses are discarded
	}
	m.reject(side, d.From, msg, 0, pe.Cause(), pe.IE)
}

func (m *Machine) reject(side Side, to netip.AddrPort, msg pfcp.Msg, peerSEID uint64, cause uint8, offending uint16) {
	b, err := pfcp.Reject(msg, peerSEID, m.cfg.NodeID, cause, offending)
	if err != nil {
		m.log.Warn("cannot build rejection", "type", pfcp.TypeName(msg.Type), "err", err)
		return
	}
	m.answer(side, to, msg.Seq, b)
}

func (m *Machine) response(side Side, d Datagram, msg pfcp.Msg) {
	t := m.txns[msg.Seq]
	if t == nil || t.to != d.From {
		// A late answer to a request already answered or given up on.
		m.log.Debug("unmatched PFCP response", "from", d.From, "type", pfcp.TypeName(msg.Type), "seq", msg.Seq)
		return
	}
	if msg.Type != t.data[1]+1 && msg.Type != pfcp.VersionNotSupported {
		m.fail("response of the wrong type")
		return
	}
	delete(m.txns, msg.Seq)
	if msg.Type == pfcp.VersionNotSupported {
		m.txnFailed(t)
		return
	}
	if err := msg.Require(pfcp.Mandatory(msg.Type)...); err != nil {
		m.emit(Action{Kind: Malformed, Side: side, MsgType: msg.Type})
		m.txnFailed(t)
		return
	}
	switch t.kind {
	case txHeartbeat:
		m.heartbeatAnswered(t, msg)
	case txSetup:
		m.setupAnswered(t, d, msg)
	case txRelay:
		m.relayAnswered(t, d, msg)
	case txReplay:
		m.replayAnswered(t, d, msg)
	case txDelete:
		m.deleteAnswered(t, msg)
	case txPFD, txRelease:
	}
}

// txnFailed: no usable answer after N1 retransmissions.
func (m *Machine) txnFailed(t *txn) {
	switch t.kind {
	case txHeartbeat:
		m.heartbeatLost(t)
	case txSetup:
		m.setupFailed(t)
	case txRelay:
		m.fail("no answer from " + t.side.String())
		if s := t.sess; s != nil && m.sessions[s.sid] == s && s.state == sessEstablishing {
			// A retransmitted establishment starts afresh.
			m.forget(t.from, t.fromSeq)
			m.dropSession(s)
		}
	case txReplay:
		m.replayFailed(t)
	case txDelete:
		if s := t.sess; s != nil && m.sessions[s.sid] == s {
			m.dropSession(s)
		}
	}
}

func (m *Machine) tick() {
	for len(m.rxq) > 0 && !m.rxq[0].at.After(m.now) {
		e := m.rxq[0]
		m.rxq = m.rxq[1:]
		if r := m.rx[e.key]; r != nil && !r.expires.After(m.now) {
			m.touchRx(e.key, r)
			delete(m.rx, e.key)
		}
	}
	if cap(m.rxq) > 1024 && len(m.rxq) < cap(m.rxq)/4 {
		m.rxq = append([]expiry(nil), m.rxq...)
	}
	var due []*txn
	for _, t := range m.txns {
		if m.now.Sub(t.sent) >= m.cfg.T1 {
			due = append(due, t)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].seq < due[j].seq })
	for _, t := range due {
		if t.tries > m.cfg.N1 {
			delete(m.txns, t.seq)
			m.txnFailed(t)
			continue
		}
		t.tries++
		t.sent = m.now
		m.send(t.side, t.to, t.data)
	}
	m.nodeTick()
}

// pick chooses an available UPF for a new session among those allowed
// (nil: all), or -1.
func (m *Machine) pick(exclude int, allowed []bool) int {
	ok := func(i int) bool { return i != exclude && m.upfs[i].state == upfUp && (allowed == nil || allowed[i]) }
	best := -1
	switch m.cfg.Policy {
	case LeastSessions:
		for i, u := range m.upfs {
			if ok(i) && (best < 0 || u.sessions < m.upfs[best].sessions) {
				best = i
			}
		}
	case Weighted:
		total := 0
		for i, u := range m.upfs {
			if !ok(i) {
				continue
			}
			w := max(u.cfg.Weight, 1)
			u.wrr += w
			total += w
			if best < 0 || u.wrr > m.upfs[best].wrr {
				best = i
			}
		}
		if best >= 0 {
			m.upfs[best].wrr -= total
		}
	default:
		for k := range m.upfs {
			i := (m.rr + k) % len(m.upfs)
			if ok(i) {
				best = i
				m.rr = i + 1
				break
			}
		}
	}
	return best
}
