package dataplane

import (
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
)

// VerifierStats is what the kernel's verifier reported for one program
// (log level "stats", which costs nothing beyond a few lines of log).
// Older kernels accept less: 6.1 caps the combined stack of a bpf-to-bpf
// call chain at 512 bytes, and the per-subprogram depths here show how
// close a program is on the kernel that loaded it.
type VerifierStats struct {
	Program string
	// Insns is the number of instructions the verifier processed.
	Insns int
	// StackDepth lists each subprogram's stack frame in bytes, main
	// program first, as "stack depth a+b+c" in the log.
	StackDepth []int
}

// MaxStack is the deepest single frame.
func (s VerifierStats) MaxStack() int {
	m := 0
	for _, d := range s.StackDepth {
		m = max(m, d)
	}
	return m
}

// parseVerifierStats reads the statistics lines of a verifier log:
// "processed N insns (limit ...) ..." and "stack depth a+b+c". Lines it
// does not know are ignored; a log without them gives zero values.
func parseVerifierStats(program, log string) VerifierStats {
	st := VerifierStats{Program: program}
	for _, line := range strings.Split(log, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "processed "); ok {
			if f := strings.Fields(rest); len(f) > 1 && f[1] == "insns" {
				st.Insns, _ = strconv.Atoi(f[0])
			}
		}
		if rest, ok := strings.CutPrefix(line, "stack depth "); ok {
			st.StackDepth = st.StackDepth[:0]
			for _, p := range strings.Split(strings.Fields(rest + " ")[0], "+") {
				n, err := strconv.Atoi(p)
				if err != nil {
					st.StackDepth = nil
					break
				}
				st.StackDepth = append(st.StackDepth, n)
			}
		}
	}
	return st
}

// VerifierStats returns the verifier's statistics of the loaded programs.
func (d *Datapath) VerifierStats() []VerifierStats {
	var out []VerifierStats
	for _, p := range []struct {
		name string
		prog *ebpf.Program
	}{{"tc_ingress", d.objs.TcIngress}, {"tc_pass", d.objs.TcPass}, {"xdp_ingress", d.objs.XdpIngress}} {
		if p.prog != nil {
			out = append(out, parseVerifierStats(p.name, p.prog.VerifierLog))
		}
	}
	return out
}
