package dataplane

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/telcolb/telcolb/bpf"
)

// lastSeenOf is the last_seen of service id's one client-side entry.
func lastSeenOf(t *testing.T, e *env, id uint32) uint64 {
	t.Helper()
	snap, err := e.d.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, v := range snap {
		if v.Svc == id && v.Flags&(ctFReply|ctFPath) == 0 {
			got = append(got, v.LastSeen)
		}
	}
	if len(got) != 1 {
		t.Fatalf("service %d: %d client-side entries, want 1", id, len(got))
	}
	return got[0]
}

// sendAt runs frame and says what Go's monotonic clock read just before
// and after, and the entry's last_seen.
func sendAt(t *testing.T, e *env, id uint32, frame []byte) (before, seen, after uint64) {
	t.Helper()
	before = monotonicNow()
	if ret, _ := e.run(frame); ret != actRedirect {
		t.Fatalf("verdict %d, want redirect", ret)
	}
	after = monotonicNow()
	return before, lastSeenOf(t, e, id), after
}

// checkOnMonotonic: a time the datapath wrote between Go's before and after
// is on Go's CLOCK_MONOTONIC base with tick resolution: not after after (the
// clock reads the start of the current tick), not more than two ticks
// (one of resolution, one of a late tick interrupt) and a slack for a
// loaded machine before before.
func checkOnMonotonic(t *testing.T, what string, tick, before, seen, after uint64) {
	t.Helper()
	slack := uint64(2*time.Millisecond) + 2*tick
	if seen > after || seen+slack < before {
		t.Fatalf("%s: last_seen %d is %+d ns from Go's monotonic clock read before (%d), %+d from after (%d); tick %d ns",
			what, seen, int64(seen-before), before, int64(seen-after), after, tick)
	}
}

// The datapath's clock is jiffies scaled and offset by the loader; what it
// writes must stay on the CLOCK_MONOTONIC base Go's ageing compares with
// (monotonicNow), on the slow path (the entry's creation) and on the fast
// path (an established packet) alike.
func TestDatapathClockFollowsMonotonic(t *testing.T) {
	e := newEnv(t)
	c := e.d.clock
	if c.TickNs == 0 {
		_, err := loadClock(testPinPath(t), testLogger())
		t.Fatalf("the datapath loaded without a calibrated clock (coarse helper fallback); a calibration now: %v", err)
	}
	t.Logf("tick %d ns, base %d", c.TickNs, c.Base)
	const id = 31
	e.upsert(Service{ID: id, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Endpoints: testEndpoints(false, 2, 5353)})
	frame := udpTo(clientV4, vipV4, 40100, 53).frame()
	before, seen, after := sendAt(t, e, id, frame)
	checkOnMonotonic(t, "opening", c.TickNs, before, seen, after)
	for i := 0; i < 3; i++ {
		// Later ticks: the clock advances with the monotonic time.
		time.Sleep(time.Duration(3 * c.TickNs))
		b, s, a := sendAt(t, e, id, frame)
		checkOnMonotonic(t, "established", c.TickNs, b, s, a)
		if s <= seen {
			t.Fatalf("packet %d: last_seen %d not after the previous %d, %d ns of monotonic time later", i+2, s, seen, b-before)
		}
		before, seen = b, s
	}
}

// A daemon restart keeps conntrack: the new datapath's clock must be the
// old one exactly, or an entry written just before the restart could be
// later than one written just after (now - last_seen wrapping in the
// datapath's unsigned comparisons). The stored base is reused; a fresh
// calibration agrees with it to well within a tick; a stored base that
// disagrees (not this boot's) is replaced.
func TestDatapathClockSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	first := e.d.clock
	if first.TickNs == 0 {
		t.Fatal("the datapath loaded without a calibrated clock")
	}
	e.reload(Config{MaxConns: 4096})
	if e.d.clock != first {
		t.Fatalf("after a restart the clock is %+v, was %+v", e.d.clock, first)
	}

	// Recalibrated from scratch (the stored base gone): the same base to
	// within the calibration's spread.
	pin := filepath.Join(e.pinPath, bpf.ClockMapLbClock)
	if err := os.Remove(pin); err != nil {
		t.Fatal(err)
	}
	e.reload(Config{MaxConns: 4096})
	diff := time.Duration(int64(e.d.clock.Base - first.Base))
	t.Logf("recalibrated base %+v from the first load's", diff)
	if e.d.clock.TickNs != first.TickNs || diff.Abs() > clockAgree {
		t.Fatalf("recalibrated clock %+v, first load's %+v: base %v apart", e.d.clock, first, diff)
	}

	// A stored base a second off (another boot's): replaced by the
	// calibration, and the datapath's times are on Go's clock.
	m, err := ebpf.LoadPinnedMap(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	bad := bpf.ClockClockParams{TickNs: first.TickNs, Base: first.Base + uint64(time.Second)}
	if err := m.Update(uint32(0), bad, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	e.reload(Config{MaxConns: 4096})
	if e.d.clock.Base == bad.Base {
		t.Fatal("a stored base a second off was kept")
	}
	var stored bpf.ClockClockParams
	if err := m.Lookup(uint32(0), &stored); err != nil {
		t.Fatal(err)
	}
	if stored.Base != e.d.clock.Base {
		t.Fatalf("stored base %d, the datapath's %d", stored.Base, e.d.clock.Base)
	}
	const id = 32
	e.upsert(Service{ID: id, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Endpoints: testEndpoints(false, 2, 5353)})
	before, seen, after := sendAt(t, e, id, udpTo(clientV4, vipV4, 40200, 53).frame())
	checkOnMonotonic(t, "after replacing the stored base", first.TickNs, before, seen, after)
}

// The calibration checks its tick against the monotonic time: jiffies
// scaled by a tick the kernel does not have drift off it within the few
// ticks a calibration takes, and the load falls back to the coarse clock
// rather than date every entry wrong.
func TestClockCalibrationRefusesWrongTick(t *testing.T) {
	requireRoot(t)
	spec, err := bpf.LoadClock()
	if err != nil {
		t.Fatal(err)
	}
	delete(spec.Maps, bpf.ClockMapLbClock) // not pinned here: the probe only
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	prog := coll.Programs[bpf.ClockProgClockProbe]
	tick, err := coarseTick()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := calibrateBase(prog, tick); err != nil {
		t.Fatalf("the kernel's tick %d ns: %v", tick, err)
	}
	for _, wrong := range []uint64{tick * 2, tick / 2} {
		if base, _, err := calibrateBase(prog, wrong); err == nil {
			t.Errorf("tick %d ns (the kernel's is %d) accepted, base %d", wrong, tick, base)
		}
	}
}
