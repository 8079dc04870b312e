package pfcp

import (
	"fmt"

	"github.com/wmnsk/go-pfcp/ie"
	"github.com/wmnsk/go-pfcp/message"
)

// The builders below produce the messages a proxy originates (its own
// node-level procedures and the rejections TS 29.244 §7.6 asks for), with
// go-pfcp's encoder. Extra IEs are given in wire form and appended as they
// are.

func nodeIE(n NodeID) *ie.IE { return ie.New(IENodeID, []byte(n)) }

func recoveryIE(ntp uint32) *ie.IE {
	return ie.NewUint32IE(IERecoveryTimeStamp, ntp)
}

func rawIEs(raw [][]byte) ([]*ie.IE, error) {
	out := make([]*ie.IE, 0, len(raw))
	for _, r := range raw {
		i, err := ie.Parse(r)
		if err != nil {
			return nil, fmt.Errorf("pfcp: extra IE: %w", err)
		}
		out = append(out, i)
	}
	return out, nil
}

func marshal(m message.Message) []byte {
	b := make([]byte, m.MarshalLen())
	if err := m.MarshalTo(b); err != nil {
		// go-pfcp's MarshalTo fails only for a buffer shorter than
		// MarshalLen.
		panic(fmt.Sprintf("pfcp: marshal %s: %v", m.MessageTypeName(), err))
	}
	return b
}

// Node builds a node-level message (no SEID) with a Node ID (omitted when
// empty), then a Cause (omitted when 0), a Recovery Time Stamp (omitted
// when 0), an Offending IE (omitted when 0) and the extra IEs.
func Node(typ uint8, seq uint32, node NodeID, cause uint8, recovery uint32, offending uint16, extra ...[]byte) ([]byte, error) {
	var ies []*ie.IE
	if node != "" {
		ies = append(ies, nodeIE(node))
	}
	if cause != 0 {
		ies = append(ies, ie.NewCause(cause))
	}
	if offending != 0 {
		ies = append(ies, ie.NewOffendingIE(offending))
	}
	if recovery != 0 {
		ies = append(ies, recoveryIE(recovery))
	}
	x, err := rawIEs(extra)
	if err != nil {
		return nil, err
	}
	return marshal(message.NewGenericWithoutSEID(typ, seq, append(ies, x...)...)), nil
}

// Session builds a session-level message with header SEID seid, a Node ID
// (omitted when empty), a Cause (omitted when 0), an Offending IE (omitted
// when 0) and the extra IEs.
func Session(typ uint8, seid uint64, seq uint32, node NodeID, cause uint8, offending uint16, extra ...[]byte) ([]byte, error) {
	var ies []*ie.IE
	if node != "" {
		ies = append(ies, nodeIE(node))
	}
	if cause != 0 {
		ies = append(ies, ie.NewCause(cause))
	}
	if offending != 0 {
		ies = append(ies, ie.NewOffendingIE(offending))
	}
	x, err := rawIEs(extra)
	if err != nil {
		return nil, err
	}
	return marshal(message.NewGeneric(typ, seid, seq, append(ies, x...)...)), nil
}

// VersionNotSupportedResponse answers a message of another PFCP version
// (§7.6.1): header only, sequence number copied.
func VersionNotSupportedResponse(seq uint32) []byte {
	return marshal(message.NewVersionNotSupportedResponse(seq))
}

// Reject builds the response TS 29.244 §7.6 asks for when request req
// (parsed as m, possibly partially) is refused with cause: the response
// type of the request, the peer's SEID in the header (0 when the session is
// unknown), the sequence number copied, Node ID where the response carries
// one, and the Offending IE for a missing or incorrect IE.
func Reject(m Msg, peerSEID uint64, node NodeID, cause uint8, offending uint16) ([]byte, error) {
	if !IsRequest(m.Type) {
		return nil, fmt.Errorf("pfcp: %s is not a request", TypeName(m.Type))
	}
	rt := m.Type + 1
	switch m.Type {
	case HeartbeatRequest:
		return nil, fmt.Errorf("pfcp: a heartbeat request is not rejected")
	case SessionEstablishmentReq:
		return Session(rt, peerSEID, m.Seq, node, cause, offending)
	case SessionModificationReq, SessionDeletionReq, SessionReportReq:
		return Session(rt, peerSEID, m.Seq, "", cause, offending)
	case PFDManagementRequest:
		return Node(rt, m.Seq, "", cause, 0, offending)
	}
	if IsSession(m.Type) {
		return Session(rt, peerSEID, m.Seq, "", cause, offending)
	}
	return Node(rt, m.Seq, node, cause, 0, offending)
}
