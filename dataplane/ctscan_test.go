package dataplane

import (
	"bytes"
	"testing"
	"time"
)

// TestScanConntrackEncodesWhatItKeeps: the HA refresh's walk offers every
// entry DumpConntrack dumps (both conntrack maps) with its encoded key and
// its idle time, and returns, encoded exactly as the dump encodes them, the
// records of the entries it was told to keep and no others.
func TestScanConntrackEncodesWhatItKeeps(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 7, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Endpoints: testEndpoints(false, 2, 5353)})
	e.upsert(Service{ID: 8, VIP: vipV6, PortStart: 53, Proto: ProtoUDP, Endpoints: testEndpoints(true, 2, 5353)})
	epVia(t, e.run, udpTo(clientV4, vipV4, 42000, 53).frame())
	epVia(t, e.run, udpTo(clientV6, vipV6, 42001, 53).frame())
	// One clock for both walks: the records' ages are then equal.
	at := e.d.now() + uint64(1500*time.Millisecond)
	e.d.now = func() uint64 { return at }

	dump, err := e.d.DumpConntrack()
	if err != nil {
		t.Fatal(err)
	}
	if len(dump) != 4 {
		t.Fatalf("dump has %d records, want 4 (two flows, both directions)", len(dump))
	}
	offered := map[string]time.Duration{}
	want := dump[2]
	got, _, err := e.d.ScanConntrack(0, func(kind uint16, key []byte, idle time.Duration, known bool) bool {
		if kind != RecordConntrack || !known {
			t.Errorf("offered kind %d, idle known %v: want conntrack entries with their idle time", kind, known)
		}
		offered[string(key)] = idle
		return bytes.Equal(key, want.Key)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(offered) != len(dump) {
		t.Errorf("scan offered %d entries, the dump has %d", len(offered), len(dump))
	}
	for _, r := range dump {
		idle, ok := offered[string(r.Key)]
		wantIdle, _ := RecordIdle(r)
		if !ok || idle != wantIdle {
			t.Errorf("entry %x: offered %v with idle %v, want idle %v", r.Key, ok, idle, wantIdle)
		}
	}
	if len(got) != 1 || got[0].Kind != want.Kind || !bytes.Equal(got[0].Key, want.Key) || !bytes.Equal(got[0].Value, want.Value) {
		t.Fatalf("scan kept %d records %+v, want the dump's record %+v only", len(got), got, want)
	}
	if idle, ok := RecordIdle(got[0]); !ok || idle < 1500*time.Millisecond {
		t.Errorf("kept record's idle %v (known %v), want it to carry the walk's 1.5 s", idle, ok)
	}
}

// TestScanConntrackLeavesOutWhatTheLastWalkSaw: a walk given an earlier
// walk's mark offers only the entries whose flow was seen since that walk
// began: a flow opened after it (both directions), then the old flow once
// it carries a packet again; without a mark, every entry.
func TestScanConntrackLeavesOutWhatTheLastWalkSaw(t *testing.T) {
	e := newEnv(t)
	e.upsert(Service{ID: 7, VIP: vipV4, PortStart: 53, Proto: ProtoUDP, Endpoints: testEndpoints(false, 2, 5353)})
	old := udpTo(clientV4, vipV4, 42000, 53).frame()
	epVia(t, e.run, old)
	// The old flow's packet well before the walk: more than the clock's
	// tick (the stamp's resolution) and the calibration's spread.
	time.Sleep(50 * time.Millisecond)
	walk := func(since ScanMark) (map[string]bool, ScanMark) {
		t.Helper()
		offered := map[string]bool{}
		_, mark, err := e.d.ScanConntrack(since, func(kind uint16, key []byte, idle time.Duration, known bool) bool {
			offered[string(key)] = true
			return false
		})
		if err != nil {
			t.Fatal(err)
		}
		if mark == 0 {
			t.Fatal("a walk returned no mark")
		}
		return offered, mark
	}
	first, mark := walk(0)
	if len(first) != 2 {
		t.Fatalf("the first walk offered %d entries, want the old flow's 2", len(first))
	}
	epVia(t, e.run, udpTo(clientV4, vipV4, 42001, 53).frame())
	if all, _ := walk(0); len(all) != 4 {
		t.Fatalf("a walk without a mark offered %d entries, want all 4", len(all))
	}
	since, _ := walk(mark)
	if len(since) != 2 {
		t.Errorf("a walk since the first offered %d entries, want the new flow's 2", len(since))
	}
	for k := range since {
		if first[k] {
			t.Errorf("a walk since the first offered the old flow's entry %x, idle since before it", k)
		}
	}
	epVia(t, e.run, old)
	if again, _ := walk(mark); len(again) <= len(since) {
		t.Errorf("after a packet of the old flow, a walk since the first offered %d entries, want more than the %d before", len(again), len(since))
	}
}
