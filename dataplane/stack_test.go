package dataplane

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/bpf"
)

// maxCombinedStack is the kernel's limit on the stack frames of one chain
// of bpf-to-bpf calls (MAX_BPF_STACK); each frame counts rounded up to 32
// bytes. Kernels with private BPF stacks (6.13+ on x86-64) may accept a
// deeper chain, so this host can load a program that 5.15 and 6.1 refuse:
// this test catches that here, without the 6.1 VM.
const maxCombinedStack = 512

// TestCombinedStackFitsOlderKernels walks the call graphs of tc_ingress
// and xdp_ingress with the frame sizes the verifier reported and checks
// every chain against the limit older kernels enforce.
func TestCombinedStackFitsOlderKernels(t *testing.T) {
	requireRoot(t)
	d, err := Load(Config{PinPath: testPinPath(t), MaxConns: 1024, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy() })
	spec, err := bpf.LoadLb()
	if err != nil {
		t.Fatal(err)
	}
	for _, prog := range []string{"tc_ingress", "xdp_ingress"} {
		t.Run(prog, func(t *testing.T) { checkCombinedStack(t, d, spec, prog) })
	}
}

func checkCombinedStack(t *testing.T, d *Datapath, spec *ebpf.CollectionSpec, prog string) {
	var depths []int
	for _, st := range d.VerifierStats() {
		if st.Program == prog {
			depths = st.StackDepth
		}
	}
	// Subprograms are numbered by where they start, which is the order
	// of their symbols in the linked instructions.
	var order []string
	calls := map[string][]string{}
	cur := ""
	for _, ins := range spec.Programs[prog].Instructions {
		if s := ins.Symbol(); s != "" {
			cur = s
			order = append(order, s)
		}
		if ins.IsFunctionCall() && ins.Reference() != "" {
			calls[cur] = append(calls[cur], ins.Reference())
		}
	}
	if len(order) != len(depths) {
		t.Fatalf("%d functions (%v) but %d stack depths (%v) from the verifier", len(order), order, len(depths), depths)
	}
	frame := map[string]int{}
	for i, name := range order {
		frame[name] = (max(depths[i], 1) + 31) / 32 * 32
	}
	var deepest func(name string, seen map[string]bool) (int, []string)
	deepest = func(name string, seen map[string]bool) (int, []string) {
		if seen[name] {
			t.Fatalf("recursive call through %s", name)
		}
		seen[name] = true
		defer delete(seen, name)
		best, path := 0, []string(nil)
		for _, c := range calls[name] {
			if n, p := deepest(c, seen); n > best {
				best, path = n, p
			}
		}
		return frame[name] + best, append([]string{fmt.Sprintf("%s(%d)", name, frame[name])}, path...)
	}
	total, chain := deepest(prog, map[string]bool{})
	t.Logf("deepest chain %d bytes: %s", total, strings.Join(chain, " "))
	if total > maxCombinedStack {
		t.Fatalf("combined stack %d bytes > %d on the chain %s: 5.15 and 6.1 refuse the program", total, maxCombinedStack, strings.Join(chain, " "))
	}
}
