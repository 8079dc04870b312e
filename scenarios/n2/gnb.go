package n2

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb/transport"
)

// GNBConfig configures a gNB simulator.
type GNBConfig struct {
	Name      string
	Transport transport.Transport
	// Remote is the N2 endpoint (the proxy's VIP); Local the source
	// addresses (none: any).
	Remote transport.Endpoint
	Local  []netip.Addr
	GNBID  uint32
	// UEs is how many UEs the gNB serves; RANBase is added to their
	// RAN-UE-NGAP-IDs so two gNBs' IDs differ in captures.
	UEs     int
	RANBase uint32
	// SetID is the AMF Set the UEs' 5G-S-TMSIs name.
	SetID uint16
	// Parallel bounds the UEs in a procedure at once (default 32).
	Parallel int
	// Wait bounds each expected answer (default 10s).
	Wait time.Duration
	// RetainUEs sends NG Setup Request with UE Retention Information
	// "ues-retained" (a gNB reconnecting after the loss of its NG
	// association, its UE contexts kept); Retained reports the answer.
	RetainUEs bool
	Logger    *slog.Logger
}

// UEResult is one UE's story as its gNB saw it. AMF pointers come from
// the AMF-UE-NGAP-IDs (see the package comment).
type UEResult struct {
	Index      int    `json:"index"`
	RANUEID    uint32 `json:"ranUeId"`
	AMFUEID    uint64 `json:"amfUeId"`
	RegPointer uint8  `json:"regPointer"`
	Registered bool   `json:"registered"`
	// UplinkPointer is the AMF that answered the uplink NAS of the second
	// phase (or of Resume); UplinkAMFUEID the AMF-UE-NGAP-ID of that answer,
	// UplinkSentNs when it was sent and UplinkAtNs when the answer arrived
	// (Unix nanoseconds; Resume only: the HA lab measures the failover gap
	// with them).
	UplinkPointer   int    `json:"uplinkPointer"`
	UplinkAMFUEID   uint64 `json:"uplinkAmfUeId,omitempty"`
	UplinkSentNs    int64  `json:"uplinkSentNs,omitempty"`
	UplinkAtNs      int64  `json:"uplinkAtNs,omitempty"`
	NetworkReleased bool   `json:"networkReleased"`
	Paged           bool   `json:"paged"`
	// Service request with the 5G-S-TMSI: its RAN-UE-NGAP-ID and the AMF
	// that took it.
	SRRANUEID  uint32 `json:"srRanUeId"`
	SRAMFUEID  uint64 `json:"srAmfUeId"`
	SRPointer  int    `json:"srPointer"`
	SRComplete bool   `json:"srComplete"`
	Error      string `json:"error,omitempty"`
}

// GNBReport is what a gNB prints at the end.
type GNBReport struct {
	Name              string     `json:"name"`
	UEs               []UEResult `json:"ues"`
	Pages             int        `json:"pages"`
	UnknownPages      int        `json:"unknownPages"`
	StatusIndications int        `json:"statusIndications"`
	Errors            []string   `json:"errors,omitempty"`
}

type inbound struct {
	key  ngapl.Key
	data []byte
	// at is when the receive loop read the message off the association
	// (the UE's goroutine may run later on a loaded machine).
	at time.Time
}

type simUE struct {
	res     UEResult
	in      chan inbound
	tmsi    uint32
	ran     uint32
	amf     uint64
	waitRel bool
	// uplink is the Uplink NAS Transport Resume sends, built beforehand by
	// PrepareResume (nil: built when sent).
	uplink []byte
}

// GNB simulates a gNB with UEs over one N2 association.
type GNB struct {
	cfg  GNBConfig
	log  *slog.Logger
	conn transport.Conn

	mu      sync.Mutex
	byRAN   map[uint32]*simUE
	byTMSI  map[uint64]*simUE
	nextRAN uint32
	ues     []*simUE
	rep     GNBReport
	// retained: the last NG Setup Response said "ues-retained".
	retained bool
	// lost is closed when the receive loop of the current association
	// ends on an error (the association is gone), not on ctx's end.
	lost chan struct{}

	// counting makes the receive loop count Downlink NAS Transports
	// (Blast) instead of handing them to their UE.
	counting atomic.Bool
	answered atomic.Int64
}

// NewGNB checks cfg.
func NewGNB(cfg GNBConfig) (*GNB, error) {
	if cfg.Transport == nil {
		return nil, errors.New("gnb: no transport")
	}
	if len(cfg.Remote.Addrs) == 0 || cfg.Remote.Port == 0 {
		return nil, errors.New("gnb: remote address and port required")
	}
	if cfg.UEs < 0 || cfg.UEs > 1<<20 {
		return nil, fmt.Errorf("gnb: %d UEs, want 0..%d", cfg.UEs, 1<<20)
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 32
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.GNBID == 0 {
		cfg.GNBID = 1
	}
	g := &GNB{cfg: cfg, log: cfg.Logger, byRAN: map[uint32]*simUE{}, byTMSI: map[uint64]*simUE{}, nextRAN: cfg.RANBase, rep: GNBReport{Name: cfg.Name}}
	for i := 0; i < cfg.UEs; i++ {
		g.ues = append(g.ues, &simUE{res: UEResult{Index: i, UplinkPointer: -1, SRPointer: -1}, in: make(chan inbound, 16)})
	}
	return g, nil
}

func (g *GNB) location() ngapl.Location {
	return ngapl.Location{PLMN: PLMN, TAC: TAC, CellID: uint64(g.cfg.GNBID)<<4 | 1}
}

// Connect sets up the association and completes NG Setup; the receive
// loop then runs until ctx ends.
func (g *GNB) Connect(ctx context.Context) error {
	return g.dialSetup(ctx, ctx)
}

// dialSetup dials and runs NG Setup within ctx; the receive loop runs
// until loopCtx ends. A failed attempt closes its association.
func (g *GNB) dialSetup(loopCtx, ctx context.Context) (err error) {
	c, err := g.cfg.Transport.Dial(ctx, g.cfg.Local, g.cfg.Remote)
	if err != nil {
		return fmt.Errorf("gnb %s: dial %v: %w", g.cfg.Name, g.cfg.Remote, err)
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	g.conn = c
	lost := make(chan struct{})
	g.mu.Lock()
	g.lost = lost
	g.mu.Unlock()
	req, err := ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: PLMN, GNBID: g.cfg.GNBID, GNBIDBits: 22, Name: g.cfg.Name, TACs: []uint32{TAC}, Slices: []ngapl.SNSSAI{{SST: 1}}, UEsRetained: g.cfg.RetainUEs})
	if err != nil {
		return fmt.Errorf("gnb %s: %w", g.cfg.Name, err)
	}
	if err := c.Send(ctx, transport.Message{Stream: 0, PPID: ngapl.PPID, Data: req}); err != nil {
		return fmt.Errorf("gnb %s: send NG Setup: %w", g.cfg.Name, err)
	}
	wctx, cancel := context.WithTimeout(ctx, g.cfg.Wait)
	defer cancel()
	for {
		m, err := c.Recv(wctx)
		if err != nil {
			return fmt.Errorf("gnb %s: waiting for NG Setup Response: %w", g.cfg.Name, err)
		}
		k, pdu, err := ngapl.Decode(m.Data)
		if err != nil {
			return fmt.Errorf("gnb %s: NG Setup answer: %w", g.cfg.Name, err)
		}
		if k.Procedure != ngapType.ProcedureCodeNGSetup {
			continue
		}
		if k.Type != ngapl.Successful {
			return fmt.Errorf("gnb %s: NG Setup failed (%v)", g.cfg.Name, k.Type)
		}
		resp, err := ngapl.ParseSetupResponse(pdu)
		if err != nil {
			return fmt.Errorf("gnb %s: NG Setup Response: %w", g.cfg.Name, err)
		}
		g.mu.Lock()
		g.retained = g.cfg.RetainUEs && resp.UEsRetained
		g.mu.Unlock()
		break
	}
	go g.recvLoop(loopCtx, c, lost)
	return nil
}

// Lost is closed when the association Connect set up is lost (nil before
// Connect).
func (g *GNB) Lost() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lost
}

// Reconnect sets up a new association after the loss of the previous one
// and asks for UE retention in its NG Setup Request, as a gNB that kept
// its UE contexts does (TS 38.413 8.7.1). It tries until within has
// passed: the address may not answer yet (the VIP is still moving), each
// attempt bounded by try. The UEs keep their RAN-UE-NGAP-IDs.
func (g *GNB) Reconnect(ctx context.Context, within, try time.Duration) error {
	if g.conn != nil {
		_ = g.conn.Close()
	}
	g.cfg.RetainUEs = true
	deadline := time.Now().Add(within)
	for {
		actx, cancel := context.WithTimeout(ctx, try)
		err := g.dialSetup(ctx, actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("gnb %s: reconnect within %v: %w", g.cfg.Name, within, err)
		}
		g.log.Debug("reconnect attempt failed", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Resume sends one Uplink NAS Transport for every UE still registered and
// not released (its contexts retained over a reconnection) and records
// which AMF answered, under which AMF-UE-NGAP-ID, when the uplink was sent
// and when the answer arrived. It neither releases nor re-registers
// anyone. The UEs are independent, as real UEs are: every uplink goes out
// as soon as the gNB is back, back to back from one sender (pipelined, no
// UE waits for another's answer; Parallel does not apply), so the time to
// the last answer is the network's, not this simulator's pacing.
func (g *GNB) Resume(ctx context.Context) {
	var wg sync.WaitGroup
	for _, u := range g.ues {
		g.mu.Lock()
		ok, pdu := u.res.Registered && !u.res.NetworkReleased, u.uplink
		g.mu.Unlock()
		if !ok {
			continue
		}
		var err error
		if pdu == nil {
			pdu, err = ngapl.UplinkNASTransport(u.amf, u.ran, nil, g.location())
		}
		sent := time.Now().UnixNano()
		if err := g.sendPDU(ctx, u, pdu, err); err != nil {
			g.ueFailed(u, fmt.Errorf("resume: %w", err))
			continue
		}
		g.mu.Lock()
		u.res.UplinkSentNs = sent
		g.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := g.expectMsg(ctx, u, ngapType.ProcedureCodeDownlinkNASTransport, ngapl.Initiating)
			if err != nil {
				g.ueFailed(u, fmt.Errorf("resume: uplink NAS: %w", err))
				return
			}
			g.mu.Lock()
			u.res.UplinkPointer, u.res.UplinkAMFUEID, u.res.UplinkAtNs = int(m.key.AMFUEID>>32), m.key.AMFUEID, m.at.UnixNano()
			g.mu.Unlock()
		}()
	}
	wg.Wait()
}

// PrepareResume builds, for every registered UE, the Uplink NAS Transport
// Resume will send, so that after a reconnection the simulator spends its
// CPU on sending, not on ASN.1 encoding (on a loaded machine encoding 500
// of them took longer than the proxy's answers).
func (g *GNB) PrepareResume() error {
	for _, u := range g.ues {
		g.mu.Lock()
		ok, amf, ran := u.res.Registered && !u.res.NetworkReleased, u.amf, u.ran
		g.mu.Unlock()
		if !ok {
			continue
		}
		b, err := ngapl.UplinkNASTransport(amf, ran, nil, g.location())
		if err != nil {
			return fmt.Errorf("gnb %s: ue %d: %w", g.cfg.Name, u.res.Index, err)
		}
		g.mu.Lock()
		u.uplink = b
		g.mu.Unlock()
	}
	return nil
}

// ueFailed records the UE's first error.
func (g *GNB) ueFailed(u *simUE, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if u.res.Error == "" {
		u.res.Error = err.Error()
	}
}

// Close ends the association.
// Retained says whether the last NG Setup Response kept the UE contexts
// ("ues-retained" answered to RetainUEs).
func (g *GNB) Retained() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.retained
}

func (g *GNB) Close() error {
	if g.conn == nil {
		return nil
	}
	return g.conn.Close()
}

func (g *GNB) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	g.log.Warn(msg)
	g.mu.Lock()
	if len(g.rep.Errors) < 50 {
		g.rep.Errors = append(g.rep.Errors, msg)
	}
	g.mu.Unlock()
}

func (g *GNB) recvLoop(ctx context.Context, conn transport.Conn, lost chan struct{}) {
	dec := ngapl.NewDecoder(ngapl.DecoderConfig{})
	for {
		m, err := conn.Recv(ctx)
		at := time.Now()
		if err != nil {
			if ctx.Err() == nil {
				g.fail("association lost: %v", err)
				close(lost)
			}
			return
		}
		k, err := dec.Key(m.Data)
		if err != nil {
			g.fail("undecodable PDU: %v", err)
			continue
		}
		var pdu *ngapType.NGAPPDU
		if k.Procedure == ngapType.ProcedureCodePaging {
			if _, pdu, err = ngapl.Decode(m.Data); err != nil {
				g.fail("undecodable Paging: %v", err)
				continue
			}
		}
		if m.PPID != ngapl.PPID {
			g.fail("PPID %d, want %d", m.PPID, ngapl.PPID)
		}
		if k.UEAssociated == (m.Stream == 0) {
			g.fail("%s on stream %d (UE-associated %v)", ngapl.ProcedureName(k.Procedure), m.Stream, k.UEAssociated)
		}
		switch {
		case k.Procedure == ngapType.ProcedureCodePaging:
			s, ok := pagingSTMSI(pdu)
			g.mu.Lock()
			g.rep.Pages++
			u := g.byTMSI[uint64(s.Pointer)<<32|uint64(s.TMSI)]
			if !ok || u == nil {
				g.rep.UnknownPages++
			}
			g.mu.Unlock()
			if u != nil {
				u.in <- inbound{key: k}
			}
		case k.Procedure == ngapType.ProcedureCodeAMFStatusIndication:
			g.mu.Lock()
			g.rep.StatusIndications++
			g.mu.Unlock()
		case k.UEAssociated && g.counting.Load() && k.Procedure == ngapType.ProcedureCodeDownlinkNASTransport:
			g.answered.Add(1)
		case k.UEAssociated:
			g.mu.Lock()
			u := g.byRAN[k.RANUEID]
			netRelease := u != nil && k.Procedure == ngapType.ProcedureCodeUEContextRelease && k.Type == ngapl.Initiating && !u.waitRel
			if netRelease {
				u.res.NetworkReleased = true
				delete(g.byRAN, k.RANUEID)
			}
			g.mu.Unlock()
			if u == nil {
				g.fail("%s for unknown RAN-UE-NGAP-ID %d", ngapl.ProcedureName(k.Procedure), k.RANUEID)
				continue
			}
			if netRelease {
				// The UE is gone as far as the network is concerned: confirm
				// at once, as a gNB does.
				g.send(ctx, u)(ngapl.UEContextReleaseComplete(k.AMFUEID, k.RANUEID))
				continue
			}
			u.in <- inbound{key: k, data: m.Data, at: at}
		}
	}
}

func pagingSTMSI(pdu *ngapType.NGAPPDU) (ngapl.STMSI, bool) {
	if pdu == nil || pdu.InitiatingMessage == nil || pdu.InitiatingMessage.Value.Paging == nil {
		return ngapl.STMSI{}, false
	}
	for _, ie := range pdu.InitiatingMessage.Value.Paging.ProtocolIEs.List {
		if ie.Id.Value == ngapType.ProtocolIEIDUEPagingIdentity && ie.Value.UEPagingIdentity != nil && ie.Value.UEPagingIdentity.FiveGSTMSI != nil {
			s, err := ngapl.STMSIOf(ie.Value.UEPagingIdentity.FiveGSTMSI)
			return s, err == nil
		}
	}
	return ngapl.STMSI{}, false
}

// send returns the sender of one PDU of u's, so builders' (PDU, error)
// results pass straight in.
func (g *GNB) send(ctx context.Context, u *simUE) func([]byte, error) error {
	return func(b []byte, err error) error { return g.sendPDU(ctx, u, b, err) }
}

func (g *GNB) sendPDU(ctx context.Context, u *simUE, b []byte, err error) error {
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	out := g.conn.OutStreams()
	stream := uint16(1)
	if out > 1 {
		stream = 1 + uint16(u.ran%uint32(out-1))
	}
	if err := g.conn.Send(ctx, transport.Message{Stream: stream, PPID: ngapl.PPID, Data: b}); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// expect waits for the UE's next message of procedure proc and type typ.
func (g *GNB) expect(ctx context.Context, u *simUE, proc int64, typ ngapl.MessageType) (ngapl.Key, error) {
	m, err := g.expectMsg(ctx, u, proc, typ)
	return m.key, err
}

// expectMsg is expect returning the message with its arrival time.
func (g *GNB) expectMsg(ctx context.Context, u *simUE, proc int64, typ ngapl.MessageType) (inbound, error) {
	t := time.NewTimer(g.cfg.Wait)
	defer t.Stop()
	select {
	case m := <-u.in:
		if m.key.Procedure == proc && m.key.Type == typ {
			return m, nil
		}
		return m, fmt.Errorf("got %s (%v), want %s", ngapl.ProcedureName(m.key.Procedure), m.key.Type, ngapl.ProcedureName(proc))
	case <-t.C:
		return inbound{}, fmt.Errorf("no %s within %v", ngapl.ProcedureName(proc), g.cfg.Wait)
	case <-ctx.Done():
		return inbound{}, ctx.Err()
	}
}

// connect runs Initial UE Message (with stmsi when set) up to Initial
// Context Setup Response and returns the AMF-UE-NGAP-ID.
func (g *GNB) connect(ctx context.Context, u *simUE, stmsi *ngapl.STMSI) (uint64, error) {
	g.mu.Lock()
	g.nextRAN++
	u.ran, u.waitRel = g.nextRAN, false
	g.byRAN[u.ran] = u
	g.mu.Unlock()
	if err := g.send(ctx, u)(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: u.ran, Location: g.location(), STMSI: stmsi,
		RRCCause: ngapType.RRCEstablishmentCausePresentMoSignalling})); err != nil {
		return 0, err
	}
	k, err := g.expect(ctx, u, ngapType.ProcedureCodeDownlinkNASTransport, ngapl.Initiating)
	if err != nil {
		return 0, fmt.Errorf("after Initial UE Message: %w", err)
	}
	u.amf = k.AMFUEID
	if err := g.send(ctx, u)(ngapl.UplinkNASTransport(u.amf, u.ran, nil, g.location())); err != nil {
		return 0, err
	}
	if _, err := g.expect(ctx, u, ngapType.ProcedureCodeInitialContextSetup, ngapl.Initiating); err != nil {
		return 0, fmt.Errorf("after Uplink NAS Transport: %w", err)
	}
	if err := g.send(ctx, u)(ngapl.InitialContextSetupResponse(u.amf, u.ran)); err != nil {
		return 0, err
	}
	return u.amf, nil
}

// release runs a gNB-initiated UE Context Release.
func (g *GNB) release(ctx context.Context, u *simUE) error {
	g.mu.Lock()
	u.waitRel = true
	g.mu.Unlock()
	if err := g.send(ctx, u)(ngapl.UEContextReleaseRequest(u.amf, u.ran, ngapl.Cause(ngapType.CausePresentRadioNetwork, ngapType.CauseRadioNetworkPresentUserInactivity))); err != nil {
		return err
	}
	if _, err := g.expect(ctx, u, ngapType.ProcedureCodeUEContextRelease, ngapl.Initiating); err != nil {
		return fmt.Errorf("after UE Context Release Request: %w", err)
	}
	if err := g.send(ctx, u)(ngapl.UEContextReleaseComplete(u.amf, u.ran)); err != nil {
		return err
	}
	g.mu.Lock()
	delete(g.byRAN, u.ran)
	g.mu.Unlock()
	return nil
}

func (g *GNB) each(ctx context.Context, fn func(u *simUE) error) {
	sem := make(chan struct{}, g.cfg.Parallel)
	var wg sync.WaitGroup
	for _, u := range g.ues {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(u); err != nil {
				g.ueFailed(u, err)
			}
		}()
	}
	wg.Wait()
}

// Register brings every UE to CM-CONNECTED: Initial UE Message without
// 5G-S-TMSI, Downlink/Uplink NAS Transport, Initial Context Setup. The UEs
// stay connected.
func (g *GNB) Register(ctx context.Context) {
	g.each(ctx, func(u *simUE) error {
		id, err := g.connect(ctx, u, nil)
		if err != nil {
			return fmt.Errorf("registration: %w", err)
		}
		g.mu.Lock()
		u.res.RANUEID, u.res.AMFUEID, u.res.RegPointer, u.res.Registered = u.ran, id, uint8(id>>32), true
		u.tmsi = uint32(id)
		g.byTMSI[uint64(u.res.RegPointer)<<32|uint64(u.tmsi)] = u
		g.mu.Unlock()
		return nil
	})
}

// RegistrationResult is how Register went: UEs registered, UEs that did
// not (their first errors) and the gNB's own errors so far.
type RegistrationResult struct {
	Registered int      `json:"registered"`
	Failed     int      `json:"failed"`
	UEErrors   []string `json:"ueErrors,omitempty"`
	GNBErrors  []string `json:"gnbErrors,omitempty"`
}

// Registration says how Register went (after it returned).
func (g *GNB) Registration() RegistrationResult {
	g.mu.Lock()
	defer g.mu.Unlock()
	var r RegistrationResult
	for _, u := range g.ues {
		if u.res.Registered {
			r.Registered++
			continue
		}
		r.Failed++
		if len(r.UEErrors) < 5 {
			r.UEErrors = append(r.UEErrors, fmt.Sprintf("ue %d (RAN-UE-NGAP-ID %d): %s", u.res.Index, u.ran, u.res.Error))
		}
	}
	r.GNBErrors = append(r.GNBErrors, g.rep.Errors[:min(len(g.rep.Errors), 5)]...)
	return r
}

// Continue runs the second phase for every registered UE. A UE still
// connected sends Uplink NAS (answered by its AMF), is released, waits for
// its AMF's Paging and comes back with a Service Request carrying its
// 5G-S-TMSI. A UE the network released meanwhile (its AMF died) comes back
// with its 5G-S-TMSI at once. lost names AMFs the caller stopped: their
// UEs' releases are awaited first (up to Wait), so no UE talks to an AMF
// the proxy is still releasing it from.
func (g *GNB) Continue(ctx context.Context, lost []uint8) {
	deadline := time.Now().Add(g.cfg.Wait)
	for time.Now().Before(deadline) && g.connectedTo(lost) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	g.each(ctx, func(u *simUE) error {
		g.mu.Lock()
		ok, netRel := u.res.Registered, u.res.NetworkReleased
		g.mu.Unlock()
		if !ok {
			return nil
		}
		if !netRel {
			if err := g.send(ctx, u)(ngapl.UplinkNASTransport(u.amf, u.ran, nil, g.location())); err != nil {
				return err
			}
			k, err := g.expect(ctx, u, ngapType.ProcedureCodeDownlinkNASTransport, ngapl.Initiating)
			if err != nil {
				return fmt.Errorf("uplink NAS: %w", err)
			}
			g.mu.Lock()
			u.res.UplinkPointer = int(k.AMFUEID >> 32)
			g.mu.Unlock()
			if err := g.release(ctx, u); err != nil {
				return err
			}
			if _, err := g.expect(ctx, u, ngapType.ProcedureCodePaging, ngapl.Initiating); err != nil {
				return fmt.Errorf("waiting for paging: %w", err)
			}
			g.mu.Lock()
			u.res.Paged = true
			g.mu.Unlock()
		}
		s := &ngapl.STMSI{SetID: g.cfg.SetID, Pointer: u.res.RegPointer, TMSI: u.tmsi}
		id, err := g.connect(ctx, u, s)
		g.mu.Lock()
		u.res.SRRANUEID = u.ran
		if id != 0 || err == nil {
			u.res.SRAMFUEID, u.res.SRPointer = id, int(id>>32)
		}
		g.mu.Unlock()
		if err != nil {
			return fmt.Errorf("service request: %w", err)
		}
		if err := g.release(ctx, u); err != nil {
			return fmt.Errorf("service request: %w", err)
		}
		g.mu.Lock()
		u.res.SRComplete = true
		g.mu.Unlock()
		return nil
	})
}

func (g *GNB) connectedTo(pointers []uint8) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, u := range g.ues {
		for _, p := range pointers {
			if u.res.Registered && u.res.RegPointer == p && !u.res.NetworkReleased {
				n++
			}
		}
	}
	return n
}

// Report returns the UEs' results so far.
func (g *GNB) Report() GNBReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.rep
	r.Errors = append([]string(nil), g.rep.Errors...)
	r.UEs = make([]UEResult, len(g.ues))
	for i, u := range g.ues {
		r.UEs[i] = u.res
	}
	return r
}
