package ngap

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/free5gc/ngap/ngapType"
)

// errNotFast marks valid-looking PDUs the fast path does not handle
// (extension bits set, fragmented lengths): callers fall back to Decode.
var errNotFast = errors.New("outside the fast path")

// Key extracts the steering key straight from the APER bytes, reading only
// the PDU envelope and the IEs steering needs and skipping the others by
// their open-type lengths; PDUs outside that fast path (extensions, lengths
// of 16K and more) go through the full decode. The full free5gc decode
// costs ~250µs per PDU (its tracer walks the stack for every field), while
// relaying a UE-associated message only needs the key. The price: IEs the
// key does not use are not validated, the AMF or gNB judges them.
// FuzzKeyMatchesDecode holds the fast path to the library's answer on every
// PDU the library accepts.
func (d *Decoder) Key(b []byte) (Key, error) {
	k, err := peek(b)
	if errors.Is(err, errNotFast) {
		k, _, err = d.Decode(b)
		return k, err
	}
	if errors.Is(err, ErrUnknownMessage) {
		d.malformed.Add(1)
		return k, err // procedure, type and criticality, for the reaction
	}
	if err != nil {
		d.malformed.Add(1)
		return Key{}, err
	}
	d.decoded.Add(1)
	return k, nil
}

type bitReader struct {
	b   []byte
	pos uint // bit offset
}

func (r *bitReader) bits(n uint) (uint64, error) {
	if n > 64 || r.pos+n > uint(len(r.b))*8 {
		return 0, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	var v uint64
	for i := uint(0); i < n; i++ {
		bit := (r.b[(r.pos+i)/8] >> (7 - (r.pos+i)%8)) & 1
		v = v<<1 | uint64(bit)
	}
	r.pos += n
	return v, nil
}

func (r *bitReader) align() { r.pos = (r.pos + 7) &^ 7 }

func (r *bitReader) bytes(n uint) ([]byte, error) {
	r.align()
	start := r.pos / 8
	if start+n > uint(len(r.b)) {
		return nil, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	r.pos += n * 8
	return r.b[start : start+n], nil
}

// length reads an aligned APER length determinant; fragmented (>= 16K)
// lengths are left to the full decoder.
func (r *bitReader) length() (uint, error) {
	b, err := r.bytes(1)
	if err != nil {
		return 0, err
	}
	switch {
	case b[0]&0x80 == 0:
		return uint(b[0]), nil
	case b[0]&0xc0 == 0x80:
		lo, err := r.bytes(1)
		if err != nil {
			return 0, err
		}
		return uint(b[0]&0x3f)<<8 | uint(lo[0]), nil
	}
	return 0, errNotFast
}

// uintOctets reads a constrained whole number whose range exceeds 64K: a
// length of lenBits bits (octets-1), then that many aligned octets.
func (r *bitReader) uintOctets(lenBits uint, maxOctets uint64) (uint64, error) {
	n, err := r.bits(lenBits)
	if err != nil {
		return 0, err
	}
	n++
	if n > maxOctets {
		return 0, fmt.Errorf("%w: integer of %d octets", ErrMalformed, n)
	}
	b, err := r.bytes(uint(n))
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

func peek(b []byte) (Key, error) {
	var k Key
	r := &bitReader{b: b}
	ext, err := r.bits(1)
	if err != nil {
		return Key{}, err
	}
	idx, err := r.bits(2)
	if err != nil {
		return Key{}, err
	}
	if ext != 0 || idx > 2 {
		return Key{}, errNotFast
	}
	k.Type = MessageType(idx + 1)
	pc, err := r.bytes(1)
	if err != nil {
		return Key{}, err
	}
	k.Procedure = int64(pc[0])
	crit, err := r.bits(2)
	if err != nil {
		return Key{}, err
	}
	k.Criticality = uint8(crit)
	n, err := r.length()
	if err != nil {
		return Key{}, err
	}
	r.align()
	body, err := r.bytes(n)
	if err != nil {
		return Key{}, err
	}
	if messageIEs[msgKey{k.Type, k.Procedure}] == nil {
		// Neither a procedure nor a message type this release defines: the
		// caller reacts on the procedure code's criticality (10.3.4.1).
		return Key{Procedure: k.Procedure, Type: k.Type, Criticality: k.Criticality}, fmt.Errorf("%w: procedure %d, %s", ErrUnknownMessage, k.Procedure, k.Type)
	}
	// The message: a SEQUENCE with an extension marker holding only the
	// ProtocolIE-Container, SIZE(0..65535) so a 16-bit aligned count.
	m := &bitReader{b: body}
	if e, err := m.bits(1); err != nil || e != 0 {
		return Key{}, errNotFast
	}
	cnt, err := m.bytes(2)
	if err != nil {
		return Key{}, err
	}
	for i := 0; i < int(cnt[0])<<8|int(cnt[1]); i++ {
		idb, err := m.bytes(2)
		if err != nil {
			return Key{}, err
		}
		id := int64(idb[0])<<8 | int64(idb[1])
		if _, err := m.bits(2); err != nil {
			return Key{}, err
		}
		vl, err := m.length()
		if err != nil {
			return Key{}, err
		}
		v, err := m.bytes(vl)
		if err != nil {
			return Key{}, err
		}
		if !carries(k.Type, k.Procedure, id) {
			// Not an IE of this message: the library ignores it, so do we.
			continue
		}
		k.IEs.Add(id)
		if err := k.peekIE(id, v); err != nil {
			return Key{}, fmt.Errorf("IE %d: %w", id, err)
		}
	}
	k.UEAssociated = ueAssociatedProcedure[k.Procedure] ||
		(k.Procedure == ngapType.ProcedureCodeErrorIndication && (k.HasAMFUEID || k.HasRANUEID))
	return k, nil
}

func (k *Key) peekIE(id int64, v []byte) error {
	r := &bitReader{b: v}
	var err error
	switch id {
	case ngapType.ProtocolIEIDAMFUENGAPID:
		k.AMFUEID, err = r.uintOctets(3, 5)
		k.HasAMFUEID = err == nil
	case ngapType.ProtocolIEIDSourceAMFUENGAPID:
		k.SourceAMFUEID, err = r.uintOctets(3, 5)
		k.HasSourceAMFUEID = err == nil
	case ngapType.ProtocolIEIDRANUENGAPID:
		var x uint64
		x, err = r.uintOctets(2, 4)
		k.RANUEID, k.HasRANUEID = uint32(x), err == nil
	case ngapType.ProtocolIEIDUENGAPIDs:
		var alt uint64
		if alt, err = r.bits(2); err != nil {
			return err
		}
		switch alt {
		case 0: // pair: extension bit, iE-Extensions presence bit, then both IDs
			ext, err := r.bits(1)
			if err != nil {
				return err
			}
			opt, err := r.bits(1)
			if err != nil {
				return err
			}
			if ext != 0 || opt != 0 {
				return errNotFast
			}
			if k.AMFUEID, err = r.uintOctets(3, 5); err != nil {
				return err
			}
			x, err := r.uintOctets(2, 4)
			if err != nil {
				return err
			}
			k.HasAMFUEID, k.HasRANUEID, k.RANUEID = true, true, uint32(x)
		case 1:
			if k.AMFUEID, err = r.uintOctets(3, 5); err != nil {
				return err
			}
			k.HasAMFUEID = true
		default:
			return errNotFast
		}
	case ngapType.ProtocolIEIDFiveGSTMSI:
		var s STMSI
		if s, err = peekSTMSI(r); err == nil {
			k.HasSTMSI, k.STMSI = true, s
		}
	case ngapType.ProtocolIEIDAMFSetID:
		var x uint64
		x, err = r.bits(10)
		k.AMFSetID, k.HasAMFSetID = uint16(x), err == nil
	case ngapType.ProtocolIEIDGUAMI:
		var g GUAMI
		if g, err = peekGUAMI(r); err == nil {
			k.HasGUAMI, k.GUAMI = true, g
		}
	case ngapType.ProtocolIEIDNASPDU:
		if k.Procedure != ngapType.ProcedureCodeInitialUEMessage {
			return nil
		}
		var n uint
		if n, err = r.length(); err != nil {
			return err
		}
		var nas []byte
		if nas, err = r.bytes(n); err == nil {
			k.NAS = ReadNASIdentity(nas)
		}
	case ngapType.ProtocolIEIDAMFTrafficLoadReductionIndication:
		var x uint64
		if x, err = r.bits(7); err == nil {
			if x > 98 {
				return fmt.Errorf("%w: traffic load reduction %d%%", ErrMalformed, x+1)
			}
			k.TrafficLoadReduction = uint8(x + 1)
		}
	}
	return err
}

func peekSTMSI(r *bitReader) (STMSI, error) {
	pre, err := r.bits(2) // extension marker, iE-Extensions presence
	if err != nil {
		return STMSI{}, err
	}
	if pre != 0 {
		return STMSI{}, errNotFast
	}
	set, err := r.bits(10)
	if err != nil {
		return STMSI{}, err
	}
	ptr, err := r.bits(6)
	if err != nil {
		return STMSI{}, err
	}
	t, err := r.bytes(4)
	if err != nil {
		return STMSI{}, err
	}
	return STMSI{SetID: uint16(set), Pointer: uint8(ptr), TMSI: uint32(t[0])<<24 | uint32(t[1])<<16 | uint32(t[2])<<8 | uint32(t[3])}, nil
}

func peekGUAMI(r *bitReader) (GUAMI, error) {
	pre, err := r.bits(2)
	if err != nil {
		return GUAMI{}, err
	}
	if pre != 0 {
		return GUAMI{}, errNotFast
	}
	var g GUAMI
	p, err := r.bytes(3)
	if err != nil {
		return GUAMI{}, err
	}
	copy(g.PLMN[:], p)
	region, err := r.bits(8)
	if err != nil {
		return GUAMI{}, err
	}
	set, err := r.bits(10)
	if err != nil {
		return GUAMI{}, err
	}
	ptr, err := r.bits(6)
	if err != nil {
		return GUAMI{}, err
	}
	g.Region, g.SetID, g.Pointer = uint8(region), uint16(set), uint8(ptr)
	return g, nil
}

type msgKey struct {
	typ  MessageType
	proc int64
}

// messageIEs says which messages exist and which IEs each defines. It is
// derived once from the library's generated types, so the fast path reads
// exactly the IEs the full decoder would.
var messageIEs = func() map[msgKey]*IESet {
	out := map[msgKey]*IESet{}
	for typ, v := range map[MessageType]reflect.Type{
		Initiating:   reflect.TypeOf(ngapType.InitiatingMessageValue{}),
		Successful:   reflect.TypeOf(ngapType.SuccessfulOutcomeValue{}),
		Unsuccessful: reflect.TypeOf(ngapType.UnsuccessfulOutcomeValue{}),
	} {
		for proc := int64(0); proc < 256; proc++ {
			fi := fieldByReference(v, proc, nil)
			if fi < 0 && proc == ngapType.ProcedureCodeSecondaryRATDataUsageReport {
				if f, ok := v.FieldByName("SecondaryRATDataUsageReport"); ok {
					fi = f.Index[0]
				}
			}
			if fi < 0 {
				continue
			}
			ies, ok := v.Field(fi).Type.Elem().FieldByName("ProtocolIEs")
			if !ok {
				// Private Message: defined, but without protocol IEs.
				out[msgKey{typ, proc}] = &IESet{}
				continue
			}
			list, ok := ies.Type.FieldByName("List")
			if !ok {
				continue
			}
			val, ok := list.Type.Elem().FieldByName("Value")
			if !ok {
				continue
			}
			set := &IESet{}
			for i := 1; i < val.Type.NumField(); i++ {
				for _, part := range strings.Split(val.Type.Field(i).Tag.Get("aper"), ",") {
					if ref, ok := strings.CutPrefix(part, "referenceFieldValue:"); ok {
						if id, err := strconv.ParseInt(ref, 10, 64); err == nil {
							set.Add(id)
						}
					}
				}
			}
			out[msgKey{typ, proc}] = set
		}
	}
	return out
}()

func carries(typ MessageType, proc, id int64) bool {
	s := messageIEs[msgKey{typ, proc}]
	return s != nil && s.Has(id)
}

// Defines reports whether the message (type, procedure) defines IE id.
func Defines(typ MessageType, proc, id int64) bool { return carries(typ, proc, id) }
