package ngap

import (
	"fmt"

	"github.com/free5gc/aper"
	"github.com/free5gc/ngap/ngapType"
)

// Hand-written APER encoders for the few messages the proxy originates per
// UE (releases toward a lost AMF's gNBs or a lost gNB's AMFs, Error
// Indications): free5gc's reflective encoder costs hundreds of microseconds
// per PDU, too slow for releasing a million UEs. TestFastEncodersMatchLibrary
// holds them byte for byte to the library's output.

type bitWriter struct {
	b   []byte
	pos uint // bits used in the last byte, 0 = aligned
}

func (w *bitWriter) bits(v uint64, n uint) {
	for i := int(n) - 1; i >= 0; i-- {
		if w.pos == 0 {
			w.b = append(w.b, 0)
		}
		if v>>uint(i)&1 != 0 {
			w.b[len(w.b)-1] |= 1 << (7 - w.pos)
		}
		w.pos = (w.pos + 1) % 8
	}
}

func (w *bitWriter) align() { w.pos = 0 }

func (w *bitWriter) octets(p ...byte) {
	w.align()
	w.b = append(w.b, p...)
}

// length writes an aligned length determinant (< 16384).
func (w *bitWriter) length(n int) {
	if n < 128 {
		w.octets(byte(n))
		return
	}
	w.octets(0x80|byte(n>>8), byte(n))
}

// uintOctets writes a constrained whole number with a large range: its octet
// count minus one in lenBits, then the minimal big-endian octets, aligned.
func (w *bitWriter) uintOctets(v uint64, lenBits uint) {
	n := 1
	for x := v >> 8; x != 0; x >>= 8 {
		n++
	}
	w.bits(uint64(n-1), lenBits)
	w.align()
	for i := n - 1; i >= 0; i-- {
		w.b = append(w.b, byte(v>>(8*uint(i))))
	}
}

type rawIE struct {
	id   int64
	crit aper.Enumerated
	val  []byte
}

func encodeRaw(typ MessageType, proc int64, crit aper.Enumerated, ies []rawIE) ([]byte, error) {
	var body bitWriter
	body.bits(0, 1) // extension marker of the message SEQUENCE
	body.octets(byte(len(ies)>>8), byte(len(ies)))
	for _, ie := range ies {
		body.octets(byte(ie.id>>8), byte(ie.id))
		body.bits(uint64(ie.crit), 2)
		body.length(len(ie.val))
		body.octets(ie.val...)
	}
	if len(body.b) >= 16384 {
		return nil, fmt.Errorf("encode %s: %d bytes needs fragmentation", ProcedureName(proc), len(body.b))
	}
	var w bitWriter
	w.bits(0, 1)
	w.bits(uint64(typ-1), 2)
	w.octets(byte(proc))
	w.bits(uint64(crit), 2)
	w.length(len(body.b))
	w.octets(body.b...)
	return w.b, nil
}

func amfIE(v uint64) []byte {
	var w bitWriter
	w.uintOctets(v&(1<<40-1), 3)
	return w.b
}

func ranIE(v uint32) []byte {
	var w bitWriter
	w.uintOctets(uint64(v), 2)
	return w.b
}

// causeBits gives, per Cause alternative, the bits of its extensible
// ENUMERATED root (TS 38.413 9.3.1.2).
var causeBits = map[int]struct {
	n   uint
	max aper.Enumerated
}{
	ngapType.CausePresentRadioNetwork: {6, 46},
	ngapType.CausePresentTransport:    {1, 1},
	ngapType.CausePresentNas:          {2, 3},
	ngapType.CausePresentProtocol:     {3, 6},
	ngapType.CausePresentMisc:         {3, 5},
}

func causeIE(c *ngapType.Cause) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("nil cause")
	}
	var v aper.Enumerated
	switch c.Present {
	case ngapType.CausePresentRadioNetwork:
		if c.RadioNetwork != nil {
			v = c.RadioNetwork.Value
		}
	case ngapType.CausePresentTransport:
		if c.Transport != nil {
			v = c.Transport.Value
		}
	case ngapType.CausePresentNas:
		if c.Nas != nil {
			v = c.Nas.Value
		}
	case ngapType.CausePresentProtocol:
		if c.Protocol != nil {
			v = c.Protocol.Value
		}
	case ngapType.CausePresentMisc:
		if c.Misc != nil {
			v = c.Misc.Value
		}
	}
	cb, ok := causeBits[c.Present]
	if !ok || v > cb.max {
		return nil, fmt.Errorf("cause %d/%d not encodable", c.Present, v)
	}
	var w bitWriter
	w.bits(uint64(c.Present-1), 3) // 6 alternatives, no extension marker
	w.bits(0, 1)                   // ENUMERATED extension marker
	w.bits(uint64(v), cb.n)
	return w.b, nil
}

func ueNGAPIDs(amf uint64, ran *uint32) []byte {
	var w bitWriter
	if ran == nil {
		w.bits(1, 2)
		w.uintOctets(amf&(1<<40-1), 3)
		return w.b
	}
	w.bits(0, 2)
	w.bits(0, 2) // pair: extension marker, no iE-Extensions
	w.uintOctets(amf&(1<<40-1), 3)
	w.uintOctets(uint64(*ran), 2)
	return w.b
}
