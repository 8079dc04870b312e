package pfcp

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/wmnsk/go-pfcp/ie"
	"github.com/wmnsk/go-pfcp/message"
)

// SMFSim is an SMF's N4 side: it builds Association Setup, Session
// Establishment (CP SEID = session number, with a vendor-specific IE a
// proxy must relay untouched), Modification and Deletion Requests, reads
// the answers, and answers Session Report Requests and Heartbeats. It
// checks what an SMF relies on: every answer carries its own SEID, UP
// SEIDs never collide, the peer's Recovery Time Stamp never changes.
type SMFSim struct {
	Addr     netip.Addr
	Recovery time.Time

	mu       sync.Mutex
	seq      uint32
	pending  map[uint32]pendingReq
	sessions map[uint64]*SMFSession // by CP SEID
	upSEIDs  map[uint64]uint64      // UP SEID -> CP SEID
	reports  map[uint32]bool        // report seqs answered (dedup)
	peerRec  uint32
	Stats    SMFStats
}

type pendingReq struct {
	typ uint8
	cp  uint64
}

// SMFSession is one PDU session's N4 state.
type SMFSession struct {
	CPSEID, UPSEID uint64
	UPAddr         netip.Addr
	Up             bool
	Mods, Reports  int
}

// SMFStats counts what the SMF saw.
type SMFStats struct {
	Associated, Established, Modified, Deleted, Reports int
	// Rejected: answers with a cause other than Request accepted.
	Rejected int
	// Causes counts rejections by cause.
	Causes map[uint8]int
	// WrongSEID: answers or reports whose header SEID is not one of ours.
	WrongSEID int
	// Collisions: an establishment answered with a UP SEID another live
	// session already has.
	Collisions int
	// RecoveryChanges: the peer's Recovery Time Stamp changed.
	RecoveryChanges int
	// DuplicateReports: Session Report Requests seen twice.
	DuplicateReports int
	// Unmatched: answers to nothing outstanding (a duplicate answer).
	Unmatched int
}

// VendorIE is relayed by a proxy byte for byte; the UPF sim ignores it.
var VendorIE = ie.NewVendorSpecificIE(32770, 10415, []byte{0xca, 0xfe})

// NewSMFSim returns an SMF simulator.
func NewSMFSim(addr netip.Addr, recovery time.Time) *SMFSim {
	return &SMFSim{Addr: addr, Recovery: recovery, pending: map[uint32]pendingReq{},
		sessions: map[uint64]*SMFSession{}, upSEIDs: map[uint64]uint64{}, reports: map[uint32]bool{},
		Stats: SMFStats{Causes: map[uint8]int{}}}
}

func (s *SMFSim) next(typ uint8, cp uint64) uint32 {
	s.seq = (s.seq + 1) & 0xffffff
	s.pending[s.seq] = pendingReq{typ, cp}
	return s.seq
}

// AssociationSetup builds an Association Setup Request.
func (s *SMFSim) AssociationSetup() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return mustMarshal(message.NewAssociationSetupRequest(s.next(message.MsgTypeAssociationSetupRequest, 0),
		ie.NewNodeID(s.Addr.String(), "", ""), ie.NewRecoveryTimeStamp(s.Recovery), ie.NewCPFunctionFeatures(0)))
}

// Establish builds the Session Establishment Request of session cp.
func (s *SMFSim) Establish(cp uint64) []byte { return s.EstablishWith(cp) }

// EstablishWith builds the Session Establishment Request of session cp
// with extra IEs (a DNN, an S-NSSAI).
func (s *SMFSim) EstablishWith(cp uint64, extra ...*ie.IE) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions[cp] = &SMFSession{CPSEID: cp}
	ueIP := netip.AddrFrom4([4]byte{10, 60, byte(cp >> 8), byte(cp)})
	ies := append([]*ie.IE{
		ie.NewNodeID(s.Addr.String(), "", ""),
		ie.NewFSEID(cp, net.IP(s.Addr.AsSlice()), nil),
		ie.NewCreatePDR(ie.NewPDRID(1), ie.NewPrecedence(100),
			ie.NewPDI(ie.NewSourceInterface(ie.SrcInterfaceAccess), ie.NewFTEID(0x05, 0, nil, nil, 0), ie.NewUEIPAddress(0x02, ueIP.String(), "", 0, 0)),
			ie.NewFARID(1)),
		ie.NewCreateFAR(ie.NewFARID(1), ie.NewApplyAction(0x02)),
		VendorIE}, extra...)
	return mustMarshal(message.NewSessionEstablishmentRequest(0, 0, 0, s.next(message.MsgTypeSessionEstablishmentRequest, cp), 0, ies...))
}

// Modify builds a Modification Request for session cp (ok false until
// it is established).
func (s *SMFSim) Modify(cp uint64) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.sessions[cp]
	if x == nil || !x.Up {
		return nil, false
	}
	return mustMarshal(message.NewSessionModificationRequest(0, 0, x.UPSEID, s.next(message.MsgTypeSessionModificationRequest, cp), 0,
		ie.NewUpdateFAR(ie.NewFARID(1), ie.NewApplyAction(0x02)))), true
}

// Delete builds a Deletion Request for session cp.
func (s *SMFSim) Delete(cp uint64) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.sessions[cp]
	if x == nil || !x.Up {
		return nil, false
	}
	return mustMarshal(message.NewSessionDeletionRequest(0, 0, x.UPSEID, s.next(message.MsgTypeSessionDeletionRequest, cp), 0)), true
}

// Outstanding is the number of requests not answered yet.
func (s *SMFSim) Outstanding() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// Session returns session cp's state.
func (s *SMFSim) Session(cp uint64) (SMFSession, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.sessions[cp]
	if x == nil {
		return SMFSession{}, false
	}
	return *x, true
}

// Snapshot returns the counters.
func (s *SMFSim) Snapshot() SMFStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.Stats
	out.Causes = map[uint8]int{}
	for k, v := range s.Stats.Causes {
		out.Causes[k] = v
	}
	return out
}

func (s *SMFSim) recovery(i *ie.IE) {
	if i == nil {
		return
	}
	t, err := i.RecoveryTimeStamp()
	if err != nil {
		return
	}
	v := uint32(t.Unix() + 2208988800)
	if s.peerRec != 0 && v != s.peerRec {
		s.Stats.RecoveryChanges++
	}
	s.peerRec = v
}

func causeOf(i *ie.IE) uint8 {
	if i == nil {
		return 0
	}
	c, _ := i.Cause()
	return c
}

// Handle processes one datagram from the UPF (or proxy) and returns the
// answer to send, if any.
func (s *SMFSim) Handle(b []byte) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg, err := message.Parse(b)
	if err != nil {
		return nil
	}
	switch m := msg.(type) {
	case *message.HeartbeatRequest:
		s.recovery(m.RecoveryTimeStamp)
		return mustMarshal(message.NewHeartbeatResponse(m.Sequence(), ie.NewRecoveryTimeStamp(s.Recovery)))
	case *message.SessionReportRequest:
		x := s.sessions[m.SEID()]
		if s.reports[m.Sequence()] {
			// A retransmission (or a duplicate on the wire): answered
			// again, acted on once.
			s.Stats.DuplicateReports++
			if x == nil {
				return nil
			}
			return mustMarshal(message.NewSessionReportResponse(0, 0, x.UPSEID, m.Sequence(), 0, ie.NewCause(ie.CauseRequestAccepted)))
		}
		s.reports[m.Sequence()] = true
		if x == nil {
			s.Stats.WrongSEID++
			return mustMarshal(message.NewSessionReportResponse(0, 0, 0, m.Sequence(), 0, ie.NewCause(ie.CauseSessionContextNotFound)))
		}
		x.Reports++
		s.Stats.Reports++
		return mustMarshal(message.NewSessionReportResponse(0, 0, x.UPSEID, m.Sequence(), 0, ie.NewCause(ie.CauseRequestAccepted)))
	}
	p, ok := s.pending[msg.Sequence()]
	if !ok || p.typ+1 != msg.MessageType() {
		s.Stats.Unmatched++
		return nil
	}
	delete(s.pending, msg.Sequence())
	var cause uint8
	switch m := msg.(type) {
	case *message.AssociationSetupResponse:
		s.recovery(m.RecoveryTimeStamp)
		if cause = causeOf(m.Cause); cause == ie.CauseRequestAccepted {
			s.Stats.Associated++
		}
	case *message.SessionEstablishmentResponse:
		x := s.sessions[p.cp]
		if cause = causeOf(m.Cause); cause == ie.CauseRequestAccepted && x != nil {
			if m.SEID() != p.cp {
				s.Stats.WrongSEID++
			}
			f, err := m.UPFSEID.FSEID()
			if err != nil {
				s.Stats.WrongSEID++
				break
			}
			if _, dup := s.upSEIDs[f.SEID]; dup {
				s.Stats.Collisions++
			}
			x.UPSEID, x.Up = f.SEID, true
			x.UPAddr, _ = netip.AddrFromSlice(f.IPv4Address.To4())
			s.upSEIDs[f.SEID] = p.cp
			s.Stats.Established++
		}
	case *message.SessionModificationResponse:
		if cause = causeOf(m.Cause); cause == ie.CauseRequestAccepted {
			if m.SEID() != p.cp {
				s.Stats.WrongSEID++
			}
			s.sessions[p.cp].Mods++
			s.Stats.Modified++
		}
	case *message.SessionDeletionResponse:
		if cause = causeOf(m.Cause); cause == ie.CauseRequestAccepted {
			if m.SEID() != p.cp {
				s.Stats.WrongSEID++
			}
			if x := s.sessions[p.cp]; x != nil {
				delete(s.upSEIDs, x.UPSEID)
				x.Up = false
			}
			s.Stats.Deleted++
		}
	}
	if cause != ie.CauseRequestAccepted {
		s.Stats.Rejected++
		s.Stats.Causes[cause]++
	}
	return nil
}
