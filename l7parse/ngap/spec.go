package ngap

import (
	"strconv"

	"github.com/free5gc/aper"
	"github.com/free5gc/ngap/ngapType"
)

// What TS 38.413 says about who sends what, and which IEs a message must
// carry, for the semantic checks of TS 38.413 section 10 that the N2 proxy
// makes before a PDU touches its state. The free5gc decoder enforces
// neither: it accepts a message without its mandatory IEs and any message
// from either side.

// Side is an NG interface peer.
type Side uint8

const (
	// Both: the procedure may be initiated by either side (Error
	// Indication, NG Reset, Private Message) or is unknown.
	Both Side = iota
	// RAN: the NG-RAN node initiates the procedure.
	RAN
	// AMF: the AMF initiates the procedure.
	AMF
)

func (s Side) String() string {
	switch s {
	case RAN:
		return "NG-RAN node"
	case AMF:
		return "AMF"
	}
	return "either side"
}

// Initiator returns the side that initiates procedure proc (TS 38.413
// section 8).
func Initiator(proc int64) Side { return initiator[proc] }

// SentBy returns the side that sends messages of type typ in procedure proc:
// the initiator for the initiating message, its peer for the outcomes.
func SentBy(typ MessageType, proc int64) Side {
	s := initiator[proc]
	if typ == Initiating || s == Both {
		return s
	}
	if s == RAN {
		return AMF
	}
	return RAN
}

var initiator = map[int64]Side{
	ngapType.ProcedureCodeNGSetup:                               RAN,
	ngapType.ProcedureCodeRANConfigurationUpdate:                RAN,
	ngapType.ProcedureCodeInitialUEMessage:                      RAN,
	ngapType.ProcedureCodeUplinkNASTransport:                    RAN,
	ngapType.ProcedureCodeNASNonDeliveryIndication:              RAN,
	ngapType.ProcedureCodeUEContextReleaseRequest:               RAN,
	ngapType.ProcedureCodeHandoverPreparation:                   RAN,
	ngapType.ProcedureCodeHandoverNotification:                  RAN,
	ngapType.ProcedureCodeHandoverCancel:                        RAN,
	ngapType.ProcedureCodePathSwitchRequest:                     RAN,
	ngapType.ProcedureCodeUplinkRANStatusTransfer:               RAN,
	ngapType.ProcedureCodePDUSessionResourceModifyIndication:    RAN,
	ngapType.ProcedureCodePDUSessionResourceNotify:              RAN,
	ngapType.ProcedureCodeRRCInactiveTransitionReport:           RAN,
	ngapType.ProcedureCodeUERadioCapabilityInfoIndication:       RAN,
	ngapType.ProcedureCodeLocationReportingFailureIndication:    RAN,
	ngapType.ProcedureCodeLocationReport:                        RAN,
	ngapType.ProcedureCodeTraceFailureIndication:                RAN,
	ngapType.ProcedureCodeCellTrafficTrace:                      RAN,
	ngapType.ProcedureCodeUplinkUEAssociatedNRPPaTransport:      RAN,
	ngapType.ProcedureCodeUplinkNonUEAssociatedNRPPaTransport:   RAN,
	ngapType.ProcedureCodeUplinkRANConfigurationTransfer:        RAN,
	ngapType.ProcedureCodePWSRestartIndication:                  RAN,
	ngapType.ProcedureCodePWSFailureIndication:                  RAN,
	ngapType.ProcedureCodeSecondaryRATDataUsageReport:           RAN,
	ngapType.ProcedureCodeAMFConfigurationUpdate:                AMF,
	ngapType.ProcedureCodeAMFStatusIndication:                   AMF,
	ngapType.ProcedureCodeDeactivateTrace:                       AMF,
	ngapType.ProcedureCodeDownlinkNASTransport:                  AMF,
	ngapType.ProcedureCodeDownlinkNonUEAssociatedNRPPaTransport: AMF,
	ngapType.ProcedureCodeDownlinkRANConfigurationTransfer:      AMF,
	ngapType.ProcedureCodeDownlinkRANStatusTransfer:             AMF,
	ngapType.ProcedureCodeDownlinkUEAssociatedNRPPaTransport:    AMF,
	ngapType.ProcedureCodeHandoverResourceAllocation:            AMF,
	ngapType.ProcedureCodeInitialContextSetup:                   AMF,
	ngapType.ProcedureCodeLocationReportingControl:              AMF,
	ngapType.ProcedureCodeOverloadStart:                         AMF,
	ngapType.ProcedureCodeOverloadStop:                          AMF,
	ngapType.ProcedureCodePaging:                                AMF,
	ngapType.ProcedureCodePDUSessionResourceModify:              AMF,
	ngapType.ProcedureCodePDUSessionResourceRelease:             AMF,
	ngapType.ProcedureCodePDUSessionResourceSetup:               AMF,
	ngapType.ProcedureCodePWSCancel:                             AMF,
	ngapType.ProcedureCodeRerouteNASRequest:                     AMF,
	ngapType.ProcedureCodeTraceStart:                            AMF,
	ngapType.ProcedureCodeUEContextModification:                 AMF,
	ngapType.ProcedureCodeUEContextRelease:                      AMF,
	ngapType.ProcedureCodeUERadioCapabilityCheck:                AMF,
	ngapType.ProcedureCodeUETNLABindingRelease:                  AMF,
	ngapType.ProcedureCodeWriteReplaceWarning:                   AMF,
}

// Requirement is one IE a message must carry, with the criticality the
// ASN.1 (TS 38.413 9.4.4) gives it: what 10.3.5 makes the receiver do when
// it is missing.
type Requirement struct {
	ID          int64
	Criticality aper.Enumerated
}

// Required lists the IEs the N2 proxy enforces for message (typ, proc):
//   - for the messages it terminates or builds state from (NG Setup, Initial
//     UE Message, NG Reset, AMF Status Indication, Reroute NAS Request, UE
//     Context Release, Path Switch Request), every mandatory IE with
//     criticality reject, and the ignore-criticality IEs it reads;
//   - for every other UE-associated message, the UE identities the message
//     defines (what the proxy routes on): criticality reject in initiating
//     messages, ignore in outcomes, as in the ASN.1.
//
// Mandatory IEs of relayed messages that the proxy never reads are left to
// the AMF or gNB receiving them, which is the node 10.3.5 addresses.
func Required(typ MessageType, proc int64) []Requirement {
	if r, ok := required[msgKey{typ, proc}]; ok {
		return r
	}
	if !ueAssociatedProcedure[proc] || proc == ngapType.ProcedureCodeErrorIndication {
		return nil
	}
	crit := Reject
	if typ != Initiating {
		crit = Ignore
	}
	var out []Requirement
	for _, id := range []int64{ngapType.ProtocolIEIDAMFUENGAPID, ngapType.ProtocolIEIDRANUENGAPID, ngapType.ProtocolIEIDUENGAPIDs} {
		if carries(typ, proc, id) {
			out = append(out, Requirement{id, crit})
		}
	}
	return out
}

var required = map[msgKey][]Requirement{
	{Initiating, ngapType.ProcedureCodeNGSetup}: {
		{ngapType.ProtocolIEIDGlobalRANNodeID, Reject}, {ngapType.ProtocolIEIDSupportedTAList, Reject},
	},
	{Successful, ngapType.ProcedureCodeNGSetup}: {
		{ngapType.ProtocolIEIDAMFName, Reject}, {ngapType.ProtocolIEIDServedGUAMIList, Reject}, {ngapType.ProtocolIEIDPLMNSupportList, Reject},
	},
	{Unsuccessful, ngapType.ProcedureCodeNGSetup}: nil,
	{Initiating, ngapType.ProcedureCodeInitialUEMessage}: {
		{ngapType.ProtocolIEIDRANUENGAPID, Reject}, {ngapType.ProtocolIEIDNASPDU, Reject}, {ngapType.ProtocolIEIDUserLocationInformation, Reject},
	},
	{Initiating, ngapType.ProcedureCodeNGReset}:             {{ngapType.ProtocolIEIDResetType, Reject}},
	{Initiating, ngapType.ProcedureCodeAMFStatusIndication}: {{ngapType.ProtocolIEIDUnavailableGUAMIList, Reject}},
	{Initiating, ngapType.ProcedureCodeRerouteNASRequest}: {
		{ngapType.ProtocolIEIDRANUENGAPID, Reject}, {ngapType.ProtocolIEIDNGAPMessage, Reject}, {ngapType.ProtocolIEIDAMFSetID, Reject},
	},
	{Initiating, ngapType.ProcedureCodeUEContextRelease}: {{ngapType.ProtocolIEIDUENGAPIDs, Reject}},
	{Successful, ngapType.ProcedureCodeUEContextRelease}: {
		{ngapType.ProtocolIEIDAMFUENGAPID, Ignore}, {ngapType.ProtocolIEIDRANUENGAPID, Ignore},
	},
	{Initiating, ngapType.ProcedureCodePathSwitchRequest}: {
		{ngapType.ProtocolIEIDRANUENGAPID, Reject}, {ngapType.ProtocolIEIDSourceAMFUENGAPID, Reject},
	},
	// Handover Request: the target gNB's first sight of the UE, named by
	// the AMF alone.
	{Initiating, ngapType.ProcedureCodeHandoverResourceAllocation}: {{ngapType.ProtocolIEIDAMFUENGAPID, Reject}},
}

// Missing returns the first IE that k's message must carry and does not,
// reject-criticality IEs first.
func (k Key) Missing() (Requirement, bool) {
	var soft *Requirement
	for _, r := range Required(k.Type, k.Procedure) {
		if k.IEs.Has(r.ID) {
			continue
		}
		if r.Criticality == Reject {
			return r, true
		}
		if soft == nil {
			soft = &r
		}
	}
	if soft != nil {
		return *soft, true
	}
	return Requirement{}, false
}

// IEName is a short name of a protocol IE for metrics and logs.
func IEName(id int64) string {
	if n, ok := ieNames[id]; ok {
		return n
	}
	return "ie" + strconv.FormatInt(id, 10)
}

var ieNames = map[int64]string{
	ngapType.ProtocolIEIDAMFUENGAPID:                       "AMF-UE-NGAP-ID",
	ngapType.ProtocolIEIDRANUENGAPID:                       "RAN-UE-NGAP-ID",
	ngapType.ProtocolIEIDUENGAPIDs:                         "UE-NGAP-IDs",
	ngapType.ProtocolIEIDSourceAMFUENGAPID:                 "Source-AMF-UE-NGAP-ID",
	ngapType.ProtocolIEIDNASPDU:                            "NAS-PDU",
	ngapType.ProtocolIEIDUserLocationInformation:           "UserLocationInformation",
	ngapType.ProtocolIEIDGlobalRANNodeID:                   "GlobalRANNodeID",
	ngapType.ProtocolIEIDSupportedTAList:                   "SupportedTAList",
	ngapType.ProtocolIEIDAMFName:                           "AMFName",
	ngapType.ProtocolIEIDServedGUAMIList:                   "ServedGUAMIList",
	ngapType.ProtocolIEIDPLMNSupportList:                   "PLMNSupportList",
	ngapType.ProtocolIEIDResetType:                         "ResetType",
	ngapType.ProtocolIEIDUnavailableGUAMIList:              "UnavailableGUAMIList",
	ngapType.ProtocolIEIDNGAPMessage:                       "NGAP-Message",
	ngapType.ProtocolIEIDAMFSetID:                          "AMFSetID",
	ngapType.ProtocolIEIDCause:                             "Cause",
	ngapType.ProtocolIEIDRRCEstablishmentCause:             "RRCEstablishmentCause",
	ngapType.ProtocolIEIDFiveGSTMSI:                        "FiveG-S-TMSI",
	ngapType.ProtocolIEIDAllowedNSSAI:                      "AllowedNSSAI",
	ngapType.ProtocolIEIDAMFTrafficLoadReductionIndication: "AMFTrafficLoadReductionIndication",
}

// KnownProcedure reports whether code is a procedure this release defines.
func KnownProcedure(code int64) bool {
	for _, t := range []MessageType{Initiating, Successful, Unsuccessful} {
		if messageIEs[msgKey{t, code}] != nil {
			return true
		}
	}
	return false
}
