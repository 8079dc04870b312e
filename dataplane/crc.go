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

// crcNibRows returns, for each of the first rows entries x^(8i) of shift,
// its 16 nibble multiples: entry j is the 4-bit polynomial j (bit 3 standing
// for x^0, placed at bits 31..28) times x^(8i) mod P (crc_nib, see
// crc_nib_mul in bpf/lib/csum.h).
func crcNibRows(shift []uint32, rows int) [][16]uint32 {
	t := make([][16]uint32, min(rows, len(shift)))
	for i := range t {
		for j := uint32(0); j < 16; j++ {
			t[i][j] = gf2MulMod(j<<28, shift[i])
		}
	}
	return t
}

// fillCRCTables writes crc_shift and its nibble rows crc_nib.
func fillCRCTables(shiftMap, nibMap *ebpf.Map) error {
	shift := crcShiftTable()
	if err := fillCRCShift(shiftMap, shift); err != nil {
		return err
	}
	rows := crcNibRows(shift, int(nibMap.MaxEntries()))
	keys := make([]uint32, len(rows))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := nibMap.BatchUpdate(keys, rows, nil); err == nil {
		return nil
	}
	for i := range rows {
		if err := nibMap.Put(uint32(i), rows[i]); err != nil {
			return fmt.Errorf("fill crc_nib: %w", err)
		}
	}
	return nil
}

func fillCRCShift(m *ebpf.Map, vals []uint32) error {
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
