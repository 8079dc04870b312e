package ngap

import (
	"fmt"

	"github.com/free5gc/aper"
)

// Mutations of well-formed PDUs at the APER level, for tests and fuzz seeds
// that must feed the proxy what no builder produces: a message without one
// of its mandatory IEs, or under another type of message. They work on any
// PDU the fast path reads, foreign captures included.

// RawIE is one protocol IE as it sits in the container: ID, criticality and
// the open-type value.
type RawIE struct {
	ID          int64
	Criticality aper.Enumerated
	Value       []byte
}

// SplitPDU reads the envelope and the protocol IE container of b.
func SplitPDU(b []byte) (typ MessageType, proc int64, crit aper.Enumerated, ies []RawIE, err error) {
	r := &bitReader{b: b}
	ext, err := r.bits(1)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	idx, err := r.bits(2)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	if ext != 0 || idx > 2 {
		return 0, 0, 0, nil, fmt.Errorf("%w: PDU choice not handled", ErrMalformed)
	}
	pc, err := r.bytes(1)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	c, err := r.bits(2)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	n, err := r.length()
	if err != nil {
		return 0, 0, 0, nil, err
	}
	body, err := r.bytes(n)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	m := &bitReader{b: body}
	if e, err := m.bits(1); err != nil || e != 0 {
		return 0, 0, 0, nil, fmt.Errorf("%w: message extension not handled", ErrMalformed)
	}
	cnt, err := m.bytes(2)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	for i := 0; i < int(cnt[0])<<8|int(cnt[1]); i++ {
		idb, err := m.bytes(2)
		if err != nil {
			return 0, 0, 0, nil, err
		}
		ic, err := m.bits(2)
		if err != nil {
			return 0, 0, 0, nil, err
		}
		vl, err := m.length()
		if err != nil {
			return 0, 0, 0, nil, err
		}
		v, err := m.bytes(vl)
		if err != nil {
			return 0, 0, 0, nil, err
		}
		ies = append(ies, RawIE{ID: int64(idb[0])<<8 | int64(idb[1]), Criticality: aper.Enumerated(ic), Value: v})
	}
	return MessageType(idx + 1), int64(pc[0]), aper.Enumerated(c), ies, nil
}

// JoinPDU encodes an envelope around ies (the inverse of SplitPDU).
func JoinPDU(typ MessageType, proc int64, crit aper.Enumerated, ies []RawIE) ([]byte, error) {
	raw := make([]rawIE, len(ies))
	for i, ie := range ies {
		raw[i] = rawIE{id: ie.ID, crit: ie.Criticality, val: ie.Value}
	}
	return encodeRaw(typ, proc, crit, raw)
}

// WithoutIE returns b with every IE id removed.
func WithoutIE(b []byte, id int64) ([]byte, error) {
	typ, proc, crit, ies, err := SplitPDU(b)
	if err != nil {
		return nil, err
	}
	kept := ies[:0]
	for _, ie := range ies {
		if ie.ID != id {
			kept = append(kept, ie)
		}
	}
	return JoinPDU(typ, proc, crit, kept)
}

// AsType returns b's IEs under another type of message.
func AsType(b []byte, typ MessageType) ([]byte, error) {
	_, proc, crit, ies, err := SplitPDU(b)
	if err != nil {
		return nil, err
	}
	return JoinPDU(typ, proc, crit, ies)
}
