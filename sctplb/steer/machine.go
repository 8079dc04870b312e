package steer

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

type gnbState uint8

const (
	gnbConnected gnbState = iota // association up, no NG Setup yet
	gnbSetupPending
	gnbReady
	gnbDraining // association lost, upstreams kept while AMFs release its UEs
)

type upState uint8

const (
	upDialing upState = iota
	upSettingUp
	upReady
	upDown // ended or refused; redial at retryAt
)

// maxPendingAnswers bounds the queue of AMF-initiated non-UE requests
// awaiting a gNB's answer, per procedure.
const maxPendingAnswers = 64

type gnb struct {
	id       AssocID
	out      uint16
	state    gnbState
	setupReq []byte
	ranCfg   []byte // latest RAN Configuration Update, replayed to late AMFs
	ups      []AssocID
	deadline time.Time // setup answer or drain end
	answerBy time.Time // earlier deadline once one AMF answered
	served   map[ngapl.GUAMI]bool
	// pending holds, per procedure, the AMFs whose non-UE class-1 requests
	// (Write-Replace Warning, PWS Cancel) await the gNB's answer, in order.
	pending map[int64][]int
	limit   peerLimit
	// lastFanout is when a repeated NG Setup was last forwarded to the AMFs.
	lastFanout time.Time
}

type upstream struct {
	id          AssocID
	gnb         AssocID
	amf         int
	state       upState
	out         uint16
	resp        ngapl.SetupResponse
	unavailable map[ngapl.GUAMI]bool
	// overload is 0, a Traffic Load Reduction percentage (1..99) or
	// fullOverload; credit spreads the admitted share (overload.go).
	overload uint8
	credit   int
	backoff  time.Duration
	retryAt  time.Time
	ues      int
	limit    peerLimit
}

const (
	ueHasRAN uint8 = 1 << iota
	ueHasAMF
	// ueOrphan: the proxy released the UE toward the gNB after losing its
	// AMF; the record only absorbs the gNB's UE Context Release Complete.
	ueOrphan
	// ueDraining: the gNB is gone; the record answers the AMF's UE Context
	// Release Command on the gNB's behalf.
	ueDraining
)

// ue is one UE-associated logical NG connection. Kept small: a million of
// these must fit well under a GiB with their two index entries.
type ue struct {
	amfID uint64
	gnb   AssocID
	up    AssocID
	ran   uint32
	amf   int16
	flags uint8
}

type ranKey struct {
	gnb AssocID
	ran uint32
}

// amfKey: an AMF-UE-NGAP-ID is unique per AMF and NG interface instance
// (TS 38.413 9.3.3.1), so the same ID may name UEs on two gNBs (a Handover
// Request toward two targets does). The key is 16 bytes, like the UE it
// indexes.
type amfKey struct {
	id  uint64
	gnb AssocID
	amf int32
}

func akey(amf int, gnb AssocID, id uint64) amfKey { return amfKey{id: id, gnb: gnb, amf: int32(amf)} }

// Machine is the steering state machine. It is not safe for concurrent use:
// one goroutine (the proxy loop) owns it.
type Machine struct {
	cfg     Config
	log     *slog.Logger
	dec     *ngapl.Decoder
	gnbs    map[AssocID]*gnb
	ups     map[AssocID]*upstream
	byRAN   map[ranKey]*ue
	byAMF   map[amfKey]*ue
	initial map[*ue][]byte // Initial UE Message until the AMF answers, for re-steering
	amfUEs  []int
	wrr     []int
	retired []bool // by AMF index: removed at run time
	rr      int
	spill   int
	nextUp  AssocID
	now     time.Time
	out     []Action
	// peer is the association whose message is being handled, 0 for other
	// events: log lines it causes count against its rate.
	peer      AssocID
	strangers peerLimit
}

// New validates cfg and returns a Machine.
func New(cfg Config) (*Machine, error) {
	if len(cfg.AMFs) == 0 {
		return nil, fmt.Errorf("steer: no AMF configured")
	}
	if len(cfg.AMFs) > 1<<15 {
		return nil, fmt.Errorf("steer: %d AMFs configured, at most %d", len(cfg.AMFs), 1<<15)
	}
	seen := map[string]bool{}
	for i, a := range cfg.AMFs {
		if a.Name == "" {
			return nil, fmt.Errorf("steer: amfs[%d]: empty name", i)
		}
		if seen[a.Name] {
			return nil, fmt.Errorf("steer: amfs[%d]: duplicate name %q", i, a.Name)
		}
		seen[a.Name] = true
		if a.Weight < 0 {
			return nil, fmt.Errorf("steer: amfs[%d]: negative weight", i)
		}
	}
	if cfg.Policy < RoundRobin || cfg.Policy > Weighted {
		return nil, fmt.Errorf("steer: unknown policy %d", cfg.Policy)
	}
	if cfg.ProxyName == "" {
		cfg.ProxyName = "telcolb-n2"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.SetupWait, time.Second)
	def(&cfg.SetupTimeout, 5*time.Second)
	def(&cfg.RedialMin, time.Second)
	def(&cfg.RedialMax, 30*time.Second)
	def(&cfg.DrainTimeout, 5*time.Second)
	if cfg.PeerLogRate <= 0 {
		cfg.PeerLogRate = 1
	}
	if cfg.PeerLogBurst <= 0 {
		cfg.PeerLogBurst = 5
	}
	if cfg.PeerErrorRate <= 0 {
		cfg.PeerErrorRate = 10
	}
	if cfg.PeerErrorBurst <= 0 {
		cfg.PeerErrorBurst = 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Machine{
		cfg:     cfg,
		log:     cfg.Logger,
		dec:     ngapl.NewDecoder(ngapl.DecoderConfig{}),
		gnbs:    map[AssocID]*gnb{},
		ups:     map[AssocID]*upstream{},
		byRAN:   map[ranKey]*ue{},
		byAMF:   map[amfKey]*ue{},
		initial: map[*ue][]byte{},
		amfUEs:  make([]int, len(cfg.AMFs)),
		wrr:     make([]int, len(cfg.AMFs)),
		retired: make([]bool, len(cfg.AMFs)),
	}, nil
}

// Step feeds one event and returns the actions to perform, in order. The
// returned slice is only valid until the next Step.
func (m *Machine) Step(now time.Time, ev Event) []Action {
	m.now = now
	m.out = m.out[:0]
	m.peer = 0
	switch e := ev.(type) {
	case GNBMessage:
		m.peer = e.Assoc
	case AMFMessage:
		m.peer = e.Assoc
	}
	switch e := ev.(type) {
	case GNBUp:
		m.gnbUp(e)
	case GNBDown:
		m.gnbDown(e.Assoc)
	case GNBMessage:
		m.fromGNB(e)
	case AMFUp:
		m.amfUp(e)
	case AMFDown:
		m.amfDown(e.Assoc)
	case AMFMessage:
		m.fromAMF(e)
	case Tick:
		m.tick()
	case AddAMF:
		m.addAMF(e.AMF)
	case RemoveAMF:
		m.removeAMF(e.Name)
	}
	return m.out
}

// UEs returns the number of UE contexts held per AMF (index of Config.AMFs).
func (m *Machine) UEs() []int { return append([]int(nil), m.amfUEs...) }

// AssociationsUp returns the established gNB and upstream associations.
func (m *Machine) AssociationsUp() (gnbs, upstreams int) {
	for _, g := range m.gnbs {
		if g.state != gnbDraining {
			gnbs++
		}
	}
	for _, u := range m.ups {
		if u.state == upSettingUp || u.state == upReady {
			upstreams++
		}
	}
	return gnbs, upstreams
}

// Active reports, by AMF index, which AMFs are configured (not removed).
func (m *Machine) Active() []bool {
	out := make([]bool, len(m.retired))
	for i, r := range m.retired {
		out[i] = !r
	}
	return out
}

// AMFNames returns the configured AMF names, by index.
func (m *Machine) AMFNames() []string {
	n := make([]string, len(m.cfg.AMFs))
	for i, a := range m.cfg.AMFs {
		n[i] = a.Name
	}
	return n
}

// DecoderStats returns the counters of the machine's NGAP decoder.
func (m *Machine) DecoderStats() ngapl.Stats { return m.dec.Stats() }

// decode reads the steering key through the decoder's fast path; only the
// procedures the machine terminates and reads in full (NG Setup, NG Reset,
// AMF Configuration Update, AMF Status Indication) pay for a full decode.
func (m *Machine) decode(b []byte) (ngapl.Key, *ngapType.NGAPPDU, error) {
	k, err := m.dec.Key(b)
	if err != nil {
		return k, nil, err // k names the procedure of an undefined message
	}
	switch k.Procedure {
	case ngapType.ProcedureCodeNGSetup, ngapType.ProcedureCodeNGReset,
		ngapType.ProcedureCodeAMFConfigurationUpdate, ngapType.ProcedureCodeAMFStatusIndication:
		_, pdu, err := ngapl.Decode(b)
		if err != nil {
			return ngapl.Key{}, nil, err
		}
		return k, pdu, nil
	}
	return k, nil, nil
}

// --- action helpers ---

func (m *Machine) send(a AssocID, stream uint16, b []byte) {
	m.out = append(m.out, Action{Kind: Send, Assoc: a, Stream: stream, Data: b})
}

func (m *Machine) fail(reason string, attrs ...any) {
	m.out = append(m.out, Action{Kind: SteeringFailure, Reason: reason})
	m.warn("steering failure", append([]any{"reason", reason}, attrs...)...)
}

// build runs a message builder; the builders only fail on programming
// errors, which are logged and counted rather than crashing the proxy.
func (m *Machine) build(b []byte, err error) ([]byte, bool) {
	if err != nil {
		m.fail("encode", "err", err)
		return nil, false
	}
	return b, true
}

func (m *Machine) errorIndication(to AssocID, amf *uint64, ran *uint32, cause *ngapType.Cause) {
	if !m.allowErrorIndication(to) {
		return
	}
	if b, ok := m.build(ngapl.ErrorIndication(amf, ran, cause)); ok {
		// An Error Indication naming a UE is UE-associated signalling and
		// travels on that UE's stream (TS 38.412 7).
		var out uint16
		if g := m.gnbs[to]; g != nil {
			out = g.out
		} else if u := m.ups[to]; u != nil {
			out = u.out
		}
		stream := uint16(0)
		switch {
		case ran != nil:
			stream = streamFor(out, uint64(*ran))
		case amf != nil:
			stream = streamFor(out, *amf)
		}
		m.send(to, stream, b)
	}
}

// streamFor spreads UE-associated signalling over the non-zero streams, stable
// per UE (TS 38.412 7: stream 0 is for non-UE-associated signalling).
func streamFor(out uint16, id uint64) uint16 {
	if out <= 1 {
		return 0
	}
	return 1 + uint16(id%uint64(out-1))
}

func (u *ue) streamID() uint64 {
	if u.flags&ueHasRAN != 0 {
		return uint64(u.ran)
	}
	return u.amfID
}

// --- gNB side ---

func (m *Machine) gnbUp(e GNBUp) {
	if e.Assoc&UpstreamBit != 0 {
		m.log.Error("gNB association ID uses the upstream range", "assoc", e.Assoc)
		m.out = append(m.out, Action{Kind: Close, Assoc: e.Assoc})
		return
	}
	if old, ok := m.gnbs[e.Assoc]; ok {
		// A reused ID means the shell missed a down event; start clean.
		m.dropGNB(old)
	}
	m.gnbs[e.Assoc] = &gnb{id: e.Assoc, out: e.OutStreams, ups: make([]AssocID, len(m.cfg.AMFs)), served: map[ngapl.GUAMI]bool{}, pending: map[int64][]int{}}
	m.log.Info("gNB association up", "assoc", e.Assoc, "streams", e.OutStreams)
}

func (m *Machine) fromGNB(e GNBMessage) {
	g, ok := m.gnbs[e.Assoc]
	if !ok || g.state == gnbDraining {
		m.fail("unknown gNB association", "assoc", e.Assoc)
		return
	}
	k, pdu, err := m.decode(e.Data)
	if errors.Is(err, ngapl.ErrUnknownMessage) {
		m.unknownMessage(g.id, Uplink, k)
		return
	}
	if err != nil {
		m.out = append(m.out, Action{Kind: Malformed, Assoc: e.Assoc, Dir: Uplink})
		m.warn("malformed NGAP from gNB", "assoc", e.Assoc, "err", err)
		m.errorIndication(g.id, nil, nil, ngapl.Cause(ngapType.CausePresentProtocol, ngapType.CauseProtocolPresentTransferSyntaxError))
		return
	}
	m.out = append(m.out, Action{Kind: CountMessage, Procedure: k.Procedure, Dir: Uplink})
	if !m.validate(g.id, Uplink, k) {
		return
	}
	if k.Procedure == ngapType.ProcedureCodeNGSetup && k.Type == ngapl.Initiating {
		m.gnbSetup(g, e.Data)
		return
	}
	if g.state != gnbReady {
		m.fail("message before NG Setup", "assoc", g.id, "procedure", ngapl.ProcedureName(k.Procedure))
		m.errorIndication(g.id, nil, nil, ngapl.Cause(ngapType.CausePresentProtocol, ngapType.CauseProtocolPresentMessageNotCompatibleWithReceiverState))
		return
	}
	if k.UEAssociated {
		m.uplinkUE(g, k, e.Data)
		return
	}
	m.uplinkNonUE(g, k, pdu, e.Data)
}

func (m *Machine) gnbSetup(g *gnb, req []byte) {
	if g.state == gnbReady {
		m.repeatedSetup(g, req)
		return
	}
	g.setupReq = req
	g.state = gnbSetupPending
	g.deadline = m.now.Add(m.cfg.SetupTimeout)
	g.answerBy = time.Time{}
	for i := range m.cfg.AMFs {
		if m.retired[i] {
			continue
		}
		u := m.ups[g.ups[i]]
		switch {
		case u == nil:
			m.dial(g, i, m.cfg.RedialMin)
		case u.state == upSettingUp || u.state == upReady:
			u.state = upSettingUp
			m.send(u.id, 0, req)
		case u.state == upDown:
			m.redial(u)
		}
	}
}

func (m *Machine) dial(g *gnb, amf int, backoff time.Duration) *upstream {
	m.nextUp++
	id := UpstreamBit | (m.nextUp &^ UpstreamBit)
	u := &upstream{id: id, gnb: g.id, amf: amf, state: upDialing, backoff: backoff, unavailable: map[ngapl.GUAMI]bool{}}
	m.ups[id] = u
	g.ups[amf] = id
	m.out = append(m.out, Action{Kind: Dial, Assoc: id, AMF: amf})
	return u
}

// redial replaces a down upstream with a fresh association ID, so that late
// events about the old one cannot be mistaken for the new one.
func (m *Machine) redial(u *upstream) {
	g := m.gnbs[u.gnb]
	delete(m.ups, u.id)
	if g == nil || g.state == gnbDraining {
		return
	}
	m.dial(g, u.amf, u.backoff)
}

func (m *Machine) uplinkNonUE(g *gnb, k ngapl.Key, pdu *ngapType.NGAPPDU, data []byte) {
	switch {
	case k.Procedure == ngapType.ProcedureCodeNGReset && k.Type == ngapl.Initiating:
		m.resetFromGNB(g, pdu, data)
	case k.Procedure == ngapType.ProcedureCodeNGReset,
		k.Procedure == ngapType.ProcedureCodeAMFConfigurationUpdate,
		k.Procedure == ngapType.ProcedureCodeAMFStatusIndication:
		// Answers to procedures the proxy itself started toward the gNB.
	case k.Procedure == ngapType.ProcedureCodeRANConfigurationUpdate && k.Type == ngapl.Initiating:
		g.ranCfg = data
		for _, u := range m.readyUps(g) {
			m.send(u.id, 0, data)
		}
		if b, ok := m.build(ngapl.RANConfigurationUpdateAcknowledge()); ok {
			m.send(g.id, 0, b)
		}
	case k.Procedure == ngapType.ProcedureCodeErrorIndication:
		m.warn("non-UE Error Indication from gNB", "assoc", g.id)
	case k.Type != ngapl.Initiating:
		// The gNB answers an AMF-initiated non-UE request: back to its sender.
		q := g.pending[k.Procedure]
		if len(q) == 0 {
			m.fail("unsolicited non-UE answer", "assoc", g.id, "procedure", ngapl.ProcedureName(k.Procedure))
			return
		}
		amf := q[0]
		g.pending[k.Procedure] = q[1:]
		if u := m.ups[g.ups[amf]]; u != nil && u.state == upReady {
			m.send(u.id, 0, data)
		} else {
			m.fail("AMF gone before answer", "procedure", ngapl.ProcedureName(k.Procedure))
		}
	case k.Procedure == ngapType.ProcedureCodePWSRestartIndication, k.Procedure == ngapType.ProcedureCodePWSFailureIndication:
		// Every AMF may have warnings running in this gNB.
		for _, u := range m.readyUps(g) {
			m.send(u.id, 0, data)
		}
	default:
		// Uplink RAN Configuration Transfer, non-UE NRPPa, private messages:
		// any AMF can relay them; spread them.
		ups := m.readyUps(g)
		if len(ups) == 0 {
			m.fail("no AMF for non-UE message", "procedure", ngapl.ProcedureName(k.Procedure))
			return
		}
		m.rr++
		m.send(ups[m.rr%len(ups)].id, 0, data)
	}
}

func (m *Machine) readyUps(g *gnb) []*upstream {
	var out []*upstream
	for _, id := range g.ups {
		if u := m.ups[id]; u != nil && u.state == upReady {
			out = append(out, u)
		}
	}
	return out
}

func (m *Machine) uplinkUE(g *gnb, k ngapl.Key, data []byte) {
	switch k.Procedure {
	case ngapType.ProcedureCodeInitialUEMessage:
		m.initialUE(g, k, data)
		return
	case ngapType.ProcedureCodePathSwitchRequest:
		m.pathSwitch(g, k, data)
		return
	}
	var u *ue
	if k.HasRANUEID {
		u = m.byRAN[ranKey{g.id, k.RANUEID}]
	}
	if u == nil && k.HasAMFUEID {
		// Handover target: the AMF named the UE first, the gNB's answer
		// brings the RAN-UE-NGAP-ID to learn.
		u = m.uniqueByAMF(g, k.AMFUEID)
		if u != nil && u.flags&ueHasRAN == 0 && k.HasRANUEID {
			u.ran, u.flags = k.RANUEID, u.flags|ueHasRAN
			m.byRAN[ranKey{g.id, u.ran}] = u
		}
	}
	if u == nil {
		m.fail("unknown UE", "assoc", g.id, "ran", k.RANUEID, "procedure", ngapl.ProcedureName(k.Procedure))
		var amf *uint64
		var ran *uint32
		if k.HasAMFUEID {
			amf = &k.AMFUEID
		}
		if k.HasRANUEID {
			ran = &k.RANUEID
		}
		m.errorIndication(g.id, amf, ran, ngapl.Cause(ngapType.CausePresentRadioNetwork, ngapType.CauseRadioNetworkPresentUnknownLocalUENGAPID))
		return
	}
	release := k.Procedure == ngapType.ProcedureCodeUEContextRelease && k.Type == ngapl.Successful
	if u.flags&ueOrphan != 0 {
		if release {
			m.removeUE(u)
		}
		return
	}
	up := m.ups[u.up]
	if up == nil || up.state != upReady {
		m.fail("AMF unavailable", "assoc", g.id, "ran", u.ran)
		return
	}
	m.send(up.id, streamFor(up.out, u.streamID()), data)
	if release {
		m.removeUE(u)
	}
}

// uniqueByAMF finds the UE of gNB g that some AMF knows as id; nil when none
// or when AMFs collide on the ID.
func (m *Machine) uniqueByAMF(g *gnb, id uint64) *ue {
	var found *ue
	for i := range m.cfg.AMFs {
		if u := m.byAMF[akey(i, g.id, id)]; u != nil {
			if found != nil {
				return nil
			}
			found = u
		}
	}
	return found
}

func (m *Machine) initialUE(g *gnb, k ngapl.Key, data []byte) {
	if old := m.byRAN[ranKey{g.id, k.RANUEID}]; old != nil {
		// The gNB reused a RAN-UE-NGAP-ID: its old connection is gone.
		m.removeUE(old)
	}
	if !k.HasSTMSI {
		m.out = append(m.out, Action{Kind: NASIdentity, Assoc: g.id, Reason: k.NAS.Kind.String()})
	}
	up := m.pickAMF(g, k, -1)
	if up == nil {
		m.fail("no AMF available", "assoc", g.id, "ran", k.RANUEID)
		m.errorIndication(g.id, nil, &k.RANUEID, ngapl.Cause(ngapType.CausePresentTransport, ngapType.CauseTransportPresentTransportResourceUnavailable))
		return
	}
	u := &ue{gnb: g.id, up: up.id, amf: int16(up.amf), ran: k.RANUEID, flags: ueHasRAN}
	m.byRAN[ranKey{g.id, u.ran}] = u
	m.initial[u] = data
	m.attach(u, up)
	m.send(up.id, streamFor(up.out, uint64(u.ran)), data)
}

func (m *Machine) attach(u *ue, up *upstream) {
	u.up, u.amf = up.id, int16(up.amf)
	up.ues++
	m.amfUEs[up.amf]++
}

func (m *Machine) detach(u *ue) {
	if up := m.ups[u.up]; up != nil {
		up.ues--
	}
	if u.flags&ueOrphan == 0 {
		m.amfUEs[u.amf]--
	}
}

// pickAMF chooses the upstream for a new UE on g: the AMF its 5G-S-TMSI
// names when that AMF is up and serves the GUAMI, else by policy, preferring
// AMFs of the UE's AMF set (they can fetch its context). exclude is an AMF
// index to avoid (-1 for none).
func (m *Machine) pickAMF(g *gnb, k ngapl.Key, exclude int) *upstream {
	var cands []*upstream
	for _, u := range m.readyUps(g) {
		if u.amf != exclude && u.overload != fullOverload {
			cands = append(cands, u)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	set, hasSet := k.AMFSetID, k.HasAMFSetID
	sid, ptr, named := k.STMSI.SetID, k.STMSI.Pointer, k.HasSTMSI
	if !named && (k.NAS.Kind == ngapl.NASGUTI || k.NAS.Kind == ngapl.NASSTMSI) {
		// No 5G-S-TMSI IE, but the UE's plain NAS names its AMF (TS 24.501
		// 9.11.3.4): a 5G-GUTI in a Registration Request, a 5G-S-TMSI in a
		// Service Request.
		sid, ptr, named = k.NAS.SetID, k.NAS.Pointer, true
	}
	if named {
		for _, u := range cands {
			if u.serves(sid, ptr) && u.admits() {
				return u
			}
		}
		set, hasSet = sid, true
	}
	if hasSet {
		var inSet []*upstream
		for _, u := range cands {
			if u.inSet(set) {
				inSet = append(inSet, u)
			}
		}
		if len(inSet) > 0 {
			cands = inSet
		}
	}
	// The policy picks as if nobody were overloaded; a partly overloaded
	// pick is kept only for its admitted share (overload.go) and the UE
	// goes to the policy's next choice among the others.
	u := m.byPolicy(cands)
	for !u.admits() {
		cands = slices.DeleteFunc(cands, func(x *upstream) bool { return x == u })
		if len(cands) == 0 {
			return nil
		}
		if m.cfg.Policy == RoundRobin {
			// A rotation of its own, so the refused share spreads evenly
			// instead of following the main rotation's phase.
			m.spill++
			u = cands[m.spill%len(cands)]
			continue
		}
		u = m.byPolicy(cands)
	}
	return u
}

func (u *upstream) serves(set uint16, ptr uint8) bool {
	for _, it := range u.resp.Served {
		g, err := ngapl.GUAMIOf(&it.GUAMI)
		if err == nil && g.SetID == set && g.Pointer == ptr && !u.unavailable[g] {
			return true
		}
	}
	return false
}

func (u *upstream) inSet(set uint16) bool {
	for _, it := range u.resp.Served {
		if g, err := ngapl.GUAMIOf(&it.GUAMI); err == nil && g.SetID == set {
			return true
		}
	}
	return false
}

func (m *Machine) byPolicy(c []*upstream) *upstream {
	switch m.cfg.Policy {
	case LeastUEs:
		best := c[0]
		for _, u := range c[1:] {
			if m.amfUEs[u.amf] < m.amfUEs[best.amf] {
				best = u
			}
		}
		return best
	case Weighted:
		// Smooth weighted round robin (as nginx): deterministic and even.
		total, best := 0, c[0]
		for _, u := range c {
			w := max(m.cfg.AMFs[u.amf].Weight, 1)
			m.wrr[u.amf] += w
			total += w
			if m.wrr[u.amf] > m.wrr[best.amf] {
				best = u
			}
		}
		m.wrr[best.amf] -= total
		return best
	default:
		m.rr++
		return c[m.rr%len(c)]
	}
}

func (m *Machine) pathSwitch(g *gnb, k ngapl.Key, data []byte) {
	if !k.HasSourceAMFUEID || !k.HasRANUEID {
		m.fail("path switch without IDs", "assoc", g.id)
		return
	}
	var src *ue
	for i := range m.cfg.AMFs {
		for gid := range m.gnbs {
			u := m.byAMF[akey(i, gid, k.SourceAMFUEID)]
			if u == nil || gid == g.id {
				continue
			}
			if src != nil {
				m.fail("ambiguous source AMF-UE-NGAP-ID", "id", k.SourceAMFUEID)
				m.errorIndication(g.id, nil, &k.RANUEID, ngapl.Cause(ngapType.CausePresentRadioNetwork, ngapType.CauseRadioNetworkPresentInconsistentRemoteUENGAPID))
				return
			}
			src = u
		}
	}
	var up *upstream
	if src != nil {
		up = m.ups[g.ups[src.amf]]
	}
	if up == nil || up.state != upReady {
		m.fail("path switch to unavailable AMF", "id", k.SourceAMFUEID)
		m.errorIndication(g.id, nil, &k.RANUEID, ngapl.Cause(ngapType.CausePresentRadioNetwork, ngapType.CauseRadioNetworkPresentUnknownLocalUENGAPID))
		return
	}
	// The source gNB's record stays until the AMF releases it there; the
	// new record takes over the AMF-UE-NGAP-ID index once the AMF answers.
	u := &ue{gnb: g.id, ran: k.RANUEID, flags: ueHasRAN}
	if old := m.byRAN[ranKey{g.id, u.ran}]; old != nil {
		m.removeUE(old)
	}
	m.byRAN[ranKey{g.id, u.ran}] = u
	m.attach(u, up)
	m.send(up.id, streamFor(up.out, uint64(u.ran)), data)
}

// bindAMF files u under key. An AMF that reuses an AMF-UE-NGAP-ID on one
// gNB for a second UE breaks TS 38.413 10.6; the gNB, which gets the message,
// reacts to that. The proxy keeps its indexes exact: the newest binding
// holds the key, the older record keeps only its RAN-UE-NGAP-ID.
func (m *Machine) bindAMF(u *ue, key amfKey) {
	if old := m.byAMF[key]; old != nil && old != u {
		m.warn("AMF reused an AMF-UE-NGAP-ID on one gNB", "amf", m.cfg.AMFs[key.amf].Name, "gnb", key.gnb, "id", key.id)
		old.flags &^= ueHasAMF
		if old.flags&ueHasRAN == 0 {
			m.removeUE(old)
		}
	}
	m.byAMF[key] = u
}

func (m *Machine) removeUE(u *ue) {
	if u.flags&ueHasRAN != 0 {
		if m.byRAN[ranKey{u.gnb, u.ran}] == u {
			delete(m.byRAN, ranKey{u.gnb, u.ran})
		}
	}
	if u.flags&ueHasAMF != 0 {
		if k := akey(int(u.amf), u.gnb, u.amfID); m.byAMF[k] == u {
			delete(m.byAMF, k)
		}
	}
	delete(m.initial, u)
	m.detach(u)
}

func (m *Machine) gnbDown(id AssocID) {
	g, ok := m.gnbs[id]
	if !ok || g.state == gnbDraining {
		return
	}
	m.log.Info("gNB association down", "assoc", id)
	g.state = gnbDraining
	g.deadline = m.now.Add(m.cfg.DrainTimeout)
	cause := ngapl.Cause(ngapType.CausePresentRadioNetwork, ngapType.CauseRadioNetworkPresentRadioConnectionWithUeLost)
	for _, u := range m.uesOf(g.id, 0) {
		up := m.ups[u.up]
		if u.flags&ueHasAMF == 0 || u.flags&ueOrphan != 0 || up == nil || up.state != upReady {
			m.removeUE(u)
			continue
		}
		if u.flags&ueHasRAN != 0 {
			delete(m.byRAN, ranKey{u.gnb, u.ran})
		}
		u.flags |= ueDraining
		if b, ok := m.build(ngapl.UEContextReleaseRequest(u.amfID, u.ran, cause)); ok {
			m.send(up.id, streamFor(up.out, u.streamID()), b)
		}
	}
	m.closeIdleUps(g)
}

// closeIdleUps closes the upstreams of a draining gNB that no longer carry
// UEs and forgets the gNB once none is left.
func (m *Machine) closeIdleUps(g *gnb) {
	left := 0
	for i, id := range g.ups {
		u := m.ups[id]
		if u == nil {
			continue
		}
		if u.ues > 0 && u.state == upReady {
			left++
			continue
		}
		m.closeUp(u)
		g.ups[i] = 0
	}
	if left == 0 {
		delete(m.gnbs, g.id)
	}
}

func (m *Machine) closeUp(u *upstream) {
	for _, x := range m.uesOf(u.gnb, u.id) {
		m.removeUE(x)
	}
	if u.state != upDown {
		m.out = append(m.out, Action{Kind: Close, Assoc: u.id})
	}
	delete(m.ups, u.id)
}

// dropGNB forgets a gNB at once (drain deadline passed, or ID reuse).
func (m *Machine) dropGNB(g *gnb) {
	for _, u := range m.uesOf(g.id, 0) {
		m.removeUE(u)
	}
	for _, id := range g.ups {
		if u := m.ups[id]; u != nil {
			m.closeUp(u)
		}
	}
	delete(m.gnbs, g.id)
}

// uesOf lists the UEs of gNB g (and of upstream up when non-zero). It scans
// every record: association losses are rare next to per-message lookups,
// and a per-association list would cost memory on every UE.
func (m *Machine) uesOf(g AssocID, up AssocID) []*ue {
	seen := map[*ue]bool{}
	var out []*ue
	add := func(u *ue) {
		if u.gnb == g && (up == 0 || u.up == up) && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	for _, u := range m.byRAN {
		add(u)
	}
	for _, u := range m.byAMF {
		add(u)
	}
	return out
}

// --- AMF side ---

func (m *Machine) amfUp(e AMFUp) {
	u, ok := m.ups[e.Assoc]
	if !ok || u.state != upDialing {
		m.out = append(m.out, Action{Kind: Close, Assoc: e.Assoc})
		return
	}
	g := m.gnbs[u.gnb]
	if g == nil || g.state == gnbDraining || g.setupReq == nil {
		m.closeUp(u)
		return
	}
	u.out, u.state = e.OutStreams, upSettingUp
	m.log.Info("AMF association up", "assoc", u.id, "amf", m.cfg.AMFs[u.amf].Name, "gnb", g.id)
	m.send(u.id, 0, g.setupReq)
}

func (m *Machine) amfDown(id AssocID) {
	u, ok := m.ups[id]
	if !ok || u.state == upDown {
		return
	}
	g := m.gnbs[u.gnb]
	m.log.Warn("AMF association down", "assoc", id, "amf", m.cfg.AMFs[u.amf].Name, "gnb", u.gnb)
	wasReady := u.state == upReady
	u.state = upDown
	u.retryAt = m.now.Add(u.backoff)
	u.backoff = min(2*u.backoff, m.cfg.RedialMax)
	if g == nil {
		delete(m.ups, id)
		return
	}
	if g.state == gnbDraining {
		m.closeUp(u)
		m.closeIdleUps(g)
		return
	}
	m.releaseLost(g, u)
	if wasReady && g.state == gnbReady {
		m.announceUnavailable(g, u)
	}
	if g.state == gnbSetupPending {
		m.maybeAnswerSetup(g)
	}
}

// releaseLost handles the UEs of an AMF association that is gone. UEs the
// AMF never answered are re-steered to another AMF (their Initial UE Message
// is replayed, the UE notices nothing). Established UEs are released toward
// the gNB with UE Context Release Command (TS 38.413 8.3.3, cause
// transport-resource-unavailable): from the gNB's side its AMF (the proxy)
// releases them, the gNB frees radio resources and answers Release Complete,
// which the proxy absorbs; each UE comes back with a new Initial UE Message
// carrying its 5G-S-TMSI and lands on an AMF of its set. Other AMFs' UEs are
// untouched.
func (m *Machine) releaseLost(g *gnb, lost *upstream) {
	cause := ngapl.Cause(ngapType.CausePresentTransport, ngapType.CauseTransportPresentTransportResourceUnavailable)
	for _, u := range m.uesOf(g.id, lost.id) {
		if data, pending := m.initial[u]; pending {
			k, err := m.dec.Key(data)
			if err == nil {
				if up := m.pickAMF(g, k, lost.amf); up != nil {
					m.detach(u)
					m.attach(u, up)
					m.send(up.id, streamFor(up.out, uint64(u.ran)), data)
					continue
				}
			}
			m.fail("no AMF to re-steer UE", "ran", u.ran)
			m.removeUE(u)
			m.errorIndication(g.id, nil, &u.ran, cause)
			continue
		}
		if u.flags&ueHasRAN == 0 || u.flags&ueHasAMF == 0 {
			m.removeUE(u)
			continue
		}
		ran := u.ran
		b, ok := m.build(ngapl.UEContextReleaseCommand(u.amfID, &ran, cause))
		// Orphaned: out of the AMF index and counts, kept by RAN ID only.
		if k := akey(int(u.amf), u.gnb, u.amfID); m.byAMF[k] == u {
			delete(m.byAMF, k)
		}
		m.detach(u)
		u.flags = (u.flags | ueOrphan) &^ ueHasAMF
		u.up = 0
		if ok {
			m.send(g.id, streamFor(g.out, uint64(ran)), b)
		}
	}
}

// announceUnavailable tells the gNB (AMF Status Indication) that the GUAMIs
// only the lost AMF served are gone, so it stops steering UEs at them.
func (m *Machine) announceUnavailable(g *gnb, lost *upstream) {
	still := map[ngapl.GUAMI]bool{}
	for _, u := range m.readyUps(g) {
		for _, it := range u.resp.Served {
			if x, err := ngapl.GUAMIOf(&it.GUAMI); err == nil {
				still[x] = true
			}
		}
	}
	var gone []ngapType.GUAMI
	for _, it := range lost.resp.Served {
		if x, err := ngapl.GUAMIOf(&it.GUAMI); err == nil && !still[x] {
			gone = append(gone, it.GUAMI)
			delete(g.served, x)
		}
	}
	if len(gone) == 0 {
		return
	}
	if b, ok := m.build(ngapl.AMFStatusIndication(gone)); ok {
		m.send(g.id, 0, b)
	}
}

func (m *Machine) fromAMF(e AMFMessage) {
	u, ok := m.ups[e.Assoc]
	if !ok || u.state == upDown || u.state == upDialing {
		m.fail("unknown AMF association", "assoc", e.Assoc)
		return
	}
	g := m.gnbs[u.gnb]
	if g == nil {
		m.closeUp(u)
		return
	}
	k, pdu, err := m.decode(e.Data)
	if errors.Is(err, ngapl.ErrUnknownMessage) {
		m.unknownMessage(u.id, Downlink, k)
		return
	}
	if err != nil {
		m.out = append(m.out, Action{Kind: Malformed, Assoc: e.Assoc, Dir: Downlink})
		m.warn("malformed NGAP from AMF", "assoc", e.Assoc, "amf", m.cfg.AMFs[u.amf].Name, "err", err)
		m.errorIndication(u.id, nil, nil, ngapl.Cause(ngapType.CausePresentProtocol, ngapType.CauseProtocolPresentTransferSyntaxError))
		return
	}
	m.out = append(m.out, Action{Kind: CountMessage, Procedure: k.Procedure, Dir: Downlink})
	if !m.validate(u.id, Downlink, k) {
		return
	}
	if g.state == gnbDraining {
		m.drainingDownlink(g, u, k)
		return
	}
	if k.UEAssociated {
		m.downlinkUE(g, u, k, e.Data)
		return
	}
	m.downlinkNonUE(g, u, k, pdu, e.Data)
}

func (m *Machine) downlinkNonUE(g *gnb, u *upstream, k ngapl.Key, pdu *ngapType.NGAPPDU, data []byte) {
	switch {
	case k.Procedure == ngapType.ProcedureCodeNGSetup:
		m.setupAnswer(g, u, k, pdu)
	case u.state != upReady:
		m.fail("AMF message before NG Setup", "assoc", u.id, "procedure", ngapl.ProcedureName(k.Procedure))
	case k.Procedure == ngapType.ProcedureCodeAMFConfigurationUpdate && k.Type == ngapl.Initiating:
		upd, err := ngapl.ParseSetupResponse(pdu)
		if err != nil {
			m.fail("bad AMF Configuration Update", "err", err)
			return
		}
		if upd.AMFName != "" {
			u.resp.AMFName = upd.AMFName
		}
		if len(upd.Served) > 0 {
			u.resp.Served = upd.Served
			clear(u.unavailable)
		}
		if upd.HasCapacity {
			u.resp.Capacity, u.resp.HasCapacity = upd.Capacity, true
		}
		if len(upd.PLMNSupport) > 0 {
			u.resp.PLMNSupport = upd.PLMNSupport
		}
		if b, ok := m.build(ngapl.AMFConfigurationUpdateAcknowledge()); ok {
			m.send(u.id, 0, b)
		}
		m.updateGNBView(g)
	case k.Procedure == ngapType.ProcedureCodeAMFStatusIndication:
		gone, err := ngapl.ParseAMFStatusIndication(pdu)
		if err != nil {
			m.fail("bad AMF Status Indication", "err", err)
			return
		}
		for _, x := range gone {
			u.unavailable[x] = true
			delete(g.served, x)
		}
		m.send(g.id, 0, data)
	case k.Procedure == ngapType.ProcedureCodeNGReset && k.Type == ngapl.Initiating:
		m.resetFromAMF(g, u, pdu, data)
	case k.Procedure == ngapType.ProcedureCodeNGReset, k.Procedure == ngapType.ProcedureCodeRANConfigurationUpdate:
		// Answers to requests the proxy fanned out and already answered.
	case k.Procedure == ngapType.ProcedureCodeOverloadStart:
		// Overload of one AMF must not throttle the gNB for all of them:
		// the proxy stops steering new UEs there instead.
		m.overloadStart(u, k)
	case k.Procedure == ngapType.ProcedureCodeOverloadStop:
		m.overloadStop(u)
	case k.Procedure == ngapType.ProcedureCodeErrorIndication:
		m.warn("non-UE Error Indication from AMF", "assoc", u.id, "amf", m.cfg.AMFs[u.amf].Name)
	case k.Type == ngapl.Initiating:
		// Paging, PWS, configuration transfer, NRPPa: the AMF addressed this
		// gNB by using its association.
		if k.Procedure == ngapType.ProcedureCodeWriteReplaceWarning || k.Procedure == ngapType.ProcedureCodePWSCancel {
			q := append(g.pending[k.Procedure], u.amf)
			if len(q) > maxPendingAnswers {
				// A gNB that never answers must not grow this without bound.
				q = q[len(q)-maxPendingAnswers:]
			}
			g.pending[k.Procedure] = q
		}
		m.send(g.id, 0, data)
	default:
		m.fail("unsolicited non-UE answer from AMF", "procedure", ngapl.ProcedureName(k.Procedure))
	}
}

func (m *Machine) setupAnswer(g *gnb, u *upstream, k ngapl.Key, pdu *ngapType.NGAPPDU) {
	if u.state == upReady && g.state == gnbReady {
		// The answer to a repeated NG Setup the proxy forwarded.
		if k.Type != ngapl.Successful {
			m.warn("AMF refused a repeated NG Setup", "amf", m.cfg.AMFs[u.amf].Name, "gnb", g.id)
			// Its AMFDown releases what it held, as for any lost AMF.
			m.out = append(m.out, Action{Kind: Close, Assoc: u.id})
			return
		}
		if resp, err := ngapl.ParseSetupResponse(pdu); err == nil {
			u.resp = resp
			m.updateGNBView(g)
		}
		return
	}
	if u.state != upSettingUp {
		m.fail("unexpected NG Setup answer", "assoc", u.id)
		return
	}
	if k.Type != ngapl.Successful {
		m.warn("AMF refused NG Setup", "amf", m.cfg.AMFs[u.amf].Name, "gnb", g.id)
		m.out = append(m.out, Action{Kind: Close, Assoc: u.id})
		u.state = upDown
		u.retryAt = m.now.Add(u.backoff)
		u.backoff = min(2*u.backoff, m.cfg.RedialMax)
		if g.state == gnbSetupPending {
			m.maybeAnswerSetup(g)
		}
		return
	}
	resp, err := ngapl.ParseSetupResponse(pdu)
	if err != nil {
		m.fail("bad NG Setup Response", "err", err)
		return
	}
	u.resp, u.state, u.backoff = resp, upReady, m.cfg.RedialMin
	clear(u.unavailable)
	switch g.state {
	case gnbSetupPending:
		if g.answerBy.IsZero() {
			g.answerBy = m.now.Add(m.cfg.SetupWait)
		}
		m.maybeAnswerSetup(g)
	case gnbReady:
		// A late or returning AMF: bring it up to date and widen the gNB's view.
		if g.ranCfg != nil {
			m.send(u.id, 0, g.ranCfg)
		}
		m.updateGNBView(g)
	}
}

// maybeAnswerSetup answers a pending gNB NG Setup once every AMF answered
// (or failed), or when the timers in tick expire.
func (m *Machine) maybeAnswerSetup(g *gnb) {
	for _, id := range g.ups {
		if u := m.ups[id]; u != nil && (u.state == upDialing || u.state == upSettingUp) {
			return
		}
	}
	m.answerSetup(g)
}

func (m *Machine) answerSetup(g *gnb) {
	merged, ok := m.merged(g)
	if !ok {
		m.log.Warn("no AMF accepted the gNB, NG Setup Failure", "gnb", g.id)
		if b, ok := m.build(ngapl.NGSetupFailure(ngapl.Cause(ngapType.CausePresentMisc, ngapType.CauseMiscPresentUnspecified), int(ngapType.TimeToWaitPresentV10s))); ok {
			m.send(g.id, 0, b)
		}
		g.state = gnbConnected
		return
	}
	b, ok := m.build(ngapl.NGSetupResponse(merged))
	if !ok {
		return
	}
	g.state = gnbReady
	g.served = guamiSet(merged.Served)
	m.send(g.id, 0, b)
}

// updateGNBView sends the gNB an AMF Configuration Update when the merged
// set of served GUAMIs grew or changed, so returning AMFs become eligible
// for GUAMI-based selection again.
func (m *Machine) updateGNBView(g *gnb) {
	merged, ok := m.merged(g)
	if !ok {
		return
	}
	now := guamiSet(merged.Served)
	if sameSet(now, g.served) {
		return
	}
	g.served = now
	merged.AMFName = ""
	if b, ok := m.build(ngapl.AMFConfigurationUpdate(merged)); ok {
		m.send(g.id, 0, b)
	}
}

// merged is the NG Setup Response the gNB sees: the union of served GUAMIs
// and of PLMN support (slices merged per PLMN) of every ready AMF, and their
// relative capacities summed and capped at 255.
func (m *Machine) merged(g *gnb) (ngapl.SetupResponse, bool) {
	ups := m.readyUps(g)
	if len(ups) == 0 {
		return ngapl.SetupResponse{}, false
	}
	r := ngapl.SetupResponse{AMFName: m.cfg.ProxyName, HasCapacity: true}
	seen := map[ngapl.GUAMI]bool{}
	plmnIdx := map[string]int{}
	for _, u := range ups {
		for _, it := range u.resp.Served {
			x, err := ngapl.GUAMIOf(&it.GUAMI)
			if err != nil || seen[x] {
				continue
			}
			seen[x] = true
			r.Served = append(r.Served, it)
		}
		r.Capacity = min(r.Capacity+u.resp.Capacity, 255)
		for _, p := range u.resp.PLMNSupport {
			key := string(p.PLMNIdentity.Value)
			i, ok := plmnIdx[key]
			if !ok {
				plmnIdx[key] = len(r.PLMNSupport)
				cp := p
				cp.SliceSupportList.List = append([]ngapType.SliceSupportItem(nil), p.SliceSupportList.List...)
				r.PLMNSupport = append(r.PLMNSupport, cp)
				continue
			}
			for _, s := range p.SliceSupportList.List {
				if !hasSlice(r.PLMNSupport[i].SliceSupportList.List, s) {
					r.PLMNSupport[i].SliceSupportList.List = append(r.PLMNSupport[i].SliceSupportList.List, s)
				}
			}
		}
	}
	if len(r.Served) == 0 || len(r.PLMNSupport) == 0 {
		return ngapl.SetupResponse{}, false
	}
	return r, true
}

func hasSlice(l []ngapType.SliceSupportItem, s ngapType.SliceSupportItem) bool {
	for _, x := range l {
		if bytes.Equal(x.SNSSAI.SST.Value, s.SNSSAI.SST.Value) && (x.SNSSAI.SD == nil) == (s.SNSSAI.SD == nil) &&
			(x.SNSSAI.SD == nil || bytes.Equal(x.SNSSAI.SD.Value, s.SNSSAI.SD.Value)) {
			return true
		}
	}
	return false
}

func guamiSet(l []ngapType.ServedGUAMIItem) map[ngapl.GUAMI]bool {
	s := map[ngapl.GUAMI]bool{}
	for _, it := range l {
		if x, err := ngapl.GUAMIOf(&it.GUAMI); err == nil {
			s[x] = true
		}
	}
	return s
}

func sameSet(a, b map[ngapl.GUAMI]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func (m *Machine) downlinkUE(g *gnb, up *upstream, k ngapl.Key, data []byte) {
	if up.state != upReady {
		m.fail("AMF message before NG Setup", "assoc", up.id)
		return
	}
	if k.Procedure == ngapType.ProcedureCodeRerouteNASRequest {
		m.reroute(g, up, k, data)
		return
	}
	var u *ue
	if k.HasRANUEID {
		u = m.byRAN[ranKey{g.id, k.RANUEID}]
		if u != nil && u.up != up.id {
			// Not this AMF's UE: forward (the gNB judges) but learn nothing.
			m.warn("AMF names a UE steered elsewhere", "amf", m.cfg.AMFs[up.amf].Name, "ran", k.RANUEID)
			u = nil
		}
	} else if k.HasAMFUEID {
		if x := m.byAMF[akey(up.amf, g.id, k.AMFUEID)]; x != nil {
			u = x
		}
	}
	if u == nil && k.HasAMFUEID && !k.HasRANUEID &&
		k.Procedure == ngapType.ProcedureCodeHandoverResourceAllocation && k.Type == ngapl.Initiating {
		// Handover Request toward a target gNB: the UE exists here first
		// under its AMF-UE-NGAP-ID; the acknowledge brings the RAN ID.
		u = &ue{gnb: g.id, amfID: k.AMFUEID, flags: ueHasAMF}
		m.attach(u, up)
		m.byAMF[akey(up.amf, g.id, u.amfID)] = u
	}
	if u != nil && k.HasAMFUEID && (u.flags&ueHasAMF == 0 || u.amfID != k.AMFUEID) {
		if u.flags&ueHasAMF != 0 {
			if old := akey(up.amf, g.id, u.amfID); m.byAMF[old] == u {
				delete(m.byAMF, old)
			}
		}
		u.amfID, u.flags = k.AMFUEID, u.flags|ueHasAMF
		m.bindAMF(u, akey(up.amf, g.id, u.amfID))
		delete(m.initial, u)
	}
	id := uint64(k.RANUEID)
	if u != nil {
		id = u.streamID()
	} else if !k.HasRANUEID {
		id = k.AMFUEID
	}
	m.send(g.id, streamFor(g.out, id), data)
}

// drainingDownlink answers, for a lost gNB, the AMF's UE Context Release
// Commands that follow the proxy's UE Context Release Requests.
func (m *Machine) drainingDownlink(g *gnb, up *upstream, k ngapl.Key) {
	if k.Procedure != ngapType.ProcedureCodeUEContextRelease || k.Type != ngapl.Initiating || !k.HasAMFUEID {
		return
	}
	u := m.byAMF[akey(up.amf, g.id, k.AMFUEID)]
	if u == nil {
		return
	}
	if b, ok := m.build(ngapl.UEContextReleaseComplete(u.amfID, u.ran)); ok {
		m.send(up.id, streamFor(up.out, u.streamID()), b)
	}
	m.removeUE(u)
	if up.ues == 0 {
		m.closeIdleUps(g)
	}
}

// --- NG Reset ---

// resetFromGNB: a full reset is fanned out to every AMF; a partial one is
// split by owner, each AMF getting only its own connections. The proxy
// acknowledges the gNB itself once its records are gone and absorbs the
// AMFs' acknowledgements.
func (m *Machine) resetFromGNB(g *gnb, pdu *ngapType.NGAPPDU, data []byte) {
	full, items, err := ngapl.ParseNGReset(pdu)
	if err != nil {
		m.fail("bad NG Reset", "err", err)
		return
	}
	cause := ngapl.Cause(ngapType.CausePresentMisc, ngapType.CauseMiscPresentUnspecified)
	if full {
		for _, u := range m.readyUps(g) {
			m.send(u.id, 0, data)
		}
		for _, u := range m.uesOf(g.id, 0) {
			m.removeUE(u)
		}
		if b, ok := m.build(ngapl.NGResetAcknowledge(nil)); ok {
			m.send(g.id, 0, b)
		}
		return
	}
	split := map[AssocID][]ngapl.ConnItem{}
	for _, it := range items {
		var u *ue
		if it.HasRANUEID {
			u = m.byRAN[ranKey{g.id, it.RANUEID}]
		}
		if u == nil && it.HasAMFUEID {
			u = m.uniqueByAMF(g, it.AMFUEID)
		}
		if u == nil {
			continue
		}
		if u.flags&ueOrphan == 0 && u.up != 0 {
			split[u.up] = append(split[u.up], ngapl.ConnItem{
				HasAMFUEID: u.flags&ueHasAMF != 0, AMFUEID: u.amfID,
				HasRANUEID: u.flags&ueHasRAN != 0, RANUEID: u.ran,
			})
		}
		m.removeUE(u)
	}
	for _, id := range g.ups {
		if l := split[id]; len(l) > 0 && m.ups[id] != nil && m.ups[id].state == upReady {
			if b, ok := m.build(ngapl.NGReset(cause, l)); ok {
				m.send(id, 0, b)
			}
		}
	}
	if b, ok := m.build(ngapl.NGResetAcknowledge(items)); ok {
		m.send(g.id, 0, b)
	}
}

// resetFromAMF: a full reset from one AMF must not touch other AMFs' UEs on
// the gNB, so it becomes a partial reset listing that AMF's UEs. The proxy
// acknowledges the AMF itself and absorbs the gNB's acknowledgement.
func (m *Machine) resetFromAMF(g *gnb, up *upstream, pdu *ngapType.NGAPPDU, data []byte) {
	full, items, err := ngapl.ParseNGReset(pdu)
	if err != nil {
		m.fail("bad NG Reset", "err", err)
		return
	}
	var ack []ngapl.ConnItem
	if full {
		var list []ngapl.ConnItem
		for _, u := range m.uesOf(g.id, up.id) {
			if u.flags&ueHasRAN != 0 {
				list = append(list, ngapl.ConnItem{HasAMFUEID: u.flags&ueHasAMF != 0, AMFUEID: u.amfID, HasRANUEID: true, RANUEID: u.ran})
			}
			m.removeUE(u)
		}
		for len(list) > 0 {
			n := min(len(list), 65536)
			if b, ok := m.build(ngapl.NGReset(ngapl.Cause(ngapType.CausePresentMisc, ngapType.CauseMiscPresentUnspecified), list[:n])); ok {
				m.send(g.id, 0, b)
			}
			list = list[n:]
		}
	} else {
		for _, it := range items {
			var u *ue
			if it.HasAMFUEID {
				if x := m.byAMF[akey(up.amf, g.id, it.AMFUEID)]; x != nil {
					u = x
				}
			}
			if u == nil && it.HasRANUEID {
				if x := m.byRAN[ranKey{g.id, it.RANUEID}]; x != nil && x.up == up.id {
					u = x
				}
			}
			if u != nil {
				m.removeUE(u)
			}
		}
		ack = items
		m.send(g.id, 0, data)
	}
	if b, ok := m.build(ngapl.NGResetAcknowledge(ack)); ok {
		m.send(up.id, 0, b)
	}
}

// --- timers ---

func (m *Machine) tick() {
	for _, g := range m.gnbs {
		switch g.state {
		case gnbSetupPending:
			if !m.now.Before(g.deadline) || (!g.answerBy.IsZero() && !m.now.Before(g.answerBy)) {
				m.answerSetup(g)
			}
		case gnbDraining:
			if !m.now.Before(g.deadline) {
				m.dropGNB(g)
			}
		}
	}
	for _, u := range m.ups {
		if u.state == upDown && !m.now.Before(u.retryAt) {
			m.redial(u)
		}
	}
}

// --- AMFs added and removed at run time ---

func (m *Machine) addAMF(a AMF) {
	if a.Name == "" || a.Weight < 0 {
		m.fail("AMF added without a name or with a negative weight", "name", a.Name)
		return
	}
	idx := -1
	for i, x := range m.cfg.AMFs {
		if x.Name != a.Name {
			continue
		}
		if !m.retired[i] {
			m.fail("AMF added twice", "name", a.Name)
			return
		}
		idx = i
	}
	if idx < 0 {
		if len(m.cfg.AMFs) >= 1<<15 {
			m.fail("too many AMFs", "name", a.Name)
			return
		}
		idx = len(m.cfg.AMFs)
		m.cfg.AMFs = append(m.cfg.AMFs, a)
		m.amfUEs = append(m.amfUEs, 0)
		m.wrr = append(m.wrr, 0)
		m.retired = append(m.retired, false)
		for _, g := range m.gnbs {
			g.ups = append(g.ups, 0)
		}
	}
	m.cfg.AMFs[idx], m.retired[idx], m.wrr[idx] = a, false, 0
	m.log.Info("AMF added", "amf", a.Name, "index", idx)
	for _, g := range m.gnbs {
		if g.state != gnbDraining && g.setupReq != nil {
			m.dial(g, idx, m.cfg.RedialMin)
		}
	}
}

func (m *Machine) removeAMF(name string) {
	idx := -1
	for i, x := range m.cfg.AMFs {
		if x.Name == name && !m.retired[i] {
			idx = i
		}
	}
	if idx < 0 {
		m.fail("removed AMF is not configured", "name", name)
		return
	}
	active := 0
	for _, r := range m.retired {
		if !r {
			active++
		}
	}
	if active == 1 {
		m.fail("refusing to remove the last AMF", "name", name)
		return
	}
	m.retired[idx] = true
	m.log.Info("AMF removed", "amf", name, "index", idx)
	for _, g := range m.gnbs {
		u := m.ups[g.ups[idx]]
		g.ups[idx] = 0
		if u == nil {
			continue
		}
		wasReady := u.state == upReady
		if g.state != gnbDraining {
			m.releaseLost(g, u)
		}
		// Closed before the announcement, so its GUAMIs no longer count as
		// served by a ready association.
		m.closeUp(u)
		switch {
		case g.state == gnbDraining:
			m.closeIdleUps(g)
		case wasReady && g.state == gnbReady:
			m.announceUnavailable(g, u)
		case g.state == gnbSetupPending:
			m.maybeAnswerSetup(g)
		}
	}
}
