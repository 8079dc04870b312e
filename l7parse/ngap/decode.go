// Package ngap turns NGAP PDUs (TS 38.413, APER encoded) into the steering key
// the N2 proxy needs, and builds the PDUs the proxy itself originates. It wraps
// github.com/free5gc/ngap: decoding is the library's, this package only walks
// the decoded IEs and shields callers from the library's panics on garbage.
package ngap

import (
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"

	"github.com/free5gc/aper"
	"github.com/free5gc/ngap"
	"github.com/free5gc/ngap/ngapType"
)

// PPID is the SCTP payload protocol identifier of NGAP, in host order (TS 38.412).
const PPID uint32 = 60

// Port is the SCTP port NG-C listens on.
const Port = 38412

// MessageType says which of the three NGAP-PDU choices a message is.
type MessageType uint8

const (
	Initiating MessageType = iota + 1
	Successful
	Unsuccessful
)

func (t MessageType) String() string {
	switch t {
	case Initiating:
		return "initiating"
	case Successful:
		return "successful"
	case Unsuccessful:
		return "unsuccessful"
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// STMSI is a 5G-S-TMSI (TS 23.003 2.11): it names the AMF (set and pointer)
// holding the UE's context, which is what steering keys on.
type STMSI struct {
	SetID   uint16 // 10 bits
	Pointer uint8  // 6 bits
	TMSI    uint32
}

// GUAMI is a Globally Unique AMF Identifier.
type GUAMI struct {
	PLMN    [3]byte
	Region  uint8
	SetID   uint16 // 10 bits
	Pointer uint8  // 6 bits
}

// Key is everything the steering logic reads from one PDU. The Has* flags
// say whether an optional identity was present; zero is a valid identity.
type Key struct {
	Procedure int64
	Type      MessageType
	// UEAssociated is true for UE-associated signalling (TS 38.413 8.1 class
	// of the procedure, or an Error Indication that names a UE); such
	// messages travel on a non-zero SCTP stream.
	UEAssociated bool

	HasRANUEID bool
	RANUEID    uint32

	HasAMFUEID bool
	AMFUEID    uint64 // 40 bits

	// SourceAMFUEID is the Source-AMF-UE-NGAP-ID of a Path Switch Request.
	HasSourceAMFUEID bool
	SourceAMFUEID    uint64

	HasSTMSI bool
	STMSI    STMSI

	// AMFSetID is the AMF Set ID IE of an Initial UE Message after a reroute.
	HasAMFSetID bool
	AMFSetID    uint16

	HasGUAMI bool
	GUAMI    GUAMI

	// Criticality is the procedure code's criticality from the PDU envelope
	// (what TS 38.413 10.3.4.1 tells a receiver that does not comprehend
	// the procedure to do).
	Criticality uint8

	// IEs is the set of protocol IEs the message carries (only IEs its
	// definition knows; the decoder skips the others), for the mandatory-IE
	// checks of TS 38.413 10.3.5.
	IEs IESet

	// NAS is the mobile identity read from the NAS-PDU of an Initial UE
	// Message (TS 24.501 9.11.3.4); zero for other messages.
	NAS NASIdentity

	// TrafficLoadReduction is the AMF Traffic Load Reduction Indication of
	// an Overload Start (1..99 percent), 0 when absent.
	TrafficLoadReduction uint8
}

// IESet is a set of protocol IE IDs below 256 (every ID TS 38.413 defines
// for the procedures this package knows is below 256).
type IESet [4]uint64

// Add puts id in the set; IDs of 256 and more are not tracked.
func (s *IESet) Add(id int64) {
	if id >= 0 && id < 256 {
		s[id/64] |= 1 << (id % 64)
	}
}

// Has reports whether id is in the set.
func (s IESet) Has(id int64) bool { return id >= 0 && id < 256 && s[id/64]&(1<<(id%64)) != 0 }

// ErrMalformed wraps every decoding failure, so callers can tell bad input
// from their own mistakes with errors.Is.
var ErrMalformed = errors.New("malformed NGAP PDU")

// ErrUnknownMessage (which wraps ErrMalformed) is a well-formed envelope
// naming a procedure code or a type of message (initiating, successful,
// unsuccessful outcome) that this release does not define for it. Decoder.Key
// still returns the procedure code, type and criticality with it.
var ErrUnknownMessage = fmt.Errorf("%w: procedure or type of message not defined", ErrMalformed)

// Decoder decodes PDUs and counts outcomes. It is safe for concurrent use.
type Decoder struct {
	decoded   atomic.Uint64
	malformed atomic.Uint64
	panics    atomic.Uint64
}

// DecoderConfig is reserved for decoder options; the zero value is valid.
type DecoderConfig struct{}

// NewDecoder returns a Decoder.
func NewDecoder(DecoderConfig) *Decoder { return &Decoder{} }

// Stats are the decoder's counters since it was created.
type Stats struct {
	Decoded   uint64
	Malformed uint64
	// Panics counts malformed PDUs that made the APER library panic; they are
	// also counted in Malformed.
	Panics uint64
}

// Stats returns the counters.
func (d *Decoder) Stats() Stats {
	return Stats{Decoded: d.decoded.Load(), Malformed: d.malformed.Load(), Panics: d.panics.Load()}
}

// Decode parses b and extracts its steering key. The PDU is returned too, for
// the few procedures the proxy terminates and must read in full.
func (d *Decoder) Decode(b []byte) (Key, *ngapType.NGAPPDU, error) {
	k, pdu, panicked, err := decode(b)
	if err != nil {
		d.malformed.Add(1)
		if panicked {
			d.panics.Add(1)
		}
		return Key{}, nil, err
	}
	d.decoded.Add(1)
	return k, pdu, nil
}

// Decode is Decoder.Decode without counting.
func Decode(b []byte) (Key, *ngapType.NGAPPDU, error) {
	k, pdu, _, err := decode(b)
	return k, pdu, err
}

func decode(b []byte) (k Key, pdu *ngapType.NGAPPDU, panicked bool, err error) {
	if len(b) == 0 {
		return Key{}, nil, false, fmt.Errorf("%w: empty", ErrMalformed)
	}
	// free5gc/aper indexes slices with lengths read from the wire and can
	// panic on crafted input; a proxy must survive any peer.
	defer func() {
		if r := recover(); r != nil {
			k, pdu, panicked = Key{}, nil, true
			err = fmt.Errorf("%w: decoder panic: %v", ErrMalformed, r)
		}
	}()
	pdu, err = ngap.Decoder(b)
	if err != nil {
		return Key{}, nil, false, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	k, err = KeyOf(pdu)
	if err != nil {
		return Key{}, nil, false, err
	}
	return k, pdu, false, nil
}

// KeyOf extracts the steering key from a decoded PDU.
func KeyOf(pdu *ngapType.NGAPPDU) (Key, error) {
	var k Key
	proc, typ, msg, err := message(pdu)
	if err != nil {
		return Key{}, err
	}
	k.Procedure, k.Type = proc, typ
	switch typ {
	case Initiating:
		k.Criticality = uint8(pdu.InitiatingMessage.Criticality.Value)
	case Successful:
		k.Criticality = uint8(pdu.SuccessfulOutcome.Criticality.Value)
	case Unsuccessful:
		k.Criticality = uint8(pdu.UnsuccessfulOutcome.Criticality.Value)
	}
	ies := msg.FieldByName("ProtocolIEs")
	if !ies.IsValid() {
		return Key{}, fmt.Errorf("%w: procedure %d has no ProtocolIEs", ErrMalformed, proc)
	}
	list := ies.FieldByName("List")
	for i := 0; i < list.Len(); i++ {
		ie := list.Index(i)
		id := ie.FieldByName("Id").FieldByName("Value").Int()
		val, ok := choice(ie.FieldByName("Value"))
		if !ok {
			continue
		}
		k.IEs.Add(id)
		if err := k.absorb(id, val); err != nil {
			return Key{}, fmt.Errorf("procedure %d IE %d: %w", proc, id, err)
		}
	}
	k.UEAssociated = ueAssociatedProcedure[proc] ||
		(proc == ngapType.ProcedureCodeErrorIndication && (k.HasAMFUEID || k.HasRANUEID))
	return k, nil
}

func (k *Key) absorb(id int64, v any) error {
	switch id {
	case ngapType.ProtocolIEIDAMFUENGAPID:
		if x, ok := v.(*ngapType.AMFUENGAPID); ok {
			k.HasAMFUEID, k.AMFUEID = true, uint64(x.Value)
		}
	case ngapType.ProtocolIEIDRANUENGAPID:
		if x, ok := v.(*ngapType.RANUENGAPID); ok {
			k.HasRANUEID, k.RANUEID = true, uint32(x.Value)
		}
	case ngapType.ProtocolIEIDSourceAMFUENGAPID:
		if x, ok := v.(*ngapType.AMFUENGAPID); ok {
			k.HasSourceAMFUEID, k.SourceAMFUEID = true, uint64(x.Value)
		}
	case ngapType.ProtocolIEIDUENGAPIDs:
		if x, ok := v.(*ngapType.UENGAPIDs); ok {
			switch {
			case x.Present == ngapType.UENGAPIDsPresentUENGAPIDPair && x.UENGAPIDPair != nil:
				k.HasAMFUEID, k.AMFUEID = true, uint64(x.UENGAPIDPair.AMFUENGAPID.Value)
				k.HasRANUEID, k.RANUEID = true, uint32(x.UENGAPIDPair.RANUENGAPID.Value)
			case x.Present == ngapType.UENGAPIDsPresentAMFUENGAPID && x.AMFUENGAPID != nil:
				k.HasAMFUEID, k.AMFUEID = true, uint64(x.AMFUENGAPID.Value)
			}
		}
	case ngapType.ProtocolIEIDFiveGSTMSI:
		if x, ok := v.(*ngapType.FiveGSTMSI); ok {
			s, err := STMSIOf(x)
			if err != nil {
				return err
			}
			k.HasSTMSI, k.STMSI = true, s
		}
	case ngapType.ProtocolIEIDAMFSetID:
		if x, ok := v.(*ngapType.AMFSetID); ok {
			set, err := bits(x.Value, 10)
			if err != nil {
				return fmt.Errorf("AMF Set ID: %w", err)
			}
			k.HasAMFSetID, k.AMFSetID = true, uint16(set)
		}
	case ngapType.ProtocolIEIDGUAMI:
		if x, ok := v.(*ngapType.GUAMI); ok {
			g, err := GUAMIOf(x)
			if err != nil {
				return err
			}
			k.HasGUAMI, k.GUAMI = true, g
		}
	case ngapType.ProtocolIEIDNASPDU:
		if x, ok := v.(*ngapType.NASPDU); ok && k.Procedure == ngapType.ProcedureCodeInitialUEMessage {
			k.NAS = ReadNASIdentity(x.Value)
		}
	case ngapType.ProtocolIEIDAMFTrafficLoadReductionIndication:
		if x, ok := v.(*ngapType.TrafficLoadReductionIndication); ok {
			k.TrafficLoadReduction = uint8(x.Value)
		}
	}
	return nil
}

// STMSIOf converts the library's 5G-S-TMSI.
func STMSIOf(x *ngapType.FiveGSTMSI) (STMSI, error) {
	set, err := bits(x.AMFSetID.Value, 10)
	if err != nil {
		return STMSI{}, fmt.Errorf("5G-S-TMSI AMF Set ID: %w", err)
	}
	ptr, err := bits(x.AMFPointer.Value, 6)
	if err != nil {
		return STMSI{}, fmt.Errorf("5G-S-TMSI AMF Pointer: %w", err)
	}
	t := x.FiveGTMSI.Value
	if len(t) != 4 {
		return STMSI{}, fmt.Errorf("%w: 5G-TMSI is %d bytes, want 4", ErrMalformed, len(t))
	}
	return STMSI{SetID: uint16(set), Pointer: uint8(ptr), TMSI: uint32(t[0])<<24 | uint32(t[1])<<16 | uint32(t[2])<<8 | uint32(t[3])}, nil
}

// GUAMIOf converts the library's GUAMI.
func GUAMIOf(x *ngapType.GUAMI) (GUAMI, error) {
	var g GUAMI
	if len(x.PLMNIdentity.Value) != 3 {
		return GUAMI{}, fmt.Errorf("%w: PLMN identity is %d bytes, want 3", ErrMalformed, len(x.PLMNIdentity.Value))
	}
	copy(g.PLMN[:], x.PLMNIdentity.Value)
	region, err := bits(x.AMFRegionID.Value, 8)
	if err != nil {
		return GUAMI{}, fmt.Errorf("GUAMI AMF Region ID: %w", err)
	}
	set, err := bits(x.AMFSetID.Value, 10)
	if err != nil {
		return GUAMI{}, fmt.Errorf("GUAMI AMF Set ID: %w", err)
	}
	ptr, err := bits(x.AMFPointer.Value, 6)
	if err != nil {
		return GUAMI{}, fmt.Errorf("GUAMI AMF Pointer: %w", err)
	}
	g.Region, g.SetID, g.Pointer = uint8(region), uint16(set), uint8(ptr)
	return g, nil
}

// bits reads an n-bit (n <= 16) MSB-first BIT STRING as an integer.
func bits(b aper.BitString, n uint64) (uint32, error) {
	if b.BitLength != n || uint64(len(b.Bytes)) < (n+7)/8 {
		return 0, fmt.Errorf("%w: bit string of %d bits in %d bytes, want %d bits", ErrMalformed, b.BitLength, len(b.Bytes), n)
	}
	var v uint32
	for i := uint64(0); i < (n+7)/8; i++ {
		v = v<<8 | uint32(b.Bytes[i])
	}
	return v >> ((8 - n%8) % 8), nil
}

// message returns the procedure code, the PDU choice and the message struct
// (e.g. ngapType.InitialUEMessage) inside pdu.
func message(pdu *ngapType.NGAPPDU) (int64, MessageType, reflect.Value, error) {
	if pdu == nil {
		return 0, 0, reflect.Value{}, fmt.Errorf("%w: nil PDU", ErrMalformed)
	}
	var (
		proc int64
		typ  MessageType
		val  reflect.Value
	)
	switch {
	case pdu.Present == ngapType.NGAPPDUPresentInitiatingMessage && pdu.InitiatingMessage != nil:
		proc, typ, val = pdu.InitiatingMessage.ProcedureCode.Value, Initiating, reflect.ValueOf(&pdu.InitiatingMessage.Value).Elem()
	case pdu.Present == ngapType.NGAPPDUPresentSuccessfulOutcome && pdu.SuccessfulOutcome != nil:
		proc, typ, val = pdu.SuccessfulOutcome.ProcedureCode.Value, Successful, reflect.ValueOf(&pdu.SuccessfulOutcome.Value).Elem()
	case pdu.Present == ngapType.NGAPPDUPresentUnsuccessfulOutcome && pdu.UnsuccessfulOutcome != nil:
		proc, typ, val = pdu.UnsuccessfulOutcome.ProcedureCode.Value, Unsuccessful, reflect.ValueOf(&pdu.UnsuccessfulOutcome.Value).Elem()
	default:
		return 0, 0, reflect.Value{}, fmt.Errorf("%w: PDU choice %d not supported", ErrMalformed, pdu.Present)
	}
	m, ok := choice(val)
	if !ok {
		return 0, 0, reflect.Value{}, fmt.Errorf("%w: procedure %d (%s) has no value", ErrMalformed, proc, typ)
	}
	mv := reflect.ValueOf(m)
	if mv.Kind() != reflect.Pointer || mv.Elem().Kind() != reflect.Struct {
		return 0, 0, reflect.Value{}, fmt.Errorf("%w: procedure %d (%s) value is %T", ErrMalformed, proc, typ, m)
	}
	return proc, typ, mv.Elem(), nil
}

// choice returns the selected alternative of a free5gc CHOICE struct: field 0
// is Present, field Present is the pointer to the chosen alternative.
func choice(v reflect.Value) (any, bool) {
	if v.Kind() != reflect.Struct || v.NumField() < 2 || v.Type().Field(0).Name != "Present" {
		return nil, false
	}
	p := int(v.Field(0).Int())
	if p <= 0 || p >= v.NumField() {
		return nil, false
	}
	f := v.Field(p)
	if f.Kind() != reflect.Pointer || f.IsNil() {
		return nil, false
	}
	return f.Interface(), true
}

// ueAssociatedProcedure lists the procedures TS 38.413 section 8 classifies as
// UE-associated. Error Indication is decided per message.
var ueAssociatedProcedure = map[int64]bool{
	ngapType.ProcedureCodeCellTrafficTrace:                   true,
	ngapType.ProcedureCodeDeactivateTrace:                    true,
	ngapType.ProcedureCodeDownlinkNASTransport:               true,
	ngapType.ProcedureCodeDownlinkRANStatusTransfer:          true,
	ngapType.ProcedureCodeDownlinkUEAssociatedNRPPaTransport: true,
	ngapType.ProcedureCodeHandoverCancel:                     true,
	ngapType.ProcedureCodeHandoverNotification:               true,
	ngapType.ProcedureCodeHandoverPreparation:                true,
	ngapType.ProcedureCodeHandoverResourceAllocation:         true,
	ngapType.ProcedureCodeInitialContextSetup:                true,
	ngapType.ProcedureCodeInitialUEMessage:                   true,
	ngapType.ProcedureCodeLocationReportingControl:           true,
	ngapType.ProcedureCodeLocationReportingFailureIndication: true,
	ngapType.ProcedureCodeLocationReport:                     true,
	ngapType.ProcedureCodeNASNonDeliveryIndication:           true,
	ngapType.ProcedureCodePathSwitchRequest:                  true,
	ngapType.ProcedureCodePDUSessionResourceModify:           true,
	ngapType.ProcedureCodePDUSessionResourceModifyIndication: true,
	ngapType.ProcedureCodePDUSessionResourceRelease:          true,
	ngapType.ProcedureCodePDUSessionResourceSetup:            true,
	ngapType.ProcedureCodePDUSessionResourceNotify:           true,
	ngapType.ProcedureCodeRerouteNASRequest:                  true,
	ngapType.ProcedureCodeRRCInactiveTransitionReport:        true,
	ngapType.ProcedureCodeTraceFailureIndication:             true,
	ngapType.ProcedureCodeTraceStart:                         true,
	ngapType.ProcedureCodeUEContextModification:              true,
	ngapType.ProcedureCodeUEContextRelease:                   true,
	ngapType.ProcedureCodeUEContextReleaseRequest:            true,
	ngapType.ProcedureCodeUERadioCapabilityCheck:             true,
	ngapType.ProcedureCodeUERadioCapabilityInfoIndication:    true,
	ngapType.ProcedureCodeUETNLABindingRelease:               true,
	ngapType.ProcedureCodeUplinkNASTransport:                 true,
	ngapType.ProcedureCodeUplinkRANStatusTransfer:            true,
	ngapType.ProcedureCodeUplinkUEAssociatedNRPPaTransport:   true,
	ngapType.ProcedureCodeSecondaryRATDataUsageReport:        true,
}

// ProcedureName is a short name for metrics and logs.
func ProcedureName(code int64) string {
	if n, ok := procedureNames[code]; ok {
		return n
	}
	return fmt.Sprintf("proc%d", code)
}

var procedureNames = map[int64]string{
	0: "AMFConfigurationUpdate", 1: "AMFStatusIndication", 2: "CellTrafficTrace", 3: "DeactivateTrace",
	4: "DownlinkNASTransport", 5: "DownlinkNonUEAssociatedNRPPaTransport", 6: "DownlinkRANConfigurationTransfer",
	7: "DownlinkRANStatusTransfer", 8: "DownlinkUEAssociatedNRPPaTransport", 9: "ErrorIndication",
	10: "HandoverCancel", 11: "HandoverNotification", 12: "HandoverPreparation", 13: "HandoverResourceAllocation",
	14: "InitialContextSetup", 15: "InitialUEMessage", 16: "LocationReportingControl",
	17: "LocationReportingFailureIndication", 18: "LocationReport", 19: "NASNonDeliveryIndication",
	20: "NGReset", 21: "NGSetup", 22: "OverloadStart", 23: "OverloadStop", 24: "Paging",
	25: "PathSwitchRequest", 26: "PDUSessionResourceModify", 27: "PDUSessionResourceModifyIndication",
	28: "PDUSessionResourceRelease", 29: "PDUSessionResourceSetup", 30: "PDUSessionResourceNotify",
	31: "PrivateMessage", 32: "PWSCancel", 33: "PWSFailureIndication", 34: "PWSRestartIndication",
	35: "RANConfigurationUpdate", 36: "RerouteNASRequest", 37: "RRCInactiveTransitionReport",
	38: "TraceFailureIndication", 39: "TraceStart", 40: "UEContextModification", 41: "UEContextRelease",
	42: "UEContextReleaseRequest", 43: "UERadioCapabilityCheck", 44: "UERadioCapabilityInfoIndication",
	45: "UETNLABindingRelease", 46: "UplinkNASTransport", 47: "UplinkNonUEAssociatedNRPPaTransport",
	48: "UplinkRANConfigurationTransfer", 49: "UplinkRANStatusTransfer", 50: "UplinkUEAssociatedNRPPaTransport",
	51: "WriteReplaceWarning", 52: "SecondaryRATDataUsageReport",
}
