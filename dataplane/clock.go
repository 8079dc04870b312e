package dataplane

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/telcolb/telcolb/bpf"
)

// The datapath's clock (bpf/lib/helpers.h, lb_now): jiffies * TickNs +
// Base, CLOCK_MONOTONIC ns at the start of the current jiffy. The kernel
// advances jiffies in whole ticks of TICK_NSEC monotonic ns, in the same
// update as the coarse clock, so jiffies*TICK_NSEC and the monotonic time of
// that tick differ by a constant of the boot. Its value is only observable,
// not readable: calibrateBase measures it.
type clockParams struct {
	TickNs uint64
	// Base wraps: jiffies start near 2^32 (INITIAL_JIFFIES), far above
	// jiffies' share of the monotonic time.
	Base uint64
}

const (
	// clockEdges is how many tight jiffy edges a calibration waits for: the
	// tightest bounds the base (one would do on an idle machine; a sample
	// preempted across the edge widens its bound).
	clockEdges = 3
	// clockTight is the widest sample gap across an edge that counts: the
	// base is known to within it.
	clockTight = 50 * time.Microsecond
	// clockMaxWait bounds a calibration on a loaded machine: enough for a
	// few ticks at HZ=100.
	clockMaxWait = 300 * time.Millisecond
	// clockAgree is how far a stored base may be from a fresh calibration
	// and still be taken as this boot's (far below a tick at any HZ, far
	// above the calibration's spread).
	clockAgree = 500 * time.Microsecond
)

// coarseTick is the kernel's tick (TICK_NSEC): the resolution Linux gives
// for the coarse clocks (LOW_RES_NSEC), and the monotonic ns one jiffy is.
func coarseTick() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGetres(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		return 0, fmt.Errorf("clock_getres CLOCK_MONOTONIC_COARSE: %w", err)
	}
	t := ts.Nano()
	if t <= 0 || t > int64(time.Second) {
		return 0, fmt.Errorf("clock_getres CLOCK_MONOTONIC_COARSE: implausible tick %d ns", t)
	}
	return uint64(t), nil
}

// clockSample is one run of the probe: CLOCK_MONOTONIC, then jiffies.
type clockSample struct{ mono, jiffies uint64 }

func probeClock(prog *ebpf.Program) (clockSample, error) {
	var in, out [64]byte
	opts := &ebpf.RunOptions{Data: in[:], DataOut: out[:]}
	ret, err := prog.Run(opts)
	if err != nil {
		return clockSample{}, fmt.Errorf("run clock probe: %w", err)
	}
	if ret != 2 { // XDP_PASS
		return clockSample{}, fmt.Errorf("clock probe returned %d", ret)
	}
	return clockSample{mono: binary.LittleEndian.Uint64(out[0:]), jiffies: binary.LittleEndian.Uint64(out[8:])}, nil
}

// calibrateBase measures the base: for every sample, mono - jiffies*tick
// is at least the base (jiffies j is published only once the monotonic
// time has reached tick j's start), less the few ns between the probe's
// two reads; it is closest just after a jiffy edge. The minimum over
// samples taken densely across edges is the base to within the sample gap
// at the tightest edge. That minimum keeps lb_now() at or before
// CLOCK_MONOTONIC, as the coarse clock is, so Go's now - last_seen does not
// go negative.
//
// gap is the tightest edge's sample gap; 0 when no edge was sampled within
// clockTight (a loaded machine): the base is then still an upper bound, off
// by at most the smallest gap seen, a tick at worst.
func calibrateBase(prog *ebpf.Program, tick uint64) (base uint64, gap time.Duration, err error) {
	first, err := probeClock(prog)
	if err != nil {
		return 0, 0, err
	}
	ref := first.mono - first.jiffies*tick
	lowest := int64(0) // relative to ref: the wrap stays out of the comparison
	prev := first
	tight, edges := 0, 0
	// The samples just after the first and the last edge: their jiffies
	// are fresh (the tick's update just seen), where any other sample's may
	// lag by ticks still pending (a loaded or emulated guest).
	var edgeFirst, edgeLast clockSample
	gap = time.Duration(1<<63 - 1)
	start := time.Now()
	for tight < clockEdges && time.Since(start) < clockMaxWait {
		s, err := probeClock(prog)
		if err != nil {
			return 0, 0, err
		}
		if s.jiffies < prev.jiffies || s.mono < prev.mono {
			return 0, 0, fmt.Errorf("clock probe went back: jiffies %d -> %d, mono %d -> %d", prev.jiffies, s.jiffies, prev.mono, s.mono)
		}
		if d := int64(s.mono - s.jiffies*tick - ref); d < lowest {
			lowest = d
		}
		if s.jiffies != prev.jiffies {
			if edges == 0 {
				edgeFirst = s
			}
			edgeLast = s
			edges++
			if g := time.Duration(s.mono - prev.mono); g <= clockTight {
				tight++
				gap = min(gap, g)
			}
		}
		prev = s
	}
	if edges == 0 {
		return 0, 0, fmt.Errorf("jiffies did not advance in %v", time.Since(start))
	}
	// jiffies*tick must follow the monotonic time between two fresh
	// edges: a tick other than the kernel's (by a factor; HZ 250 against
	// 300 hides in the tick interrupts' latency) drifts by a tick or more
	// over the calibration's two or more ticks, the latencies (and the
	// sample gaps: an emulated guest samples 100s of us apart) by far less.
	if edges >= 2 {
		elapsed := int64(edgeLast.mono - edgeFirst.mono)
		drift := int64(edgeLast.jiffies-edgeFirst.jiffies)*int64(tick) - elapsed
		if bound := int64(tick)/2 + elapsed/10; drift > bound || drift < -bound {
			return 0, 0, fmt.Errorf("jiffies at %d ns a tick drift %d ns from CLOCK_MONOTONIC over %d ns", tick, drift, elapsed)
		}
	}
	if tight == 0 {
		gap = 0
	}
	return ref + uint64(lowest), gap, nil
}

// setupClock chooses lb_now()'s constants for this load and sets them in
// spec: the base stored in the pin path's lb_clock when an earlier load of
// this boot stored one that a fresh calibration confirms (a restart then
// keeps the exact base, so times written before and after it compare),
// else the fresh calibration, stored for the next load. Failing that the
// constants stay 0 and lb_now() reads the coarse clock: same base, dearer.
func setupClock(spec *ebpf.CollectionSpec, pinPath string, log *slog.Logger) (clockParams, error) {
	// A calibration can fail on a busy machine (a guest descheduled across
	// the ticks it watches); the next one, a few ms later, may not.
	var c clockParams
	var err error
	for try := 0; try < 3; try++ {
		if c, err = loadClock(pinPath, log); err == nil {
			break
		}
	}
	if err != nil {
		log.Warn("datapath clock: calibration failed; using the coarse clock helper", "err", err)
		return clockParams{}, nil
	}
	if err := setClockVars(spec, c, bpf.LbVarLbClockTickNs, bpf.LbVarLbClockBase); err != nil {
		return clockParams{}, err
	}
	return c, nil
}

// setClockVars sets the clock constants of an object (the datapath's, the
// socket programs': both write times the other compares, in affinity).
func setClockVars(spec *ebpf.CollectionSpec, c clockParams, tickVar, baseVar string) error {
	if c.TickNs == 0 {
		return nil
	}
	for name, val := range map[string]uint64{tickVar: c.TickNs, baseVar: c.Base} {
		v, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("object has no %s", name)
		}
		if err := v.Set(val); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}

func loadClock(pinPath string, log *slog.Logger) (clockParams, error) {
	tick, err := coarseTick()
	if err != nil {
		return clockParams{}, err
	}
	spec, err := bpf.LoadClock()
	if err != nil {
		return clockParams{}, fmt.Errorf("load clock probe spec: %w", err)
	}
	var objs bpf.ClockObjects
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinPath}}); err != nil {
		return clockParams{}, fmt.Errorf("load clock probe: %w", err)
	}
	defer objs.Close()
	base, gap, err := calibrateBase(objs.ClockProbe, tick)
	if err != nil {
		return clockParams{}, err
	}
	if gap == 0 {
		// A loaded machine: a stored base, if it agrees, is better.
		log.Warn("datapath clock: no jiffy edge sampled tightly", "within", clockTight, "wait", clockMaxWait)
	}
	fresh := clockParams{TickNs: tick, Base: base}
	var stored bpf.ClockClockParams
	if err := objs.LbClock.Lookup(uint32(0), &stored); err != nil {
		return clockParams{}, fmt.Errorf("read stored clock: %w", err)
	}
	if stored.TickNs == tick {
		diff := time.Duration(int64(stored.Base - base))
		if diff.Abs() <= clockAgree {
			log.Info("datapath clock", "tickNs", tick, "base", stored.Base, "stored", true, "calibratedDiff", diff, "edgeGap", gap)
			return clockParams{TickNs: stored.TickNs, Base: stored.Base}, nil
		}
		log.Warn("datapath clock: stored base disagrees with calibration; replacing it", "stored", stored.Base, "calibrated", base, "diff", diff)
	}
	if err := objs.LbClock.Update(uint32(0), bpf.ClockClockParams{TickNs: tick, Base: base}, ebpf.UpdateAny); err != nil {
		return clockParams{}, fmt.Errorf("store clock: %w", err)
	}
	log.Info("datapath clock", "tickNs", tick, "base", base, "stored", false, "edgeGap", gap)
	return fresh, nil
}
