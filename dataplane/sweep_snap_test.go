package dataplane

import (
	"runtime"
	"testing"
	"unsafe"

	"github.com/telcolb/telcolb/bpf"
)

// TestAgeingRoundsReuseTheirSnapshot: an ageing round judges the table
// from the map the last sweep filled, not from a new one (a round every
// 2 s made and grew a map of the whole table: most of what a loaded node
// without HA allocates). Once the table has shrunk to under a quarter of
// the most that map held, a map of the new size replaces it, so a flush
// does not keep the largest map for good.
func TestAgeingRoundsReuseTheirSnapshot(t *testing.T) {
	e := newEnvConns(t, 1<<16)
	const entries = 40_000
	fillConntrack(t, e.d, entries)
	if _, err := e.d.ageOnce(e.d.now()); err != nil {
		t.Fatal(err)
	}
	const rounds = 4
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range rounds {
		if n, err := e.d.ageOnce(e.d.now()); err != nil || n != 0 {
			t.Fatalf("ageing round: removed %d, %v; want nothing expired", n, err)
		}
	}
	runtime.ReadMemStats(&after)
	perRound := (after.TotalAlloc - before.TotalAlloc) / rounds
	entryBytes := uint64(unsafe.Sizeof(bpf.LbCtKey{}) + unsafe.Sizeof(bpf.LbCtVal{}))
	// What a round allocates whatever the table's size (the walks' batch
	// buffers, about 0.3 MiB a walk) is under a tenth of this table.
	if limit := entries * entryBytes / 4; perRound > limit {
		t.Errorf("an ageing round of %d entries allocated %d bytes, want under %d (a quarter of the entries' own size): a snapshot map made each round", entries, perRound, limit)
	}
	t.Logf("an ageing round of %d entries allocated %d bytes", entries, perRound)

	e.d.mu.Lock()
	peak := e.d.sweepPeak
	e.d.mu.Unlock()
	if peak < entries {
		t.Fatalf("the sweeps' map held at most %d entries, want %d", peak, entries)
	}
	if err := e.d.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	fillConntrack(t, e.d, 100)
	for range 2 { // the first round lets the old map go, the next makes one
		if _, err := e.d.ageOnce(e.d.now()); err != nil {
			t.Fatal(err)
		}
	}
	e.d.mu.Lock()
	peak, held := e.d.sweepPeak, len(e.d.sweepSnap)
	e.d.mu.Unlock()
	if peak != held || held > 100 {
		t.Errorf("after the table shrank to %d entries the sweeps' map is the old one (most held %d), want one of the new size", held, peak)
	}
}
