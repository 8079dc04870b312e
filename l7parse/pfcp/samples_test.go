package pfcp

import (
	"net"
	"testing"
	"time"

	"github.com/wmnsk/go-pfcp/ie"
	"github.com/wmnsk/go-pfcp/message"
)

type sample struct {
	name string
	b    []byte
	want Msg // fields compared: Type, HasSEID, SEID, Seq, NodeID, FSEID, Recovery, Cause
}

var recTS = time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)

func mustMarshal(t testing.TB, m message.Message) []byte {
	t.Helper()
	b := make([]byte, m.MarshalLen())
	if err := m.MarshalTo(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// vendorIE is an IE no release of TS 29.244 defines (enterprise-specific),
// which a proxy must relay byte for byte.
var vendorIE = ie.NewVendorSpecificIE(32770, 10415, []byte{0xde, 0xad, 0xbe, 0xef})

// samples are messages as go-pfcp (an SMF or UPF built on it) sends them.
func samples(t testing.TB) []sample {
	smf := net.ParseIP("10.0.0.1").To4()
	upf := net.ParseIP("10.0.1.1").To4()
	createPDR := ie.NewCreatePDR(ie.NewPDRID(1), ie.NewPrecedence(100),
		ie.NewPDI(ie.NewSourceInterface(ie.SrcInterfaceAccess), ie.NewFTEID(0x01, 0x1234, upf, nil, 0), ie.NewUEIPAddress(0x02, "10.60.0.1", "", 0, 0)),
		ie.NewFARID(1))
	createFAR := ie.NewCreateFAR(ie.NewFARID(1), ie.NewApplyAction(0x02))
	return []sample{
		{"heartbeat request", mustMarshal(t, message.NewHeartbeatRequest(7, ie.NewRecoveryTimeStamp(recTS), nil)),
			Msg{Type: HeartbeatRequest, Seq: 7, Recovery: ToNTP(recTS), HasRecovery: true}},
		{"association setup request", mustMarshal(t, message.NewAssociationSetupRequest(8, ie.NewNodeID("10.0.0.1", "", ""), ie.NewRecoveryTimeStamp(recTS), ie.NewCPFunctionFeatures(0))),
			Msg{Type: AssociationSetupRequest, Seq: 8, NodeID: NodeID([]byte{0, 10, 0, 0, 1}), Recovery: ToNTP(recTS), HasRecovery: true}},
		{"association setup response fqdn", mustMarshal(t, message.NewAssociationSetupResponse(9, ie.NewNodeID("", "", "upf.example.org"), ie.NewCause(ie.CauseRequestAccepted), ie.NewRecoveryTimeStamp(recTS), ie.NewUPFunctionFeatures(0x01, 0x00))),
			Msg{Type: AssociationSetupResponse, Seq: 9, NodeID: NodeID(append([]byte{2}, []byte("\x03upf\x07example\x03org")...)), Recovery: ToNTP(recTS), HasRecovery: true, Cause: 1, HasCause: true}},
		{"session establishment request", mustMarshal(t, message.NewSessionEstablishmentRequest(0, 0, 0, 0x010203, 0,
			ie.NewNodeID("10.0.0.1", "", ""), ie.NewFSEID(0x1111, smf, nil), createPDR, createFAR, vendorIE)),
			Msg{Type: SessionEstablishmentReq, HasSEID: true, Seq: 0x010203, NodeID: NodeID([]byte{0, 10, 0, 0, 1}), FSEID: FSEID{SEID: 0x1111, V4: ip("10.0.0.1")}}},
		{"session establishment response", mustMarshal(t, message.NewSessionEstablishmentResponse(0, 0, 0x1111, 0x010203, 0,
			ie.NewNodeID("10.0.1.1", "", ""), ie.NewCause(ie.CauseRequestAccepted), ie.NewFSEID(0x2222, upf, nil),
			ie.NewCreatedPDR(ie.NewPDRID(1), ie.NewFTEID(0x01, 0x9999, upf, nil, 0)))),
			Msg{Type: SessionEstablishmentResp, HasSEID: true, SEID: 0x1111, Seq: 0x010203, NodeID: NodeID([]byte{0, 10, 0, 1, 1}), FSEID: FSEID{SEID: 0x2222, V4: ip("10.0.1.1")}, Cause: 1, HasCause: true}},
		{"session establishment request ipv6", mustMarshal(t, message.NewSessionEstablishmentRequest(0, 0, 0, 3, 0,
			ie.NewNodeID("", "2001:db8::1", ""), ie.NewFSEID(0x3333, nil, net.ParseIP("2001:db8::1")), createPDR, createFAR)),
			Msg{Type: SessionEstablishmentReq, HasSEID: true, Seq: 3, NodeID: NodeIDFromAddr(ip("2001:db8::1")), FSEID: FSEID{SEID: 0x3333, V6: ip("2001:db8::1")}}},
		{"session modification request", mustMarshal(t, message.NewSessionModificationRequest(0, 0, 0x2222, 11, 0,
			ie.NewUpdateFAR(ie.NewFARID(1), ie.NewApplyAction(0x02)))),
			Msg{Type: SessionModificationReq, HasSEID: true, SEID: 0x2222, Seq: 11}},
		{"session deletion response", mustMarshal(t, message.NewSessionDeletionResponse(0, 0, 0x1111, 12, 0, ie.NewCause(ie.CauseRequestAccepted))),
			Msg{Type: SessionDeletionResp, HasSEID: true, SEID: 0x1111, Seq: 12, Cause: 1, HasCause: true}},
		{"session report request", mustMarshal(t, message.NewSessionReportRequest(0, 0, 0x1111, 13, 0,
			ie.NewReportType(0, 0, 0, 1), ie.NewDownlinkDataReport(ie.NewPDRID(1)))),
			Msg{Type: SessionReportReq, HasSEID: true, SEID: 0x1111, Seq: 13}},
		{"session report response", mustMarshal(t, message.NewSessionReportResponse(0, 0, 0x2222, 13, 0, ie.NewCause(ie.CauseRequestAccepted))),
			Msg{Type: SessionReportResp, HasSEID: true, SEID: 0x2222, Seq: 13, Cause: 1, HasCause: true}},
	}
}
