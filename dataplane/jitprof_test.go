package dataplane

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// TestJitProfileLoop is a tool, not a test (hack/jitprof.sh runs it): with
// TELCOLB_JITPROF=<dir> it sets up one established flow of
// TELCOLB_JITPROF_ITEM (tcp_v4 by default; {tcp,udp,sctp}_{v4,v6}), writes
// the JIT line map of the program TELCOLB_JITPROF_PROG (tc_ingress or
// tc_floor) to <dir>/lines.txt, and runs that program on the flow's frame
// for TELCOLB_JITPROF_SECONDS (10) while perf samples the machine. perf
// cannot annotate BPF without libopcodes; the line map (each JIT address
// with the source line the verifier kept for it) lets the script charge
// each sample to a line of bpf/ instead.
func TestJitProfileLoop(t *testing.T) {
	dir := os.Getenv("TELCOLB_JITPROF")
	if dir == "" {
		t.Skip("a profiling tool: run hack/jitprof.sh")
	}
	item := os.Getenv("TELCOLB_JITPROF_ITEM")
	if item == "" {
		item = "tcp_v4"
	}
	secs := 10
	if s := os.Getenv("TELCOLB_JITPROF_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("TELCOLB_JITPROF_SECONDS=%q: want a positive number of seconds", s)
		}
		secs = n
	}
	e := newEnv(t)
	run(t, "ip", "-n", e.ns, "route", "add", "10.9.0.0/24", "via", clientV4.String())
	run(t, "ip", "-n", e.ns, "route", "add", "fd09::/64", "via", clientV6.String())

	protos := map[string]Proto{"tcp": ProtoTCP, "udp": ProtoUDP, "sctp": ProtoSCTP}
	var proto Proto
	var v6 bool
	for name, p := range protos {
		for _, fam := range []string{"v4", "v6"} {
			if item == name+"_"+fam {
				proto, v6 = p, fam == "v6"
			}
		}
	}
	if proto == 0 {
		t.Fatalf("TELCOLB_JITPROF_ITEM=%q: want {tcp,udp,sctp}_{v4,v6}", item)
	}
	client, vip := clientV4, vipV4
	if v6 {
		client, vip = clientV6, vipV6
	}
	// The flow of TestBenchPerPacket's item of the same name.
	first, est := benchFlow(proto, client, vip, 301)
	frame := setupBenchFlow(t, e, Service{ID: 101, VIP: vip, PortStart: first.dport, Proto: proto, Mode: ModeDefault, Endpoints: testEndpoints(v6, 1, 8080)}, first, est)

	prog := e.d.objs.TcIngress
	switch p := os.Getenv("TELCOLB_JITPROF_PROG"); p {
	case "", "tc_ingress":
	case "tc_floor":
		prog = e.d.objs.TcFloor
	default:
		t.Fatalf("TELCOLB_JITPROF_PROG=%q: want tc_ingress or tc_floor", p)
	}
	if err := writeJitLines(filepath.Join(dir, "lines.txt"), prog); err != nil {
		t.Fatal(err)
	}
	t.Logf("line map in %s; running %s on %s for %d s", dir, prog, item, secs)
	for end := time.Now().Add(time.Duration(secs) * time.Second); time.Now().Before(end); {
		benchNs(t, prog, frame, actRedirect)
	}
}

// writeJitLines writes prog's JIT line map: "FUNC <addr> <len>" for each
// function of the image, then "<addr> <file>:<line> <source>" for each line
// info, addresses in hex as perf prints them.
func writeJitLines(path string, prog *ebpf.Program) error {
	info, err := prog.Info()
	if err != nil {
		return fmt.Errorf("program info: %w", err)
	}
	ksyms, ok1 := info.JitedKsymAddrs()
	lens, ok2 := info.JitedFuncLens()
	addrs, ok3 := info.JitedLineInfos()
	if !ok1 || !ok2 || !ok3 {
		return fmt.Errorf("no JIT symbols or line info (JIT off, or not root?)")
	}
	lines, err := info.LineInfos()
	if err != nil {
		return fmt.Errorf("line infos: %w", err)
	}
	if len(lines) != len(addrs) {
		return fmt.Errorf("%d line infos for %d JIT addresses", len(lines), len(addrs))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for i, k := range ksyms {
		fmt.Fprintf(w, "FUNC %x %d\n", k, lens[i])
	}
	for i, a := range addrs {
		l := lines[i].Line
		fmt.Fprintf(w, "%x %s:%d %s\n", a, l.FileName(), l.LineNumber(), l.Line())
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
