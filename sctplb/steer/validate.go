package steer

import (
	"fmt"

	"github.com/free5gc/aper"
	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// Semantic checks of TS 38.413 section 10, made on every decodable PDU
// before it touches any state: the message must be one the procedure
// defines, sent by the side that sends it, carrying the IEs the proxy needs
// (ngapl.Required). A PDU that fails gets the spec's reaction toward its
// sender, is counted by reason (Rejected) and changes nothing.
//
// Choices where the spec leaves room:
//   - Wrong sender (a gNB-only message from an AMF or the reverse): Error
//     Indication, cause protocol message-not-compatible-with-receiver-state;
//     the proxy plays the peer that never receives such a message.
//   - Undefined type of message for a known procedure (10.3.4.1A):
//     Error Indication, cause abstract-syntax-error-falsely-constructed-message.
//     Unknown procedure code (10.3.4.1): by the envelope's criticality;
//     reject -> Error Indication abstract-syntax-error-reject, notify ->
//     abstract-syntax-error-ignore-and-notify, ignore -> dropped silently.
//   - Missing IE with criticality reject (10.3.5): NG Setup Request gets NG
//     Setup Failure (abstract-syntax-error-reject); an NG Setup Response
//     from an AMF is "local error handling": the AMF is treated as having
//     refused the setup (closed, redialled with backoff); every other
//     message gets Error Indication (abstract-syntax-error-reject).
//   - Missing IE with criticality ignore that the proxy needs to route (the
//     IDs of a UE Context Release Complete or of an outcome): the message
//     cannot be delivered, so the sender is told: Error Indication,
//     abstract-syntax-error-ignore-and-notify.
//   - Criticality Diagnostics are not included in the Error Indication.

func (m *Machine) reject(from AssocID, dir Direction, k ngapl.Key, reason string) {
	m.out = append(m.out, Action{Kind: Rejected, Assoc: from, Dir: dir, Procedure: k.Procedure, Reason: reason})
	m.warn("NGAP message rejected", "assoc", from, "procedure", ngapl.ProcedureName(k.Procedure), "type", k.Type.String(), "reason", reason)
}

// ids returns the UE identities of k for an Error Indication.
func ids(k ngapl.Key) (*uint64, *uint32) {
	var amf *uint64
	var ran *uint32
	if k.HasAMFUEID {
		amf = &k.AMFUEID
	}
	if k.HasRANUEID {
		ran = &k.RANUEID
	}
	return amf, ran
}

func protocolCause(v aper.Enumerated) *ngapType.Cause {
	return ngapl.Cause(ngapType.CausePresentProtocol, v)
}

// unknownMessage reacts to a PDU whose procedure code or type of message
// this release does not define.
func (m *Machine) unknownMessage(from AssocID, dir Direction, k ngapl.Key) {
	m.reject(from, dir, k, "undefined-message")
	var cause aper.Enumerated
	switch {
	case ngapl.KnownProcedure(k.Procedure):
		cause = ngapType.CauseProtocolPresentAbstractSyntaxErrorFalselyConstructedMessage
	case aper.Enumerated(k.Criticality) == ngapType.CriticalityPresentReject:
		cause = ngapType.CauseProtocolPresentAbstractSyntaxErrorReject
	case aper.Enumerated(k.Criticality) == ngapType.CriticalityPresentNotify:
		cause = ngapType.CauseProtocolPresentAbstractSyntaxErrorIgnoreAndNotify
	default:
		return
	}
	m.errorIndication(from, nil, nil, protocolCause(cause))
}

// validate applies the checks to a decoded PDU from assoc (a gNB for
// Uplink, an upstream for Downlink) and reacts when one fails. It returns
// whether the PDU may be acted on.
func (m *Machine) validate(from AssocID, dir Direction, k ngapl.Key) bool {
	want := ngapl.RAN
	if dir == Downlink {
		want = ngapl.AMF
	}
	if by := ngapl.SentBy(k.Type, k.Procedure); by != ngapl.Both && by != want {
		m.reject(from, dir, k, "wrong-sender")
		amf, ran := ids(k)
		m.errorIndication(from, amf, ran, protocolCause(ngapType.CauseProtocolPresentMessageNotCompatibleWithReceiverState))
		return false
	}
	r, missing := k.Missing()
	if !missing {
		return true
	}
	m.reject(from, dir, k, fmt.Sprintf("missing-ie/%s", ngapl.IEName(r.ID)))
	cause := protocolCause(ngapType.CauseProtocolPresentAbstractSyntaxErrorIgnoreAndNotify)
	if r.Criticality == ngapl.Reject {
		cause = protocolCause(ngapType.CauseProtocolPresentAbstractSyntaxErrorReject)
	}
	switch {
	case k.Procedure == ngapType.ProcedureCodeNGSetup && k.Type == ngapl.Initiating:
		if b, ok := m.build(ngapl.NGSetupFailure(cause, -1)); ok {
			m.send(from, 0, b)
		}
	case k.Procedure == ngapType.ProcedureCodeNGSetup:
		// A broken NG Setup Response: local error handling, as a refusal.
		if u := m.ups[from]; u != nil && u.state == upSettingUp {
			if g := m.gnbs[u.gnb]; g != nil {
				refused := k
				refused.Type = ngapl.Unsuccessful
				m.setupAnswer(g, u, refused, nil)
			}
		}
	default:
		amf, ran := ids(k)
		m.errorIndication(from, amf, ran, cause)
	}
	return false
}
