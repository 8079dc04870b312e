package steer

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb/abort"
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
	id AssocID
	// name is the gNB's Global RAN Node ID from its NG Setup Request
	// (ngapl.RANNodeID), "" before one was read.
	name     string
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
	// retained: UEs imported from a peer proxy were adopted for this gNB
	// and an AMF kept them; its NG Setup Response says "ues-retained".
	retained bool
	// abortT names the association for a peer's takeover ABORT (GNBUp).
	abortT abort.Target
	// adoptBy is when UEs adopted for this gNB that no AMF confirmed yet
	// are given up (adopt.go); zero when none wait.
	adoptBy time.Time
	// releaseOnAnswer are the RAN-UE-NGAP-IDs of adopted UEs given up
	// before the gNB's NG Setup Response: released toward the gNB once
	// that response says "ues-retained" (adopt.go).
	releaseOnAnswer []uint32
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
	// ueAdopted: imported from a peer proxy (replicate.go) and not yet
	// confirmed by its AMF's NG Setup Response with "ues-retained".
	ueAdopted
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
	// held are uplink messages of adopted UEs whose AMF association is not
	// ready yet, sent once their AMF confirms them (adopt.go); heldN
	// counts them against maxHeld.
	held    map[*ue][][]byte
	heldN   int
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
	rep       *replication // nil unless Config.Replicate
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
	var rep *replication
	if cfg.Replicate {
		rep = newReplication()
	}
	return &Machine{
		rep:     rep,
		cfg:     cfg,
		log:     cfg.Logger,
		dec:     ngapl.NewDecoder(ngapl.DecoderConfig{}),
		gnbs:    map[AssocID]*gnb{},
		ups:     map[AssocID]*upstream{},
		byRAN:   map[ranKey]*ue{},
		byAMF:   map[amfKey]*ue{},
		initial: map[*ue][]byte{},
		held:    map[*ue][][]byte{},
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
				continue
			}
		}
		if !g.adoptBy.IsZero() && !m.now.Before(g.adoptBy) {
			m.expireAdopted(g)
		}
	}
	for _, u := range m.ups {
		if u.state == upDown && !m.now.Before(u.retryAt) {
			m.redial(u)
		}
	}
}
