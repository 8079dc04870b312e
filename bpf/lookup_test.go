package bpf

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf/asm"
)

// The verifier inlines a bpf_map_lookup_elem call (a direct call of the
// map type's lookup, or a few instructions for an array) only when that
// call instruction always sees one map. clang may merge two lookups of
// different maps that end alike (the conntrack lookup of each family,
// lib/ct_map.h and ct_lookup_pkt) into one call fed from both branches:
// the program still verifies, but every packet then calls the lookup
// through the map's ops, about 10 ns more a lookup (issue 13). Seen in
// tc_floor and xdp_ingress when ct_lookup_pkt first built the compact key
// itself, and in ct_lookup's callers mh_ack_entry and snat_pick (seven
// sites in its port search) until ct_lookup_as got its barrier. So in the
// per-packet programs every lookup must take its map from an instruction
// of its own straight-line block.
func TestPacketPathLookupsHaveOneMapEach(t *testing.T) {
	spec, err := LoadLb()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tc_ingress", "tc_floor", "xdp_ingress"} {
		prog := spec.Programs[name]
		if prog == nil {
			t.Fatalf("no program %s", name)
		}
		t.Run(name, func(t *testing.T) {
			lookups := 0
			for _, bad := range mergedLookups(prog.Instructions, &lookups) {
				t.Errorf("%s: %s", name, bad)
			}
			if lookups == 0 {
				t.Fatalf("%s: no map lookups found: the scan is broken", name)
			}
		})
	}
}

// mergedLookups returns a description of each bpf_map_lookup_elem call in
// insns whose map (R1) is not loaded by a map-pointer load in the call's
// own straight-line block: R1 set by anything else, or control joining
// between the load and the call. *n counts the calls looked at.
func mergedLookups(insns asm.Instructions, n *int) []string {
	type at struct {
		ins *asm.Instruction
		off asm.RawInstructionOffset
	}
	var list []at
	targets := map[asm.RawInstructionOffset]bool{}
	for it := insns.Iterate(); it.Next(); {
		list = append(list, at{it.Ins, it.Offset})
		op := it.Ins.OpCode
		if !op.Class().IsJump() {
			continue
		}
		switch op.JumpOp() {
		case asm.Call, asm.Exit:
			continue
		}
		off := int64(it.Ins.Offset)
		if op.JumpOp() == asm.Ja && op.Class() == asm.Jump32Class {
			off = it.Ins.Constant // gotol
		}
		targets[it.Offset+1+asm.RawInstructionOffset(off)] = true
	}
	var bad []string
	fn := ""
	for i, a := range list {
		if s := a.ins.Symbol(); s != "" {
			fn = s
		}
		if !a.ins.IsBuiltinCall() || a.ins.Constant != int64(asm.FnMapLookupElem) {
			continue
		}
		*n++
		why := "no map-pointer load into R1 before it in its block"
		for j := i; j >= 0; j-- {
			b := list[j].ins
			if j < i && writesR1(b) {
				// The map's load may itself be a join point: it runs on
				// every path then.
				if b.OpCode == asm.LoadImmOp(asm.DWord) && b.Src == asm.PseudoMapFD {
					why = ""
				} else {
					why = fmt.Sprintf("R1 is set by %v, not by a map-pointer load", *b)
				}
				break
			}
			// Control reaching the call (or anything after R1's load) from
			// elsewhere: a jump target or a function's first instruction.
			if targets[list[j].off] || b.Symbol() != "" {
				why = "control joins between the map's load and the call"
				break
			}
			if j < i && b.OpCode.Class().IsJump() && b.OpCode.JumpOp() == asm.Call {
				why = "R1 is clobbered by an earlier call in its block"
				break
			}
		}
		if why != "" {
			bad = append(bad, fmt.Sprintf("lookup at instruction %d (in %s): %s", a.off, fn, why))
		}
	}
	return bad
}

// writesR1 reports whether ins sets R1 (ALU, moves and loads; stores and
// jumps do not set registers).
func writesR1(ins *asm.Instruction) bool {
	c := ins.OpCode.Class()
	if c.IsALU() || c == asm.LdClass || c == asm.LdXClass {
		return ins.Dst == asm.R1
	}
	return false
}
