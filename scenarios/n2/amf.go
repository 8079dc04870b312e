// Package n2 is the free5GC-style N2 lab: an AMF simulator and a gNB
// simulator that speak real NGAP (built with l7parse/ngap over
// free5gc/ngap) over any sctplb transport. cmd/amfsim and cmd/gnbsim run
// them as separate processes, one usrsctp stack each, and n2_test.go puts
// them in lab namespaces around the telcolb daemon's N2 proxy.
//
// Simulator shortcuts (the NAS layer is not simulated): an AMF's
// AMF-UE-NGAP-IDs are Pointer<<32 | counter, so a gNB can tell which AMF
// answered from the ID alone, and a UE's 5G-S-TMSI is the AMF's Set ID and
// Pointer with TMSI = the counter of the AMF-UE-NGAP-ID it registered with
// (a real AMF sends it in the NAS Registration Accept).
package n2

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb/transport"
)

// PLMN is the lab's PLMN (MCC 208, MNC 93, as in free5GC's defaults).
var PLMN = [3]byte{0x02, 0xf8, 0x39}

// TAC is the lab's only tracking area.
const TAC = 1

// AMFConfig configures an AMF simulator.
type AMFConfig struct {
	Name      string
	Transport transport.Transport
	Listen    transport.Endpoint
	// Region, SetID and Pointer form the AMF ID (free5GC's "cafe00" is
	// region 0xca, set 0x3f8, pointer 0).
	Region  uint8
	SetID   uint16
	Pointer uint8
	// RerouteTo, when set, makes the AMF answer every Initial UE Message
	// that carries no AMF Set ID with a Reroute NAS Request to that set (an
	// AMF that cannot serve the UE's slices, TS 23.502 4.2.2.2.3).
	RerouteTo *uint16
	// Overload, when set, makes the AMF send Overload Start right after
	// each NG Setup: with an AMF Traffic Load Reduction Indication of that
	// many percent (1..99), or without one (0: no new UEs at all).
	Overload *int
	Logger   *slog.Logger
}

// UERecord is what an AMF saw of one UE-associated NG connection.
type UERecord struct {
	GNB     string `json:"gnb"`
	RANUEID uint32 `json:"ranUeId"`
	AMFUEID uint64 `json:"amfUeId"`
	// STMSI is true when the Initial UE Message carried a 5G-S-TMSI; Known
	// when that TMSI was one this AMF allocated.
	STMSI    bool `json:"stmsi"`
	Known    bool `json:"known"`
	Uplinks  int  `json:"uplinks"`
	Setup    bool `json:"contextSetup"`
	Released bool `json:"released"`

	// downlink caches this UE's Downlink NAS Transport: the library's
	// encoder is slow, and the PDU never changes.
	downlink []byte
}

// AMFReport is what an AMF prints when asked.
type AMFReport struct {
	Name    string     `json:"name"`
	Pointer uint8      `json:"pointer"`
	GNBs    []string   `json:"gnbs"`
	UEs     []UERecord `json:"ues"`
	Pages   int        `json:"pages"`
	// Rerouted counts the Initial UE Messages answered with Reroute NAS
	// Request; WithSetID those that arrived carrying an AMF Set ID.
	Rerouted  int      `json:"rerouted"`
	WithSetID int      `json:"withSetId"`
	Errors    []string `json:"errors,omitempty"`
}

// AMF simulates an AMF: it answers NG Setup, allocates AMF-UE-NGAP-IDs,
// sends Downlink NAS Transport and Initial Context Setup, releases UEs on
// request and pages each registered UE once after its release.
type AMF struct {
	cfg  AMFConfig
	log  *slog.Logger
	mu   sync.Mutex
	next uint32
	ues  map[uint64]*UERecord
	tmsi map[uint32]bool
	gnbs map[string]bool
	errs []string
	page int

	rerouted, withSetID int
}

// NewAMF checks cfg.
func NewAMF(cfg AMFConfig) (*AMF, error) {
	if cfg.Transport == nil {
		return nil, errors.New("amf: no transport")
	}
	if cfg.Listen.Port == 0 {
		return nil, errors.New("amf: listen port is 0")
	}
	if cfg.SetID >= 1<<10 || cfg.Pointer >= 1<<6 {
		return nil, fmt.Errorf("amf: set %d / pointer %d out of range (10 / 6 bits)", cfg.SetID, cfg.Pointer)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &AMF{cfg: cfg, log: cfg.Logger, ues: map[uint64]*UERecord{}, tmsi: map[uint32]bool{}, gnbs: map[string]bool{}}, nil
}

// GUAMI is the AMF's identity.
func (a *AMF) GUAMI() ngapl.GUAMI {
	return ngapl.GUAMI{PLMN: PLMN, Region: a.cfg.Region, SetID: a.cfg.SetID, Pointer: a.cfg.Pointer}
}

// Listen opens the AMF's endpoint; Serve then runs it.
func (a *AMF) Listen() (transport.Listener, error) {
	ln, err := a.cfg.Transport.Listen(a.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("amf %s: listen %v: %w", a.cfg.Name, a.cfg.Listen, err)
	}
	return ln, nil
}

// Serve accepts associations until ctx ends.
func (a *AMF) Serve(ctx context.Context, ln transport.Listener) error {
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("amf %s: accept: %w", a.cfg.Name, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			a.serve(ctx, c)
		}()
	}
}

func (a *AMF) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	a.log.Warn(msg)
	a.mu.Lock()
	if len(a.errs) < 50 {
		a.errs = append(a.errs, msg)
	}
	a.mu.Unlock()
}

func (a *AMF) serve(ctx context.Context, c transport.Conn) {
	gnb := ""
	dec := ngapl.NewDecoder(ngapl.DecoderConfig{})
	send := func(stream uint16) func([]byte, error) {
		return func(b []byte, err error) { a.send(ctx, c, stream, b, err) }
	}
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			return
		}
		// The fast key path keeps the simulator from being the bottleneck
		// of the benchmarks; only NG Setup needs the whole PDU.
		k, err := dec.Key(m.Data)
		if err != nil {
			a.fail("undecodable PDU from %s: %v", c.Remote(), err)
			continue
		}
		var pdu *ngapType.NGAPPDU
		if k.Procedure == ngapType.ProcedureCodeNGSetup {
			if _, pdu, err = ngapl.Decode(m.Data); err != nil {
				a.fail("undecodable NG Setup from %s: %v", c.Remote(), err)
				continue
			}
		}
		if m.PPID != ngapl.PPID {
			a.fail("PPID %d, want %d", m.PPID, ngapl.PPID)
		}
		if k.UEAssociated == (m.Stream == 0) {
			a.fail("%s on stream %d (UE-associated %v)", ngapl.ProcedureName(k.Procedure), m.Stream, k.UEAssociated)
		}
		switch {
		case k.Procedure == ngapType.ProcedureCodeNGSetup && k.Type == ngapl.Initiating:
			gnb = gnbName(pdu)
			a.mu.Lock()
			a.gnbs[gnb] = true
			a.mu.Unlock()
			// The simulator keeps every UE context over the loss of an
			// association (it keys them by AMF-UE-NGAP-ID alone), so it
			// answers a request for UE retention with "ues-retained".
			send(0)(ngapl.NGSetupResponse(ngapl.SetupResponse{
				AMFName:     a.cfg.Name,
				Served:      []ngapType.ServedGUAMIItem{ngapl.ServedGUAMI(a.GUAMI())},
				PLMNSupport: []ngapType.PLMNSupportItem{ngapl.PLMNSupport(PLMN, ngapl.SNSSAI{SST: 1})},
				UEsRetained: ngapl.SetupRequestRetainsUEs(pdu),
			}))
			if a.cfg.Overload != nil {
				send(0)(ngapl.OverloadStart(*a.cfg.Overload))
			}
		case k.Procedure == ngapType.ProcedureCodeInitialUEMessage && a.cfg.RerouteTo != nil && !k.HasAMFSetID:
			a.mu.Lock()
			a.rerouted++
			a.mu.Unlock()
			send(m.Stream)(ngapl.RerouteNASRequest(k.RANUEID, nil, m.Data, *a.cfg.RerouteTo))
		case k.Procedure == ngapType.ProcedureCodeInitialUEMessage:
			a.mu.Lock()
			if k.HasAMFSetID {
				a.withSetID++
			}
			a.next++
			id := uint64(a.cfg.Pointer)<<32 | uint64(a.next)
			r := &UERecord{GNB: gnb, RANUEID: k.RANUEID, AMFUEID: id, STMSI: k.HasSTMSI}
			if k.HasSTMSI {
				r.Known = k.STMSI.Pointer == a.cfg.Pointer && k.STMSI.SetID == a.cfg.SetID && a.tmsi[k.STMSI.TMSI]
			} else {
				a.tmsi[a.next] = true
			}
			a.ues[id] = r
			a.mu.Unlock()
			dl, err := ngapl.DownlinkNASTransport(id, k.RANUEID, nil)
			r.downlink = dl
			send(m.Stream)(dl, err)
		case k.Procedure == ngapType.ProcedureCodeUplinkNASTransport:
			r := a.ue(k)
			if r == nil {
				continue
			}
			a.mu.Lock()
			r.Uplinks++
			first := r.Uplinks == 1
			a.mu.Unlock()
			if first {
				send(m.Stream)(ngapl.InitialContextSetupRequest(r.AMFUEID, r.RANUEID, a.GUAMI(), []ngapl.SNSSAI{{SST: 1}}, nil))
			} else {
				send(m.Stream)(r.downlink, nil)
			}
		case k.Procedure == ngapType.ProcedureCodeInitialContextSetup && k.Type == ngapl.Successful:
			if r := a.ue(k); r != nil {
				a.mu.Lock()
				r.Setup = true
				a.mu.Unlock()
			}
		case k.Procedure == ngapType.ProcedureCodeUEContextReleaseRequest:
			if r := a.ue(k); r != nil {
				ran := r.RANUEID
				send(m.Stream)(ngapl.UEContextReleaseCommand(r.AMFUEID, &ran, ngapl.Cause(ngapType.CausePresentNas, ngapType.CauseNasPresentNormalRelease)))
			}
		case k.Procedure == ngapType.ProcedureCodeUEContextRelease && k.Type == ngapl.Successful:
			r := a.ue(k)
			if r == nil {
				continue
			}
			a.mu.Lock()
			r.Released = true
			// Page each registered UE once: the network-triggered service
			// request that follows must come back to this AMF.
			pageIt := !r.STMSI
			tmsi := uint32(r.AMFUEID)
			if pageIt {
				a.page++
			}
			a.mu.Unlock()
			if pageIt {
				send(0)(ngapl.Paging(ngapl.STMSI{SetID: a.cfg.SetID, Pointer: a.cfg.Pointer, TMSI: tmsi}, []ngapl.TAI{{PLMN: PLMN, TAC: TAC}}))
			}
		case k.Procedure == ngapType.ProcedureCodeErrorIndication:
			a.fail("error indication from %s: %+v", gnb, k)
		}
	}
}

func (a *AMF) send(ctx context.Context, c transport.Conn, stream uint16, b []byte, err error) {
	if err != nil {
		a.fail("build: %v", err)
		return
	}
	if err := c.Send(ctx, transport.Message{Stream: stream, PPID: ngapl.PPID, Data: b}); err != nil {
		// Not a failure of the AMF's (an association that ended takes
		// its sends with it), but what a lab whose UE lost its answer
		// needs to see.
		a.log.Warn("send failed", "stream", stream, "err", err)
	}
}

func (a *AMF) ue(k ngapl.Key) *UERecord {
	a.mu.Lock()
	r := a.ues[k.AMFUEID]
	a.mu.Unlock()
	if r == nil || !k.HasAMFUEID {
		a.fail("%s for unknown AMF-UE-NGAP-ID %d", ngapl.ProcedureName(k.Procedure), k.AMFUEID)
		return nil
	}
	if r.RANUEID != k.RANUEID {
		a.fail("%s: AMF-UE-NGAP-ID %d has RAN-UE-NGAP-ID %d, message says %d", ngapl.ProcedureName(k.Procedure), k.AMFUEID, r.RANUEID, k.RANUEID)
	}
	return r
}

// Report returns what the AMF saw, UEs ordered by AMF-UE-NGAP-ID.
func (a *AMF) Report() AMFReport {
	a.mu.Lock()
	defer a.mu.Unlock()
	rep := AMFReport{Name: a.cfg.Name, Pointer: a.cfg.Pointer, Pages: a.page, Rerouted: a.rerouted, WithSetID: a.withSetID, Errors: append([]string(nil), a.errs...)}
	for g := range a.gnbs {
		rep.GNBs = append(rep.GNBs, g)
	}
	sort.Strings(rep.GNBs)
	for _, r := range a.ues {
		rep.UEs = append(rep.UEs, *r)
	}
	sort.Slice(rep.UEs, func(i, j int) bool { return rep.UEs[i].AMFUEID < rep.UEs[j].AMFUEID })
	return rep
}

// gnbName reads the RAN Node Name of an NG Setup Request ("" without one).
func gnbName(pdu *ngapType.NGAPPDU) string {
	if pdu == nil || pdu.InitiatingMessage == nil || pdu.InitiatingMessage.Value.NGSetupRequest == nil {
		return ""
	}
	for _, ie := range pdu.InitiatingMessage.Value.NGSetupRequest.ProtocolIEs.List {
		if ie.Id.Value == ngapType.ProtocolIEIDRANNodeName && ie.Value.RANNodeName != nil {
			return ie.Value.RANNodeName.Value
		}
	}
	return ""
}
