package ngap

import (
	"fmt"

	"github.com/free5gc/aper"
	"github.com/free5gc/ngap/ngapType"
)

// NGSetupRequestParams describes a gNB's NG Setup Request.
type NGSetupRequestParams struct {
	PLMN [3]byte
	// GNBID is the gNB ID of GNBIDBits bits (22..32; 0 means 32).
	GNBID     uint32
	GNBIDBits uint8
	Name      string
	TACs      []uint32
	Slices    []SNSSAI
	// UEsRetained adds UE Retention Information "ues-retained" (TS 38.413
	// 9.3.1.117): the gNB kept its UE contexts over the NG interface's loss
	// and asks the AMF to keep its own.
	UEsRetained bool
}

// NGSetupRequest builds a gNB's NG Setup Request.
func NGSetupRequest(p NGSetupRequestParams) ([]byte, error) {
	n := uint64(p.GNBIDBits)
	if n == 0 {
		n = 32
	}
	if n < 22 || n > 32 {
		return nil, fmt.Errorf("NG Setup Request: gNB ID length %d bits, want 22..32", n)
	}
	if len(p.TACs) == 0 {
		return nil, fmt.Errorf("NG Setup Request: no TAC")
	}
	if len(p.Slices) == 0 {
		return nil, fmt.Errorf("NG Setup Request: no slice (TAI slice support list is mandatory)")
	}
	plmn := ngapType.PLMNIdentity{Value: append([]byte(nil), p.PLMN[:]...)}
	gid := bitString(uint64(p.GNBID), n)
	global := &ngapType.GlobalRANNodeID{
		Present: ngapType.GlobalRANNodeIDPresentGlobalGNBID,
		GlobalGNBID: &ngapType.GlobalGNBID{
			PLMNIdentity: plmn,
			GNBID:        ngapType.GNBID{Present: ngapType.GNBIDPresentGNBID, GNBID: &gid},
		},
	}
	tas := &ngapType.SupportedTAList{}
	for _, t := range p.TACs {
		tas.List = append(tas.List, ngapType.SupportedTAItem{
			TAC: ngapType.TAC{Value: tac(t)},
			BroadcastPLMNList: ngapType.BroadcastPLMNList{List: []ngapType.BroadcastPLMNItem{
				{PLMNIdentity: plmn, TAISliceSupportList: sliceList(p.Slices)},
			}},
		})
	}
	ies := []IE{
		{ngapType.ProtocolIEIDGlobalRANNodeID, Reject, global},
	}
	if p.Name != "" {
		ies = append(ies, IE{ngapType.ProtocolIEIDRANNodeName, Ignore, &ngapType.RANNodeName{Value: p.Name}})
	}
	ies = append(ies,
		IE{ngapType.ProtocolIEIDSupportedTAList, Reject, tas},
		IE{ngapType.ProtocolIEIDDefaultPagingDRX, Ignore, &ngapType.PagingDRX{Value: ngapType.PagingDRXPresentV128}},
	)
	if p.UEsRetained {
		ies = append(ies, IE{ngapType.ProtocolIEIDUERetentionInformation, Ignore, uesRetained()})
	}
	return Build(Initiating, ngapType.ProcedureCodeNGSetup, Reject, ies...)
}

// SetupResponse is what an AMF declares about itself in NG Setup Response
// (and, with any field optional, in AMF Configuration Update).
type SetupResponse struct {
	AMFName     string
	Served      []ngapType.ServedGUAMIItem
	Capacity    int64
	HasCapacity bool
	PLMNSupport []ngapType.PLMNSupportItem
	// UEsRetained: UE Retention Information "ues-retained" (NG Setup
	// Response only): the AMF kept the UE contexts of the gNB that asked.
	UEsRetained bool
}

func uesRetained() *ngapType.UERetentionInformation {
	return &ngapType.UERetentionInformation{Value: ngapType.UERetentionInformationPresentUesRetained}
}

// SetupRequestRetainsUEs reports whether an NG Setup Request carries UE
// Retention Information "ues-retained".
func SetupRequestRetainsUEs(pdu *ngapType.NGAPPDU) bool {
	if pdu == nil || pdu.InitiatingMessage == nil || pdu.InitiatingMessage.Value.NGSetupRequest == nil {
		return false
	}
	for _, ie := range pdu.InitiatingMessage.Value.NGSetupRequest.ProtocolIEs.List {
		if ie.Id.Value == ngapType.ProtocolIEIDUERetentionInformation && ie.Value.UERetentionInformation != nil &&
			ie.Value.UERetentionInformation.Value == ngapType.UERetentionInformationPresentUesRetained {
			return true
		}
	}
	return false
}

// NGSetupResponse builds an NG Setup Response.
func NGSetupResponse(r SetupResponse) ([]byte, error) {
	if r.AMFName == "" || len(r.Served) == 0 || len(r.PLMNSupport) == 0 {
		return nil, fmt.Errorf("NG Setup Response: AMF name, served GUAMIs and PLMN support are mandatory")
	}
	ies := []IE{
		{ngapType.ProtocolIEIDAMFName, Reject, &ngapType.AMFName{Value: r.AMFName}},
		{ngapType.ProtocolIEIDServedGUAMIList, Reject, &ngapType.ServedGUAMIList{List: r.Served}},
		{ngapType.ProtocolIEIDRelativeAMFCapacity, Ignore, &ngapType.RelativeAMFCapacity{Value: clampCapacity(r.Capacity)}},
		{ngapType.ProtocolIEIDPLMNSupportList, Reject, &ngapType.PLMNSupportList{List: r.PLMNSupport}},
	}
	if r.UEsRetained {
		ies = append(ies, IE{ngapType.ProtocolIEIDUERetentionInformation, Ignore, uesRetained()})
	}
	return Build(Successful, ngapType.ProcedureCodeNGSetup, Reject, ies...)
}

func clampCapacity(c int64) int64 {
	switch {
	case c < 0:
		return 0
	case c > 255:
		return 255
	}
	return c
}

// ParseSetupResponse reads an NG Setup Response or an AMF Configuration Update.
func ParseSetupResponse(pdu *ngapType.NGAPPDU) (SetupResponse, error) {
	var r SetupResponse
	switch {
	case pdu != nil && pdu.SuccessfulOutcome != nil && pdu.SuccessfulOutcome.Value.NGSetupResponse != nil:
		for _, ie := range pdu.SuccessfulOutcome.Value.NGSetupResponse.ProtocolIEs.List {
			v := ie.Value
			r.absorb(v.AMFName, v.ServedGUAMIList, v.RelativeAMFCapacity, v.PLMNSupportList)
			if ie.Id.Value == ngapType.ProtocolIEIDUERetentionInformation && v.UERetentionInformation != nil &&
				v.UERetentionInformation.Value == ngapType.UERetentionInformationPresentUesRetained {
				r.UEsRetained = true
			}
		}
		if len(r.Served) == 0 {
			return SetupResponse{}, fmt.Errorf("%w: NG Setup Response without served GUAMIs", ErrMalformed)
		}
	case pdu != nil && pdu.InitiatingMessage != nil && pdu.InitiatingMessage.Value.AMFConfigurationUpdate != nil:
		for _, ie := range pdu.InitiatingMessage.Value.AMFConfigurationUpdate.ProtocolIEs.List {
			v := ie.Value
			r.absorb(v.AMFName, v.ServedGUAMIList, v.RelativeAMFCapacity, v.PLMNSupportList)
		}
	default:
		return SetupResponse{}, fmt.Errorf("%w: not an NG Setup Response or AMF Configuration Update", ErrMalformed)
	}
	return r, nil
}

func (r *SetupResponse) absorb(name *ngapType.AMFName, served *ngapType.ServedGUAMIList, capa *ngapType.RelativeAMFCapacity, plmn *ngapType.PLMNSupportList) {
	if name != nil {
		r.AMFName = name.Value
	}
	if served != nil {
		r.Served = served.List
	}
	if capa != nil {
		r.Capacity, r.HasCapacity = capa.Value, true
	}
	if plmn != nil {
		r.PLMNSupport = plmn.List
	}
}

// NGSetupFailure builds an NG Setup Failure; ttw < 0 leaves Time To Wait out.
func NGSetupFailure(cause *ngapType.Cause, ttw int) ([]byte, error) {
	ies := []IE{{ngapType.ProtocolIEIDCause, Ignore, cause}}
	if ttw >= 0 {
		ies = append(ies, IE{ngapType.ProtocolIEIDTimeToWait, Ignore, &ngapType.TimeToWait{Value: aper.Enumerated(ttw)}})
	}
	return Build(Unsuccessful, ngapType.ProcedureCodeNGSetup, Reject, ies...)
}

// InitialUE describes an Initial UE Message.
type InitialUE struct {
	RANUEID  uint32
	NAS      []byte
	Location Location
	// RRCCause is the RRC establishment cause (ngapType.RRCEstablishmentCausePresent*).
	RRCCause aper.Enumerated
	STMSI    *STMSI
	AMFSetID *uint16
}

// InitialUEMessage builds an Initial UE Message.
func InitialUEMessage(m InitialUE) ([]byte, error) {
	ies := []IE{
		{ngapType.ProtocolIEIDRANUENGAPID, Reject, ranID(m.RANUEID)},
		{ngapType.ProtocolIEIDNASPDU, Reject, &ngapType.NASPDU{Value: nonEmpty(m.NAS)}},
		{ngapType.ProtocolIEIDUserLocationInformation, Reject, m.Location.ngap()},
		{ngapType.ProtocolIEIDRRCEstablishmentCause, Ignore, &ngapType.RRCEstablishmentCause{Value: m.RRCCause}},
	}
	if m.STMSI != nil {
		ies = append(ies, IE{ngapType.ProtocolIEIDFiveGSTMSI, Reject, NGAPSTMSI(*m.STMSI)})
	}
	if m.AMFSetID != nil {
		ies = append(ies, IE{ngapType.ProtocolIEIDAMFSetID, Ignore, &ngapType.AMFSetID{Value: bitString(uint64(*m.AMFSetID), 10)}})
	}
	return Build(Initiating, ngapType.ProcedureCodeInitialUEMessage, Ignore, ies...)
}

func nonEmpty(nas []byte) []byte {
	if len(nas) == 0 {
		// The NAS-PDU IE is mandatory; a plain Registration Request (SUCI,
		// null scheme) keeps builder output decodable by NAS-aware tools.
		return []byte{0x7e, 0x00, 0x41, 0x79, 0x00, 0x0d, 0x01, 0x02, 0xf8, 0x39, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x13}
	}
	return nas
}

// UplinkNASTransport builds an Uplink NAS Transport.
func UplinkNASTransport(amf uint64, ran uint32, nas []byte, loc Location) ([]byte, error) {
	return Build(Initiating, ngapType.ProcedureCodeUplinkNASTransport, Ignore,
		IE{ngapType.ProtocolIEIDAMFUENGAPID, Reject, amfID(amf)},
		IE{ngapType.ProtocolIEIDRANUENGAPID, Reject, ranID(ran)},
		IE{ngapType.ProtocolIEIDNASPDU, Reject, &ngapType.NASPDU{Value: nonEmpty(nas)}},
		IE{ngapType.ProtocolIEIDUserLocationInformation, Ignore, loc.ngap()},
	)
}

// DownlinkNASTransport builds a Downlink NAS Transport.
func DownlinkNASTransport(amf uint64, ran uint32, nas []byte) ([]byte, error) {
	return Build(Initiating, ngapType.ProcedureCodeDownlinkNASTransport, Ignore,
		IE{ngapType.ProtocolIEIDAMFUENGAPID, Reject, amfID(amf)},
		IE{ngapType.ProtocolIEIDRANUENGAPID, Reject, ranID(ran)},
		IE{ngapType.ProtocolIEIDNASPDU, Reject, &ngapType.NASPDU{Value: nonEmpty(nas)}},
	)
}

// InitialContextSetupRequest builds an Initial Context Setup Request with the
// mandatory IEs (GUAMI, allowed NSSAI, security capabilities and key).
func InitialContextSetupRequest(amf uint64, ran uint32, g GUAMI, slices []SNSSAI, nas []byte) ([]byte, error) {
	if len(slices) == 0 {
		return nil, fmt.Errorf("Initial Context Setup Request: allowed NSSAI is empty")
	}
	guami := NGAPGUAMI(g)
	allowed := &ngapType.AllowedNSSAI{}
	for _, s := range slices {
		allowed.List = append(allowed.List, ngapType.AllowedNSSAIItem{SNSSAI: s.ngap()})
	}
	caps := &ngapType.UESecurityCapabilities{
		NRencryptionAlgorithms:             ngapType.NRencryptionAlgorithms{Value: bitString(0xe000, 16)},
		NRintegrityProtectionAlgorithms:    ngapType.NRintegrityProtectionAlgorithms{Value: bitString(0xe000, 16)},
		EUTRAencryptionAlgorithms:          ngapType.EUTRAencryptionAlgorithms{Value: bitString(0, 16)},
		EUTRAintegrityProtectionAlgorithms: ngapType.EUTRAintegrityProtectionAlgorithms{Value: bitString(0, 16)},
	}
	key := &ngapType.SecurityKey{Value: aper.BitString{Bytes: make([]byte, 32), BitLength: 256}}
	ies := []IE{
		{ngapType.ProtocolIEIDAMFUENGAPID, Reject, amfID(amf)},
		{ngapType.ProtocolIEIDRANUENGAPID, Reject, ranID(ran)},
		{ngapType.ProtocolIEIDGUAMI, Reject, &guami},
		{ngapType.ProtocolIEIDAllowedNSSAI, Reject, allowed},
		{ngapType.ProtocolIEIDUESecurityCapabilities, Reject, caps},
		{ngapType.ProtocolIEIDSecurityKey, Reject, key},
	}
	if len(nas) > 0 {
		ies = append(ies, IE{ngapType.ProtocolIEIDNASPDU, Ignore, &ngapType.NASPDU{Value: nas}})
	}
	return Build(Initiating, ngapType.ProcedureCodeInitialContextSetup, Reject, ies...)
}

// InitialContextSetupResponse builds an Initial Context Setup Response.
func InitialContextSetupResponse(amf uint64, ran uint32) ([]byte, error) {
	return Build(Successful, ngapType.ProcedureCodeInitialContextSetup, Reject,
		IE{ngapType.ProtocolIEIDAMFUENGAPID, Ignore, amfID(amf)},
		IE{ngapType.ProtocolIEIDRANUENGAPID, Ignore, ranID(ran)},
	)
}

// UEContextReleaseRequest builds a UE Context Release Request (gNB to AMF).
func UEContextReleaseRequest(amf uint64, ran uint32, cause *ngapType.Cause) ([]byte, error) {
	c, err := causeIE(cause)
	if err != nil {
		return nil, fmt.Errorf("UE Context Release Request: %w", err)
	}
	return encodeRaw(Initiating, ngapType.ProcedureCodeUEContextReleaseRequest, Ignore, []rawIE{
		{ngapType.ProtocolIEIDAMFUENGAPID, Reject, amfIE(amf)},
		{ngapType.ProtocolIEIDRANUENGAPID, Reject, ranIE(ran)},
		{ngapType.ProtocolIEIDCause, Ignore, c},
	})
}

// UEContextReleaseCommand builds a UE Context Release Command (AMF to gNB).
// With ran nil only the AMF-UE-NGAP-ID is sent.
func UEContextReleaseCommand(amf uint64, ran *uint32, cause *ngapType.Cause) ([]byte, error) {
	c, err := causeIE(cause)
	if err != nil {
		return nil, fmt.Errorf("UE Context Release Command: %w", err)
	}
	return encodeRaw(Initiating, ngapType.ProcedureCodeUEContextRelease, Reject, []rawIE{
		{ngapType.ProtocolIEIDUENGAPIDs, Reject, ueNGAPIDs(amf, ran)},
		{ngapType.ProtocolIEIDCause, Ignore, c},
	})
}

// UEContextReleaseComplete builds a UE Context Release Complete.
func UEContextReleaseComplete(amf uint64, ran uint32) ([]byte, error) {
	return encodeRaw(Successful, ngapType.ProcedureCodeUEContextRelease, Reject, []rawIE{
		{ngapType.ProtocolIEIDAMFUENGAPID, Ignore, amfIE(amf)},
		{ngapType.ProtocolIEIDRANUENGAPID, Ignore, ranIE(ran)},
	})
}

// TAI is a tracking area identity.
type TAI struct {
	PLMN [3]byte
	TAC  uint32
}

// Paging builds a Paging message for a 5G-S-TMSI in the given tracking areas.
func Paging(s STMSI, tais []TAI) ([]byte, error) {
	if len(tais) == 0 {
		return nil, fmt.Errorf("Paging: empty TAI list")
	}
	l := &ngapType.TAIListForPaging{}
	for _, t := range tais {
		l.List = append(l.List, ngapType.TAIListForPagingItem{TAI: ngapType.TAI{
			PLMNIdentity: ngapType.PLMNIdentity{Value: append([]byte(nil), t.PLMN[:]...)},
			TAC:          ngapType.TAC{Value: tac(t.TAC)},
		}})
	}
	return Build(Initiating, ngapType.ProcedureCodePaging, Ignore,
		IE{ngapType.ProtocolIEIDUEPagingIdentity, Ignore, &ngapType.UEPagingIdentity{Present: ngapType.UEPagingIdentityPresentFiveGSTMSI, FiveGSTMSI: NGAPSTMSI(s)}},
		IE{ngapType.ProtocolIEIDTAIListForPaging, Ignore, l},
	)
}

// ErrorIndication builds an Error Indication; nil identities are left out.
func ErrorIndication(amf *uint64, ran *uint32, cause *ngapType.Cause) ([]byte, error) {
	var ies []rawIE
	if amf != nil {
		ies = append(ies, rawIE{ngapType.ProtocolIEIDAMFUENGAPID, Ignore, amfIE(*amf)})
	}
	if ran != nil {
		ies = append(ies, rawIE{ngapType.ProtocolIEIDRANUENGAPID, Ignore, ranIE(*ran)})
	}
	if cause != nil {
		c, err := causeIE(cause)
		if err != nil {
			return nil, fmt.Errorf("Error Indication: %w", err)
		}
		ies = append(ies, rawIE{ngapType.ProtocolIEIDCause, Ignore, c})
	}
	return encodeRaw(Initiating, ngapType.ProcedureCodeErrorIndication, Ignore, ies)
}

// ConnItem names one UE-associated logical NG connection in an NG Reset.
type ConnItem struct {
	HasAMFUEID bool
	AMFUEID    uint64
	HasRANUEID bool
	RANUEID    uint32
}

func connList(items []ConnItem) *ngapType.UEAssociatedLogicalNGConnectionList {
	l := &ngapType.UEAssociatedLogicalNGConnectionList{}
	for _, it := range items {
		var e ngapType.UEAssociatedLogicalNGConnectionItem
		if it.HasAMFUEID {
			e.AMFUENGAPID = amfID(it.AMFUEID)
		}
		if it.HasRANUEID {
			e.RANUENGAPID = ranID(it.RANUEID)
		}
		l.List = append(l.List, e)
	}
	return l
}

// NGReset builds an NG Reset: of the whole interface when items is empty,
// else of the listed connections.
func NGReset(cause *ngapType.Cause, items []ConnItem) ([]byte, error) {
	rt := &ngapType.ResetType{Present: ngapType.ResetTypePresentNGInterface, NGInterface: &ngapType.ResetAll{Value: ngapType.ResetAllPresentResetAll}}
	if len(items) > 0 {
		rt = &ngapType.ResetType{Present: ngapType.ResetTypePresentPartOfNGInterface, PartOfNGInterface: connList(items)}
	}
	return Build(Initiating, ngapType.ProcedureCodeNGReset, Reject,
		IE{ngapType.ProtocolIEIDCause, Ignore, cause},
		IE{ngapType.ProtocolIEIDResetType, Reject, rt},
	)
}

// NGResetAcknowledge builds an NG Reset Acknowledge listing the reset
// connections (none for a full reset).
func NGResetAcknowledge(items []ConnItem) ([]byte, error) {
	var ies []IE
	if len(items) > 0 {
		ies = append(ies, IE{ngapType.ProtocolIEIDUEAssociatedLogicalNGConnectionList, Ignore, connList(items)})
	}
	return Build(Successful, ngapType.ProcedureCodeNGReset, Reject, ies...)
}

// ParseNGReset returns the connections an NG Reset names; full is true for a
// reset of the whole interface.
func ParseNGReset(pdu *ngapType.NGAPPDU) (full bool, items []ConnItem, err error) {
	if pdu == nil || pdu.InitiatingMessage == nil || pdu.InitiatingMessage.Value.NGReset == nil {
		return false, nil, fmt.Errorf("%w: not an NG Reset", ErrMalformed)
	}
	for _, ie := range pdu.InitiatingMessage.Value.NGReset.ProtocolIEs.List {
		rt := ie.Value.ResetType
		if rt == nil {
			continue
		}
		switch {
		case rt.Present == ngapType.ResetTypePresentNGInterface:
			return true, nil, nil
		case rt.Present == ngapType.ResetTypePresentPartOfNGInterface && rt.PartOfNGInterface != nil:
			for _, e := range rt.PartOfNGInterface.List {
				var it ConnItem
				if e.AMFUENGAPID != nil {
					it.HasAMFUEID, it.AMFUEID = true, uint64(e.AMFUENGAPID.Value)
				}
				if e.RANUENGAPID != nil {
					it.HasRANUEID, it.RANUEID = true, uint32(e.RANUENGAPID.Value)
				}
				items = append(items, it)
			}
			return false, items, nil
		}
	}
	return false, nil, fmt.Errorf("%w: NG Reset without a reset type", ErrMalformed)
}

// AMFStatusIndication builds an AMF Status Indication declaring GUAMIs unavailable.
func AMFStatusIndication(unavailable []ngapType.GUAMI) ([]byte, error) {
	if len(unavailable) == 0 {
		return nil, fmt.Errorf("AMF Status Indication: empty unavailable GUAMI list")
	}
	l := &ngapType.UnavailableGUAMIList{}
	for _, g := range unavailable {
		l.List = append(l.List, ngapType.UnavailableGUAMIItem{GUAMI: g})
	}
	return Build(Initiating, ngapType.ProcedureCodeAMFStatusIndication, Ignore,
		IE{ngapType.ProtocolIEIDUnavailableGUAMIList, Reject, l})
}

// ParseAMFStatusIndication returns the GUAMIs an AMF Status Indication marks unavailable.
func ParseAMFStatusIndication(pdu *ngapType.NGAPPDU) ([]GUAMI, error) {
	if pdu == nil || pdu.InitiatingMessage == nil || pdu.InitiatingMessage.Value.AMFStatusIndication == nil {
		return nil, fmt.Errorf("%w: not an AMF Status Indication", ErrMalformed)
	}
	var out []GUAMI
	for _, ie := range pdu.InitiatingMessage.Value.AMFStatusIndication.ProtocolIEs.List {
		if ie.Value.UnavailableGUAMIList == nil {
			continue
		}
		for _, it := range ie.Value.UnavailableGUAMIList.List {
			g, err := GUAMIOf(&it.GUAMI)
			if err != nil {
				return nil, fmt.Errorf("AMF Status Indication: %w", err)
			}
			out = append(out, g)
		}
	}
	return out, nil
}

// AMFConfigurationUpdate builds an AMF Configuration Update carrying the
// fields of r that are set.
func AMFConfigurationUpdate(r SetupResponse) ([]byte, error) {
	var ies []IE
	if r.AMFName != "" {
		ies = append(ies, IE{ngapType.ProtocolIEIDAMFName, Reject, &ngapType.AMFName{Value: r.AMFName}})
	}
	if len(r.Served) > 0 {
		ies = append(ies, IE{ngapType.ProtocolIEIDServedGUAMIList, Reject, &ngapType.ServedGUAMIList{List: r.Served}})
	}
	if r.HasCapacity {
		ies = append(ies, IE{ngapType.ProtocolIEIDRelativeAMFCapacity, Ignore, &ngapType.RelativeAMFCapacity{Value: clampCapacity(r.Capacity)}})
	}
	if len(r.PLMNSupport) > 0 {
		ies = append(ies, IE{ngapType.ProtocolIEIDPLMNSupportList, Reject, &ngapType.PLMNSupportList{List: r.PLMNSupport}})
	}
	return Build(Initiating, ngapType.ProcedureCodeAMFConfigurationUpdate, Reject, ies...)
}

// AMFConfigurationUpdateAcknowledge builds the empty acknowledge.
func AMFConfigurationUpdateAcknowledge() ([]byte, error) {
	return Build(Successful, ngapType.ProcedureCodeAMFConfigurationUpdate, Reject)
}

// RANConfigurationUpdate builds a RAN Configuration Update renaming the gNB.
func RANConfigurationUpdate(name string) ([]byte, error) {
	return Build(Initiating, ngapType.ProcedureCodeRANConfigurationUpdate, Reject,
		IE{ngapType.ProtocolIEIDRANNodeName, Ignore, &ngapType.RANNodeName{Value: name}})
}

// RANConfigurationUpdateAcknowledge builds the empty acknowledge.
func RANConfigurationUpdateAcknowledge() ([]byte, error) {
	return Build(Successful, ngapType.ProcedureCodeRANConfigurationUpdate, Reject)
}

// OverloadStart builds an Overload Start; reduction (1..99) adds the AMF
// Traffic Load Reduction Indication, 0 leaves it out (stop all new UEs).
func OverloadStart(reduction int) ([]byte, error) {
	if reduction == 0 {
		return Build(Initiating, ngapType.ProcedureCodeOverloadStart, Ignore)
	}
	return Build(Initiating, ngapType.ProcedureCodeOverloadStart, Ignore,
		IE{ngapType.ProtocolIEIDAMFTrafficLoadReductionIndication, Ignore, &ngapType.TrafficLoadReductionIndication{Value: int64(reduction)}})
}

// RerouteNASRequest builds a Reroute NAS Request (TS 38.413 9.2.5.5) asking
// the NG-RAN node to send initial (the Initial UE Message the AMF received)
// to an AMF of set; amf is the optional AMF-UE-NGAP-ID.
func RerouteNASRequest(ran uint32, amf *uint64, initial []byte, set uint16) ([]byte, error) {
	ies := []IE{{ngapType.ProtocolIEIDRANUENGAPID, Reject, ranID(ran)}}
	if amf != nil {
		ies = append(ies, IE{ngapType.ProtocolIEIDAMFUENGAPID, Ignore, amfID(*amf)})
	}
	msg := aper.OctetString(initial)
	ies = append(ies,
		IE{ngapType.ProtocolIEIDNGAPMessage, Reject, &msg},
		IE{ngapType.ProtocolIEIDAMFSetID, Reject, &ngapType.AMFSetID{Value: bitString(uint64(set), 10)}},
	)
	return Build(Initiating, ngapType.ProcedureCodeRerouteNASRequest, Reject, ies...)
}

// RerouteInitialUE builds what an NG-RAN node sends on a Reroute NAS Request
// (TS 38.413 8.6.5.2): the Initial UE Message (initial, or the request's
// NGAP-Message IE when initial is nil) with the request's AMF Set ID and,
// when present, Allowed NSSAI. Both requests are read at the APER level, so
// every other IE of the original message is kept byte for byte.
func RerouteInitialUE(initial, reroute []byte) ([]byte, error) {
	_, _, _, rr, err := SplitPDU(reroute)
	if err != nil {
		return nil, fmt.Errorf("reroute NAS request: %w", err)
	}
	var set, nssai, msg []byte
	for _, ie := range rr {
		switch ie.ID {
		case ngapType.ProtocolIEIDAMFSetID:
			set = ie.Value
		case ngapType.ProtocolIEIDAllowedNSSAI:
			nssai = ie.Value
		case ngapType.ProtocolIEIDNGAPMessage:
			r := &bitReader{b: ie.Value}
			n, err := r.length()
			if err != nil {
				return nil, fmt.Errorf("reroute NAS request NGAP-Message: %w", err)
			}
			if msg, err = r.bytes(n); err != nil {
				return nil, fmt.Errorf("reroute NAS request NGAP-Message: %w", err)
			}
		}
	}
	if set == nil {
		return nil, fmt.Errorf("%w: reroute NAS request without AMF Set ID", ErrMalformed)
	}
	if initial == nil {
		initial = msg
	}
	typ, proc, crit, ies, err := SplitPDU(initial)
	if err != nil {
		return nil, fmt.Errorf("rerouted initial UE message: %w", err)
	}
	if typ != Initiating || proc != ngapType.ProcedureCodeInitialUEMessage {
		return nil, fmt.Errorf("%w: rerouted message is %s %s, not an Initial UE Message", ErrMalformed, typ, ProcedureName(proc))
	}
	// The ASN.1 orders the container (9.4.4): AMFSetID follows the 5G-S-TMSI,
	// AllowedNSSAI follows UEContextRequest. The new IEs replace any earlier
	// reroute's.
	before := map[int64]int{
		ngapType.ProtocolIEIDRANUENGAPID: 0, ngapType.ProtocolIEIDNASPDU: 0, ngapType.ProtocolIEIDUserLocationInformation: 0,
		ngapType.ProtocolIEIDRRCEstablishmentCause: 0, ngapType.ProtocolIEIDFiveGSTMSI: 0,
		ngapType.ProtocolIEIDAMFSetID: 1, ngapType.ProtocolIEIDUEContextRequest: 1,
	}
	var out []RawIE
	stage := 0
	advance := func(to int) {
		for ; stage < to; stage++ {
			switch stage {
			case 0:
				out = append(out, RawIE{ngapType.ProtocolIEIDAMFSetID, Ignore, set})
			case 1:
				if nssai != nil {
					out = append(out, RawIE{ngapType.ProtocolIEIDAllowedNSSAI, Reject, nssai})
				}
			}
		}
	}
	for _, ie := range ies {
		if ie.ID == ngapType.ProtocolIEIDAMFSetID || (ie.ID == ngapType.ProtocolIEIDAllowedNSSAI && nssai != nil) {
			continue
		}
		pos, known := before[ie.ID]
		if !known {
			pos = 2
		}
		advance(pos)
		out = append(out, ie)
	}
	advance(2)
	return JoinPDU(typ, proc, crit, out)
}

// OverloadStop builds an Overload Stop.
func OverloadStop() ([]byte, error) {
	return Build(Initiating, ngapType.ProcedureCodeOverloadStop, Reject)
}

// PathSwitchRequest builds a Path Switch Request with the IEs steering reads
// (a real one also lists the PDU sessions to switch; the proxy relays the
// bytes and never needs them).
func PathSwitchRequest(ran uint32, sourceAMF uint64, loc Location) ([]byte, error) {
	caps := &ngapType.UESecurityCapabilities{
		NRencryptionAlgorithms:             ngapType.NRencryptionAlgorithms{Value: bitString(0xe000, 16)},
		NRintegrityProtectionAlgorithms:    ngapType.NRintegrityProtectionAlgorithms{Value: bitString(0xe000, 16)},
		EUTRAencryptionAlgorithms:          ngapType.EUTRAencryptionAlgorithms{Value: bitString(0, 16)},
		EUTRAintegrityProtectionAlgorithms: ngapType.EUTRAintegrityProtectionAlgorithms{Value: bitString(0, 16)},
	}
	return Build(Initiating, ngapType.ProcedureCodePathSwitchRequest, Reject,
		IE{ngapType.ProtocolIEIDRANUENGAPID, Reject, ranID(ran)},
		IE{ngapType.ProtocolIEIDSourceAMFUENGAPID, Reject, amfID(sourceAMF)},
		IE{ngapType.ProtocolIEIDUserLocationInformation, Ignore, loc.ngap()},
		IE{ngapType.ProtocolIEIDUESecurityCapabilities, Ignore, caps},
	)
}
