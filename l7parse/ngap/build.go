package ngap

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/free5gc/aper"
	"github.com/free5gc/ngap"
	"github.com/free5gc/ngap/ngapType"
)

// Criticality values (TS 38.413 9.3.1.2), re-exported so callers need not
// import ngapType for the common case.
const (
	Reject = ngapType.CriticalityPresentReject
	Ignore = ngapType.CriticalityPresentIgnore
	Notify = ngapType.CriticalityPresentNotify
)

// IE is one protocol IE to put in a message: its ID, criticality and value, a
// pointer to the ngapType struct the IE carries (e.g. *ngapType.RANUENGAPID).
type IE struct {
	ID          int64
	Criticality aper.Enumerated
	Value       any
}

// BuildPDU assembles a PDU of any procedure from its IEs. The ngapType
// structs are generated per message; filling them by reflection, keyed on the
// referenceFieldValue tags the library's own codec uses, keeps one code path
// for every message instead of fifty hand-written ones.
func BuildPDU(typ MessageType, proc int64, crit aper.Enumerated, ies ...IE) (*ngapType.NGAPPDU, error) {
	pdu := &ngapType.NGAPPDU{}
	var val reflect.Value
	switch typ {
	case Initiating:
		m := &ngapType.InitiatingMessage{}
		m.ProcedureCode.Value, m.Criticality.Value = proc, crit
		pdu.Present, pdu.InitiatingMessage = ngapType.NGAPPDUPresentInitiatingMessage, m
		val = reflect.ValueOf(&m.Value).Elem()
	case Successful:
		m := &ngapType.SuccessfulOutcome{}
		m.ProcedureCode.Value, m.Criticality.Value = proc, crit
		pdu.Present, pdu.SuccessfulOutcome = ngapType.NGAPPDUPresentSuccessfulOutcome, m
		val = reflect.ValueOf(&m.Value).Elem()
	case Unsuccessful:
		m := &ngapType.UnsuccessfulOutcome{}
		m.ProcedureCode.Value, m.Criticality.Value = proc, crit
		pdu.Present, pdu.UnsuccessfulOutcome = ngapType.NGAPPDUPresentUnsuccessfulOutcome, m
		val = reflect.ValueOf(&m.Value).Elem()
	default:
		return nil, fmt.Errorf("build: unknown message type %d", typ)
	}
	idx := fieldByReference(val.Type(), proc, nil)
	if idx < 0 && proc == ngapType.ProcedureCodeSecondaryRATDataUsageReport {
		// The generated struct lacks the reference tag for this one procedure.
		if f, ok := val.Type().FieldByName("SecondaryRATDataUsageReport"); ok {
			idx = f.Index[0]
		}
	}
	if idx < 0 {
		return nil, fmt.Errorf("build: procedure %d has no %s message", proc, typ)
	}
	msg := reflect.New(val.Field(idx).Type().Elem())
	val.Field(idx).Set(msg)
	val.Field(0).SetInt(int64(idx))

	list := msg.Elem().FieldByName("ProtocolIEs").FieldByName("List")
	if !list.IsValid() {
		return nil, fmt.Errorf("build: %s %s has no protocol IE list", ProcedureName(proc), typ)
	}
	elemT := list.Type().Elem()
	for _, ie := range ies {
		e := reflect.New(elemT).Elem()
		e.FieldByName("Id").FieldByName("Value").SetInt(ie.ID)
		e.FieldByName("Criticality").FieldByName("Value").SetUint(uint64(ie.Criticality))
		v := e.FieldByName("Value")
		iv := reflect.ValueOf(ie.Value)
		if !iv.IsValid() || iv.Kind() != reflect.Pointer || iv.IsNil() {
			return nil, fmt.Errorf("build: %s IE %d: value must be a non-nil pointer, got %T", ProcedureName(proc), ie.ID, ie.Value)
		}
		fi := fieldByReference(v.Type(), ie.ID, iv.Type())
		if fi < 0 {
			return nil, fmt.Errorf("build: %s %s cannot carry IE %d of type %T", ProcedureName(proc), typ, ie.ID, ie.Value)
		}
		v.Field(fi).Set(iv)
		v.Field(0).SetInt(int64(fi))
		list = reflect.Append(list, e)
	}
	msg.Elem().FieldByName("ProtocolIEs").FieldByName("List").Set(list)
	return pdu, nil
}

// fieldByReference finds the CHOICE alternative tagged referenceFieldValue:ref
// (and of type want, when given). -1 when there is none.
func fieldByReference(t reflect.Type, ref int64, want reflect.Type) int {
	tag := "referenceFieldValue:" + strconv.FormatInt(ref, 10)
	for i := 1; i < t.NumField(); i++ {
		f := t.Field(i)
		if want != nil && f.Type != want {
			continue
		}
		for _, part := range strings.Split(f.Tag.Get("aper"), ",") {
			if part == tag {
				return i
			}
		}
	}
	return -1
}

// Encode APER-encodes a PDU, turning the library's panics on inconsistent
// structs into errors.
func Encode(pdu *ngapType.NGAPPDU) (b []byte, err error) {
	if pdu == nil {
		return nil, fmt.Errorf("encode: nil PDU")
	}
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("encode: encoder panic: %v", r)
		}
	}()
	b, err = ngap.Encoder(*pdu)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return b, nil
}

// Build is BuildPDU followed by Encode.
func Build(typ MessageType, proc int64, crit aper.Enumerated, ies ...IE) ([]byte, error) {
	pdu, err := BuildPDU(typ, proc, crit, ies...)
	if err != nil {
		return nil, err
	}
	b, err := Encode(pdu)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", ProcedureName(proc), typ, err)
	}
	return b, nil
}

// --- small value constructors ---

// Cause builds a Cause of the given group (ngapType.CausePresent*) and value.
func Cause(group int, value aper.Enumerated) *ngapType.Cause {
	c := &ngapType.Cause{Present: group}
	switch group {
	case ngapType.CausePresentRadioNetwork:
		c.RadioNetwork = &ngapType.CauseRadioNetwork{Value: value}
	case ngapType.CausePresentTransport:
		c.Transport = &ngapType.CauseTransport{Value: value}
	case ngapType.CausePresentNas:
		c.Nas = &ngapType.CauseNas{Value: value}
	case ngapType.CausePresentProtocol:
		c.Protocol = &ngapType.CauseProtocol{Value: value}
	default:
		c.Present = ngapType.CausePresentMisc
		c.Misc = &ngapType.CauseMisc{Value: value}
	}
	return c
}

func amfID(v uint64) *ngapType.AMFUENGAPID {
	return &ngapType.AMFUENGAPID{Value: int64(v & (1<<40 - 1))}
}
func ranID(v uint32) *ngapType.RANUENGAPID { return &ngapType.RANUENGAPID{Value: int64(v)} }

func bitString(v uint64, n uint64) aper.BitString {
	nb := (n + 7) / 8
	b := make([]byte, nb)
	v <<= (8 - n%8) % 8
	for i := int(nb) - 1; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return aper.BitString{Bytes: b, BitLength: n}
}

// NGAPGUAMI converts a GUAMI to the library's type.
func NGAPGUAMI(g GUAMI) ngapType.GUAMI {
	return ngapType.GUAMI{
		PLMNIdentity: ngapType.PLMNIdentity{Value: append([]byte(nil), g.PLMN[:]...)},
		AMFRegionID:  ngapType.AMFRegionID{Value: bitString(uint64(g.Region), 8)},
		AMFSetID:     ngapType.AMFSetID{Value: bitString(uint64(g.SetID), 10)},
		AMFPointer:   ngapType.AMFPointer{Value: bitString(uint64(g.Pointer), 6)},
	}
}

// NGAPSTMSI converts a 5G-S-TMSI to the library's type.
func NGAPSTMSI(s STMSI) *ngapType.FiveGSTMSI {
	return &ngapType.FiveGSTMSI{
		AMFSetID:   ngapType.AMFSetID{Value: bitString(uint64(s.SetID), 10)},
		AMFPointer: ngapType.AMFPointer{Value: bitString(uint64(s.Pointer), 6)},
		FiveGTMSI:  ngapType.FiveGTMSI{Value: []byte{byte(s.TMSI >> 24), byte(s.TMSI >> 16), byte(s.TMSI >> 8), byte(s.TMSI)}},
	}
}

// SNSSAI is a slice: SST plus an optional 24-bit SD.
type SNSSAI struct {
	SST   uint8
	HasSD bool
	SD    uint32
}

func (s SNSSAI) ngap() ngapType.SNSSAI {
	out := ngapType.SNSSAI{SST: ngapType.SST{Value: []byte{s.SST}}}
	if s.HasSD {
		out.SD = &ngapType.SD{Value: []byte{byte(s.SD >> 16), byte(s.SD >> 8), byte(s.SD)}}
	}
	return out
}

func sliceList(slices []SNSSAI) ngapType.SliceSupportList {
	var l ngapType.SliceSupportList
	for _, s := range slices {
		l.List = append(l.List, ngapType.SliceSupportItem{SNSSAI: s.ngap()})
	}
	return l
}

// PLMNSupport builds one PLMN Support Item.
func PLMNSupport(plmn [3]byte, slices ...SNSSAI) ngapType.PLMNSupportItem {
	return ngapType.PLMNSupportItem{PLMNIdentity: ngapType.PLMNIdentity{Value: append([]byte(nil), plmn[:]...)}, SliceSupportList: sliceList(slices)}
}

// ServedGUAMI builds one Served GUAMI Item.
func ServedGUAMI(g GUAMI) ngapType.ServedGUAMIItem {
	return ngapType.ServedGUAMIItem{GUAMI: NGAPGUAMI(g)}
}

// Location is the NR user location (cell and tracking area) of a UE.
type Location struct {
	PLMN   [3]byte
	TAC    uint32 // 24 bits
	CellID uint64 // 36 bits
}

func (l Location) ngap() *ngapType.UserLocationInformation {
	plmn := ngapType.PLMNIdentity{Value: append([]byte(nil), l.PLMN[:]...)}
	return &ngapType.UserLocationInformation{
		Present: ngapType.UserLocationInformationPresentUserLocationInformationNR,
		UserLocationInformationNR: &ngapType.UserLocationInformationNR{
			NRCGI: ngapType.NRCGI{PLMNIdentity: plmn, NRCellIdentity: ngapType.NRCellIdentity{Value: bitString(l.CellID, 36)}},
			TAI:   ngapType.TAI{PLMNIdentity: plmn, TAC: ngapType.TAC{Value: tac(l.TAC)}},
		},
	}
}

func tac(v uint32) []byte { return []byte{byte(v >> 16), byte(v >> 8), byte(v)} }
