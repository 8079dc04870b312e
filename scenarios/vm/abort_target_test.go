package vm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/scenarios/sctppeer"
	"github.com/telcolb/telcolb/scenarios/vm"
	"github.com/telcolb/telcolb/sctplb/abort"
)

// targetEvent is telcolb-ksctp's "abort-target" line.
type targetEvent struct {
	Event string `json:"event"`
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	Tag   uint32 `json:"tag"`
	Error string `json:"error"`
}

func abortTargetOf(t *testing.T, who, stdout string) abort.Target {
	t.Helper()
	for _, line := range strings.Split(stdout, "\n") {
		var e targetEvent
		if json.Unmarshal([]byte(line), &e) != nil || e.Event != "abort-target" {
			continue
		}
		if e.Error != "" {
			t.Fatalf("%s: no abort target: %s", who, e.Error)
		}
		src, err1 := netip.ParseAddrPort(e.Src)
		dst, err2 := netip.ParseAddrPort(e.Dst)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: abort target %+v: %v %v", who, e, err1, err2)
		}
		return abort.Target{Src: src, Dst: dst, Tag: e.Tag}
	}
	t.Fatalf("%s printed no abort target:\n%s", who, stdout)
	return abort.Target{}
}

// initiateTags reads the Initiate Tag of every INIT (chunk 1) and INIT ACK
// (chunk 2) of a capture.
func initiateTags(t *testing.T, ctx context.Context, file string, chunk int, field string) []uint32 {
	t.Helper()
	rows, err := capture.Fields(ctx, file, fmt.Sprintf("sctp.chunk_type == %d", chunk), field)
	if err != nil {
		t.Fatal(err)
	}
	var out []uint32
	for _, r := range rows {
		v, err := strconv.ParseUint(r[0], 0, 32)
		if err != nil {
			t.Fatalf("%s %q: %v", field, r[0], err)
		}
		out = append(out, uint32(v))
	}
	return out
}

// The kernel transport's ABORT target (sctp_diag's tags) is the
// association's on the wire, and the ABORT built from it, sent by a third
// host as a surviving HA node would, ends the association on a Linux peer
// at once. A gNB (kernel SCTP in the client VM, the kernel's default
// timers: heartbeat 30 s) is associated to a proxy on the kernel transport
// (be1 VM); both print their target. The proxy's link is cut and its
// process killed (a dead node: its own ABORT never leaves). From the lb's
// namespace, on the path, an ABORT with the target's tag plus one is sent
// first (the gNB's kernel must discard it: the association stays), then
// the target's ABORT: the gNB's association ends (its sends fail, the
// kernel counts one more SctpAborteds, /proc/net/sctp/assocs is empty).
// Checked in a capture on the lb's gNB-side link: the INIT's Initiate Tag
// is the proxy's target tag, the INIT ACK's the gNB's target tag, every
// packet to the gNB carries the former.
func TestKernelTransportAbortTargetEndsTheGNBsAssociation(t *testing.T) {
	vm.RequireVM(t)
	img := vm.TestImage(t, nil, nil, "github.com/telcolb/telcolb/scenarios/vm/cmd/telcolb-ksctp")
	l := lab.New(t, lab.Config{Backends: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var gnb, proxy *vm.VM
	var gerr, perr error
	var wg sync.WaitGroup
	wg.Add(2)
	// The kernel's default SCTP timers (zero SCTPTimers): nothing but an
	// ABORT ends the gNB's association within minutes of the cut.
	go func() {
		defer wg.Done()
		gnb, gerr = vm.Replace(ctx, l.Client, img, vm.SCTPTimers{}, vm.Config{Logger: vm.TestLogger(t)})
	}()
	go func() {
		defer wg.Done()
		proxy, perr = vm.Replace(ctx, l.Backends[0], img, vm.SCTPTimers{}, vm.Config{Logger: vm.TestLogger(t)})
	}()
	wg.Wait()
	for _, v := range []*vm.VM{gnb, proxy} {
		if v != nil {
			vm.CloseOnCleanup(t, v)
		}
	}
	if gerr != nil || perr != nil {
		t.Fatalf("VMs: gNB %v; proxy %v", gerr, perr)
	}
	gnbAddr, proxyAddr := l.ClientIface(0).V4(), l.BackendIface(0, 0).V4()

	dir := t.TempDir()
	cp, err := capture.Start(ctx, l.LB, l.LBClientIface(0).Name, dir)
	if err != nil {
		t.Fatal(err)
	}
	capStopped := false
	defer func() {
		if !capStopped {
			_ = cp.Stop()
		}
	}()

	srv := proxy.Start("telcolb-ksctp", "server", "--bind", proxyAddr.String(), "--port", fmt.Sprint(port), "--id", "proxy")
	defer srv.Stop()
	if _, err := proxy.Sh(ctx, fmt.Sprintf("n=0; until grep -q ' %d ' /proc/net/sctp/eps; do n=$((n+1)); [ $n -lt 300 ] || exit 1; sleep 0.1; done", port)); err != nil {
		r := srv.Stop()
		t.Fatalf("proxy did not listen: %v; %s %s", err, r.Stdout, r.Stderr)
	}
	// 600 messages 100 ms apart: the gNB sends for a minute unless its
	// association ends.
	cli := gnb.Start("telcolb-ksctp", "client", "--bind", gnbAddr.String(), "--connect", proxyAddr.String(),
		"--port", fmt.Sprint(port), "--count", "600", "--interval", "100ms", "--streams", "2", "--wait", "1s")
	defer cli.Stop()
	assocUp := "n=0; until [ $(grep -c ' %d ' /proc/net/sctp/assocs) -ge 1 ]; do n=$((n+1)); [ $n -lt 300 ] || exit 1; sleep 0.1; done"
	if _, err := gnb.Sh(ctx, fmt.Sprintf(assocUp, port)); err != nil {
		r := cli.Stop()
		t.Fatalf("gNB did not associate: %v; %s %s", err, r.Stdout, r.Stderr)
	}
	time.Sleep(time.Second) // echoes flowing

	// The proxy node dies: link cut, then its process killed (the
	// kernel's ABORT for its socket is lost on the cut link).
	if err := l.BackendIface(0, 0).SetUp(ctx, false); err != nil {
		t.Fatal(err)
	}
	sr := srv.Stop()
	t.Logf("proxy: %s%s", sr.Stdout, sr.Stderr)
	target := abortTargetOf(t, "proxy", sr.Stdout)
	t.Logf("proxy's abort target (sctp_diag): %v", target)
	if target.Src != netip.AddrPortFrom(proxyAddr, port) || target.Dst.Addr() != gnbAddr || !target.Valid() {
		t.Fatalf("proxy's abort target %v, want from %v:%d to %v", target, proxyAddr, port, gnbAddr)
	}
	before, err := gnb.SCTPCounters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(tag uint32) {
		t.Helper()
		if err := l.LB.Do(func() error { return abort.Send(target.Src, target.Dst, tag, false) }); err != nil {
			t.Fatal(err)
		}
	}
	assocs := func() string {
		t.Helper()
		out, err := gnb.Sh(ctx, "cat /proc/net/sctp/assocs")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	// A tag off by one: discarded, the association stays.
	send(target.Tag + 1)
	time.Sleep(2 * time.Second)
	if a := assocs(); !strings.Contains(a, fmt.Sprintf(" %d ", port)) {
		t.Fatalf("the gNB's association ended on an ABORT with a wrong tag:\n%s", a)
	}
	early, ecancel := context.WithTimeout(ctx, time.Millisecond)
	if r, err := cli.Wait(early); err == nil {
		ecancel()
		t.Fatalf("gNB client ended before the ABORT: %s %s", r.Stdout, r.Stderr)
	}
	ecancel()

	abortedAt := time.Now()
	send(target.Tag)
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	cr, err := cli.Wait(wctx)
	wcancel()
	if err != nil {
		t.Fatalf("gNB's association still up 30 s after the ABORT (its client did not end: %v)\n%s", err, assocs())
	}
	t.Logf("gNB client ended %v after the ABORT: %s%s", time.Since(abortedAt).Round(time.Millisecond), cr.Stdout, cr.Stderr)
	res, err := sctppeer.ParseResult(cr.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Associated || res.Sent >= 600 || !strings.HasPrefix(res.Error, "send ") {
		t.Errorf("gNB client %+v: want an association whose sends failed before the 600th", res)
	}
	after, err := gnb.SCTPCounters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := after["SctpAborteds"] - before["SctpAborteds"]; d != 1 {
		t.Errorf("gNB kernel's SctpAborteds grew by %d, want 1 (the one ABORT with the right tag)", d)
	}
	if a := assocs(); strings.Contains(a, fmt.Sprintf(" %d ", port)) {
		t.Errorf("gNB kernel still lists the association:\n%s", a)
	}
	gnbTarget := abortTargetOf(t, "gNB", cr.Stdout)
	t.Logf("gNB's abort target (sctp_diag): %v", gnbTarget)

	// The wire.
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	capStopped = true
	file := cp.File
	inits := initiateTags(t, ctx, file, 1, "sctp.init_initiate_tag")
	initAcks := initiateTags(t, ctx, file, 2, "sctp.initack_initiate_tag")
	if len(inits) != 1 || len(initAcks) != 1 {
		t.Fatalf("INIT initiate tags %x, INIT ACK %x: want one each", inits, initAcks)
	}
	if target.Tag != inits[0] {
		t.Errorf("proxy's target tag %#x, the gNB's INIT chose %#x", target.Tag, inits[0])
	}
	if gnbTarget.Tag != initAcks[0] || gnbTarget.Dst != target.Src || gnbTarget.Src != target.Dst {
		t.Errorf("gNB's target %v, the proxy's INIT ACK chose %#x (proxy's target %v)", gnbTarget, initAcks[0], target)
	}
	pkts, err := capture.SCTP(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	toGNB, aborts := 0, 0
	for _, p := range pkts {
		if p.Dst != gnbAddr.String() {
			continue
		}
		if len(p.Chunks) == 1 && p.Chunks[0] == capture.ChunkName(6) {
			aborts++
			if p.Src != proxyAddr.String() || p.SrcPort != port {
				t.Errorf("ABORT frame %d from %s:%d", p.Frame, p.Src, p.SrcPort)
			}
			continue
		}
		toGNB++
		if p.Chunks[0] != capture.ChunkName(1) && p.VTag != target.Tag {
			t.Errorf("frame %d to the gNB (%v) carries tag %#x, the target %#x", p.Frame, p.Chunks, p.VTag, target.Tag)
		}
	}
	if toGNB < 5 || aborts != 2 {
		t.Errorf("capture: %d packets to the gNB, %d ABORTs (want the two sent)", toGNB, aborts)
	}
	if t.Failed() {
		t.Logf("capture kept at %s", filepath.Base(file))
	}
}
