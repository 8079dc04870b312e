package dataplane

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// crc32cPoly is the reflected CRC32c (Castagnoli) polynomial.
const crc32cPoly = 0x82f63b78

// gf2MulMod multiplies two polynomials over GF(2) modulo the CRC32c
// polynomial, in the reflected representation (bit 31 is x^0), like zlib's
// multmodp and the datapath's gf2_mulmod.
func gf2MulMod(a, b uint32) uint32 {
	var p uint32
	for i := 0; i < 32; i++ {
		p ^= b & -((a >> (31 - i)) & 1)
		b = (b >> 1) ^ (crc32cPoly & -(b & 1))
	}
	return p
}

// crcShiftTable returns x^(8n) mod P for n = 0..65535: multiplying a CRC
// delta by entry n appends n zero bytes to it (see crc32c_delta in lb.c).
func crcShiftTable() []uint32 {
	t := make([]uint32, 1<<16)
	t[0] = 1 << 31 // x^0
	x8 := uint32(1) << (31 - 8)
	for n := 1; n < len(t); n++ {
		t[n] = gf2MulMod(t[n-1], x8)
	}
	return t
}

func fillCRCShift(m *ebpf.Map) error {
	vals := crcShiftTable()
	keys := make([]uint32, len(vals))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := m.BatchUpdate(keys, vals, nil); err == nil {
		return nil
	}
	for i, v := range vals {
		if err := m.Put(uint32(i), v); err != nil {
			return fmt.Errorf("fill crc_shift: %w", err)
		}
	}
	return nil
}
