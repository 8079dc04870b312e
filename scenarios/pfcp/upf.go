// Package pfcp holds the N4 lab: an SMF and a UPF simulator built on
// github.com/wmnsk/go-pfcp, each a pure core (messages in, messages out)
// used directly by the state machine's tests and, behind a UDP socket, by
// the separate processes of cmd/smfsim and cmd/upfsim that the lab tests
// run through the real daemon.
package pfcp

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/wmnsk/go-pfcp/ie"
	"github.com/wmnsk/go-pfcp/message"

	pf "github.com/telcolb/telcolb/l7parse/pfcp"
)

// UPFSim is an ordinary UPF's control plane as far as N4 goes: it accepts
// associations, answers heartbeats and session requests, allocates its
// SEIDs from SEIDBase upward (every simulator the same ones, to provoke
// collisions behind a proxy) and its F-TEIDs likewise, and sends Session
// Report Requests on demand. It records what it acted on, and counts
// requests it saw twice (same sequence number from the same peer), which
// a proxy should never forward.
type UPFSim struct {
	Node     string // Node ID (IPv4 address)
	Addr     netip.Addr
	Recovery time.Time
	SEIDBase uint64

	mu       sync.Mutex
	next     uint64
	sessions map[uint64]*UPFSession // by UP SEID
	seen     map[string][]byte      // (peer, seq) -> answer
	Stats    UPFStats
	seq      uint32
}

// UPFSession is one session a UPF holds.
type UPFSession struct {
	UPSEID, CPSEID uint64
	CPAddr         netip.Addr
	Mods           int
	// DNN and SST are what the establishment asked for ("" and 0 when absent).
	DNN string
	SST uint8
}

// UPFStats counts what a UPFSim acted on.
type UPFStats struct {
	Associations, Heartbeats, Established, Modified, Deleted, ReportsAnswered int
	// Duplicates: requests seen again with the same sequence number from
	// the same peer (answered from the UPF's own cache, not acted on).
	Duplicates int
	// Unknown: session requests for a SEID it does not hold.
	Unknown int
	// WrongCPNode: establishments whose Node ID was not the association's.
	WrongCPNode int
}

// NewUPFSim returns a UPF simulator.
func NewUPFSim(addr netip.Addr, recovery time.Time, seidBase uint64) *UPFSim {
	return &UPFSim{Node: addr.String(), Addr: addr, Recovery: recovery, SEIDBase: seidBase,
		sessions: map[uint64]*UPFSession{}, seen: map[string][]byte{}}
}

// Restart forgets every session and association, as a restarted UPF does,
// with a new Recovery Time Stamp.
func (u *UPFSim) Restart(recovery time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.Recovery = recovery
	u.next, u.seq = 0, 0
	u.sessions = map[uint64]*UPFSession{}
	u.seen = map[string][]byte{}
}

// Sessions returns a copy of the sessions held.
func (u *UPFSim) Sessions() map[uint64]UPFSession {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make(map[uint64]UPFSession, len(u.sessions))
	for k, v := range u.sessions {
		out[k] = *v
	}
	return out
}

// Snapshot returns the counters.
func (u *UPFSim) Snapshot() UPFStats {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.Stats
}

func mustMarshal(m message.Message) []byte {
	b := make([]byte, m.MarshalLen())
	if err := m.MarshalTo(b); err != nil {
		panic(err)
	}
	return b
}

// Handle processes one datagram from peer and returns the answer (nil for
// responses and for what it discards).
func (u *UPFSim) Handle(peer netip.AddrPort, b []byte) []byte {
	r, _ := u.HandleFirst(peer, b)
	return r
}

// HandleFirst is Handle, also telling whether the request was acted on
// (false for a retransmission answered from the UPF's cache).
func (u *UPFSim) HandleFirst(peer netip.AddrPort, b []byte) (resp []byte, first bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	msg, err := message.Parse(b)
	if err != nil {
		return nil, false
	}
	if !pf.IsRequest(msg.MessageType()) {
		if msg.MessageType() == message.MsgTypeSessionReportResponse {
			u.Stats.ReportsAnswered++
		}
		return nil, false
	}
	key := fmt.Sprintf("%v/%d", peer, msg.Sequence())
	if r, ok := u.seen[key]; ok {
		u.Stats.Duplicates++
		return r, false
	}
	r := u.handle(msg)
	if r != nil {
		u.seen[key] = r
	}
	return r, true
}

func (u *UPFSim) handle(msg message.Message) []byte {
	seq := msg.Sequence()
	node := ie.NewNodeID(u.Node, "", "")
	ok := ie.NewCause(ie.CauseRequestAccepted)
	switch m := msg.(type) {
	case *message.AssociationSetupRequest:
		u.Stats.Associations++
		return mustMarshal(message.NewAssociationSetupResponse(seq, node, ok, ie.NewRecoveryTimeStamp(u.Recovery), ie.NewUPFunctionFeatures(0x01, 0x00)))
	case *message.HeartbeatRequest:
		u.Stats.Heartbeats++
		return mustMarshal(message.NewHeartbeatResponse(seq, ie.NewRecoveryTimeStamp(u.Recovery)))
	case *message.PFDManagementRequest:
		return mustMarshal(message.NewPFDManagementResponse(seq, ok, nil))
	case *message.SessionEstablishmentRequest:
		f, err := m.CPFSEID.FSEID()
		if err != nil {
			return mustMarshal(message.NewSessionEstablishmentResponse(0, 0, 0, seq, 0, node, ie.NewCause(ie.CauseMandatoryIEIncorrect), ie.NewOffendingIE(ie.FSEID)))
		}
		u.next++
		s := &UPFSession{UPSEID: u.SEIDBase + u.next, CPSEID: f.SEID}
		if m.APNDNN != nil {
			s.DNN, _ = m.APNDNN.APNDNN()
		}
		if m.SNSSAI != nil {
			s.SST, _ = m.SNSSAI.SST()
		}
		if a, ok := netip.AddrFromSlice(f.IPv4Address.To4()); ok && f.HasIPv4() {
			s.CPAddr = a
		}
		u.sessions[s.UPSEID] = s
		u.Stats.Established++
		teid := uint32(u.next)
		return mustMarshal(message.NewSessionEstablishmentResponse(0, 0, s.CPSEID, seq, 0, node, ok,
			ie.NewFSEID(s.UPSEID, net.IP(u.Addr.AsSlice()), nil),
			ie.NewCreatedPDR(ie.NewPDRID(1), ie.NewFTEID(0x01, teid, net.IP(u.Addr.AsSlice()), nil, 0))))
	case *message.SessionModificationRequest:
		s := u.sessions[m.SEID()]
		if s == nil {
			u.Stats.Unknown++
			return mustMarshal(message.NewSessionModificationResponse(0, 0, 0, seq, 0, ie.NewCause(ie.CauseSessionContextNotFound)))
		}
		s.Mods++
		u.Stats.Modified++
		return mustMarshal(message.NewSessionModificationResponse(0, 0, s.CPSEID, seq, 0, ok))
	case *message.SessionDeletionRequest:
		s := u.sessions[m.SEID()]
		if s == nil {
			u.Stats.Unknown++
			return mustMarshal(message.NewSessionDeletionResponse(0, 0, 0, seq, 0, ie.NewCause(ie.CauseSessionContextNotFound)))
		}
		delete(u.sessions, s.UPSEID)
		u.Stats.Deleted++
		return mustMarshal(message.NewSessionDeletionResponse(0, 0, s.CPSEID, seq, 0, ok))
	}
	return nil
}

// Report builds a Session Report Request (downlink data report) for the
// session with UP SEID up; ok is false when it holds no such session.
func (u *UPFSim) Report(up uint64) (b []byte, cpAddr netip.Addr, ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.sessions[up]
	if s == nil {
		return nil, netip.Addr{}, false
	}
	u.seq = (u.seq + 1) & 0xffffff
	return mustMarshal(message.NewSessionReportRequest(0, 0, s.CPSEID, u.seq, 0,
		ie.NewReportType(0, 0, 0, 1), ie.NewDownlinkDataReport(ie.NewPDRID(1)))), s.CPAddr, true
}
