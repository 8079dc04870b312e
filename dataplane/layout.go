package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// A map layout is the flat list of its leaf fields (path, offset, size)
// read from BTF. Two layouts with the same leaves are the same layout even
// when the C code was rearranged; a pinned map whose key or value layout
// differs from the new program's must be converted entry by entry, never
// reinterpreted: same-sized structs with moved fields pass the kernel's
// compatibility checks and would silently corrupt every connection.

type leaf struct {
	path      string
	off, size uint32
	isInt     bool
}

// leaves flattens t into its leaf fields. Arrays and unions are one leaf
// each (copied whole); bitfields are refused (cannot be moved bytewise).
func leaves(t btf.Type) ([]leaf, error) {
	var out []leaf
	err := addLeaves(t, "", 0, &out)
	return out, err
}

func addLeaves(t btf.Type, prefix string, base uint32, out *[]leaf) error {
	t = btf.UnderlyingType(t)
	size, err := btf.Sizeof(t)
	if err != nil {
		return fmt.Errorf("%s: %w", prefix, err)
	}
	switch v := t.(type) {
	case *btf.Struct:
		for _, m := range v.Members {
			if m.BitfieldSize != 0 || m.Offset%8 != 0 {
				return fmt.Errorf("%s%s: bitfield", prefix, m.Name)
			}
			p := prefix
			if m.Name != "" {
				p = prefix + m.Name + "."
			}
			if err := addLeaves(m.Type, p, base+uint32(m.Offset/8), out); err != nil {
				return err
			}
		}
		return nil
	case *btf.Int, *btf.Enum, *btf.Pointer:
		*out = append(*out, leaf{path: trimDot(prefix), off: base, size: uint32(size), isInt: true})
		return nil
	default:
		*out = append(*out, leaf{path: trimDot(prefix), off: base, size: uint32(size)})
		return nil
	}
}

// isPadding reports a field named pad, pad2, ... (the C convention here).
func isPadding(path string) bool {
	last := path[strings.LastIndexByte(path, '.')+1:]
	return strings.HasPrefix(last, "pad") && strings.TrimLeft(last[3:], "0123456789") == ""
}

func trimDot(p string) string {
	if n := len(p); n > 0 && p[n-1] == '.' {
		return p[:n-1]
	}
	return p
}

// move copies one field from the old layout to the new one. Integers may
// change width (little endian: the low bytes come first); a value that does
// not fit the narrower field makes the entry unconvertible.
type move struct {
	from, fromSize, to, toSize uint32
}

// converter rewrites entries of one layout into another.
type converter struct {
	moves   []move
	newSize uint32
}

// newConverter maps the leaves of oldT onto those of newT by path. With
// complete set, every new leaf must come from the old layout (a key: a field
// left zero would change the entry's identity); otherwise new leaves start
// at zero (a value: a field the old program did not have).
func newConverter(oldT, newT btf.Type, complete bool) (*converter, error) {
	ol, err := leaves(oldT)
	if err != nil {
		return nil, fmt.Errorf("old layout: %w", err)
	}
	nl, err := leaves(newT)
	if err != nil {
		return nil, fmt.Errorf("new layout: %w", err)
	}
	size, err := btf.Sizeof(newT)
	if err != nil {
		return nil, err
	}
	byPath := make(map[string]leaf, len(ol))
	for _, l := range ol {
		byPath[l.path] = l
	}
	c := &converter{newSize: uint32(size)}
	for _, n := range nl {
		if isPadding(n.path) {
			// Padding carries no state; its size is what changes when a
			// field is carved out of it.
			continue
		}
		o, ok := byPath[n.path]
		switch {
		case !ok && complete:
			return nil, fmt.Errorf("field %q is new", n.path)
		case !ok:
			continue
		case o.size != n.size && !(o.isInt && n.isInt):
			return nil, fmt.Errorf("field %q changed size %d -> %d", n.path, o.size, n.size)
		}
		c.moves = append(c.moves, move{from: o.off, fromSize: o.size, to: n.off, toSize: n.size})
	}
	return c, nil
}

var errDoesNotFit = errors.New("a field's value does not fit its new width")

// convert builds the new form of old.
func (c *converter) convert(old []byte) ([]byte, error) {
	out := make([]byte, c.newSize)
	for _, m := range c.moves {
		if int(m.from+m.fromSize) > len(old) {
			return nil, fmt.Errorf("old entry of %d bytes too short", len(old))
		}
		src := old[m.from : m.from+m.fromSize]
		n := min(m.fromSize, m.toSize)
		for _, b := range src[n:] {
			if b != 0 {
				return nil, errDoesNotFit
			}
		}
		copy(out[m.to:m.to+n], src[:n])
	}
	return out, nil
}

// sameLayout reports whether two types have identical leaves.
func sameLayout(a, b btf.Type) (bool, error) {
	la, err := leaves(a)
	if err != nil {
		return false, err
	}
	lb, err := leaves(b)
	if err != nil {
		return false, err
	}
	if len(la) != len(lb) {
		return false, nil
	}
	for i := range la {
		if la[i] != lb[i] {
			return false, nil
		}
	}
	return true, nil
}

// uintAt reads a little-endian integer leaf (for ordering entries by age).
func uintAt(b []byte, l leaf) uint64 {
	if int(l.off+l.size) > len(b) {
		return 0
	}
	v := b[l.off : l.off+l.size]
	switch l.size {
	case 8:
		return binary.LittleEndian.Uint64(v)
	case 4:
		return uint64(binary.LittleEndian.Uint32(v))
	case 2:
		return uint64(binary.LittleEndian.Uint16(v))
	case 1:
		return uint64(v[0])
	}
	return 0
}
