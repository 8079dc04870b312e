package app

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/telcolb/telcolb/dataplane"
)

// timedCT is a memCT whose entries have a last packet time, carried in
// records as dataplane's encoding does (field "last_seen@age": the idle
// time + 1 ns when the record is made), so that the HA layer can tell
// which copy of a flow carries its traffic.
type timedCT struct {
	*memCT
	seen map[string]time.Time
}

func newTimedCT() *timedCT { return &timedCT{memCT: newMemCT(), seen: map[string]time.Time{}} }

// encodeTimed is a record value: the payload (field "v") and the idle time.
func encodeTimed(payload string, idle time.Duration) []byte {
	b := []byte{1} // the record encoding's version
	field := func(name string, data []byte) {
		b = append(b, byte(len(name)))
		b = append(b, name...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
		b = append(b, data...)
	}
	field("v", []byte(payload))
	field("last_seen@age", binary.LittleEndian.AppendUint64(nil, uint64(idle)+1))
	return b
}

// payloadOf reads the "v" field of encodeTimed.
func payloadOf(t *testing.T, v []byte) string {
	if len(v) < 2 || v[0] != 1 || v[1] != 1 || v[2] != 'v' {
		t.Fatalf("not a timed record value: %q", v)
	}
	n := int(binary.BigEndian.Uint16(v[3:]))
	return string(v[5 : 5+n])
}

func (m *timedCT) DumpConntrack() ([]dataplane.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	var out []dataplane.Record
	for k, r := range m.table {
		r.Value = encodeTimed(string(r.Value), now.Sub(m.seen[k]))
		out = append(out, r)
	}
	return out, nil
}

func (m *timedCT) ImportConntrack(recs []dataplane.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for _, r := range recs {
		m.imports++
		k := string(r.Key)
		if r.Deleted {
			delete(m.table, k)
			delete(m.seen, k)
			continue
		}
		idle, ok := dataplane.RecordIdle(r)
		if !ok {
			return &dataplane.ImportError{Refused: []dataplane.RefusedRecord{{Kind: r.Kind, Err: errNoTime}}}
		}
		n := int(binary.BigEndian.Uint16(r.Value[3:]))
		m.table[k] = dataplane.Record{Kind: r.Kind, Key: r.Key, Value: r.Value[5 : 5+n]}
		m.seen[k] = now.Add(-idle)
	}
	return nil
}

var errNoTime = errors.New("record without last_seen")

// put sets an entry as if it were there (a pinned table), last seen at seen.
func (m *timedCT) put(key, payload string, seen time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.table[key] = ctRec(key, payload)
	m.seen[key] = seen
}

// change is a state change here: a change event with the new value.
func (m *timedCT) change(key, payload string) {
	m.put(key, payload, time.Now())
	m.changes <- []dataplane.Record{{Kind: dataplane.RecordConntrack, Key: []byte(key), Value: encodeTimed(payload, 0)}}
}

// traffic is a packet of the flow here: its last packet time moves, no
// change event (as the datapath does for established flows).
func (m *timedCT) traffic(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seen[key] = time.Now()
}

// flowing is traffic every 10 ms until stopped (a copy's import, the
// owner's refresh, sets the last packet time back each round, as the
// datapath's import does).
func (m *timedCT) flowing(t *testing.T, keys ...string) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		for {
			for _, k := range keys {
				m.traffic(k)
			}
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	stop = func() {
		select {
		case <-done:
		default:
			close(done)
			<-exited
		}
	}
	t.Cleanup(stop)
	return stop
}

func (m *timedCT) value(key string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.table[key]
	return string(r.Value), ok
}

func (h *HA) isCopy(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.imported[mapKey(dataplane.RecordConntrack, []byte(key))]
	return ok
}

func (h *HA) owns(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.owned[mapKey(dataplane.RecordConntrack, []byte(key))]
	return ok
}

// TestHARejoinGetsWhatThePeerTookOver: lb1 owns k1, k2, k5, lb2 has
// copies. k2 carries traffic through lb2 while lb1 is up: lb2 takes it over
// and lb1 takes lb2's copy. lb1 fails: lb2 takes over k1 (no traffic, no
// change: only lb1's failure says so), k5 changes state on lb2. lb1
// rejoins with its pinned, older k5 and nothing else: its bulk resync from
// lb2 carries k1, k2 and lb2's k5; lb1's sweep of what it no longer has
// deletes nothing on lb2, and its older k5 does not replace lb2's.
func TestHARejoinGetsWhatThePeerTookOver(t *testing.T) {
	start := newHAPair(t).start
	lb1, lb2 := newTimedCT(), newTimedCT()
	now := time.Now()
	for _, k := range []string{"k1", "k2", "k5"} {
		lb1.put(k, "v-"+k, now)
	}
	ha1, ha2 := start("lb1", lb1), start("lb2", lb2)
	waitFor(t, "lb1's flows on lb2, both ready", func() bool {
		return lb2.has("k1") && lb2.has("k2") && lb2.has("k5") && ha1.Waiting() == "" && ha2.Waiting() == ""
	})
	// k2's traffic moves to lb2 (lb1 still up).
	time.Sleep(200 * time.Millisecond) // k2's last packet on lb1 is older than the slack
	stop := lb2.flowing(t, "k2")
	waitFor(t, "lb2 owning k2 and lb1 holding lb2's copy", func() bool { return ha2.owns("k2") && ha1.isCopy("k2") })
	if ha2.owns("k1") || !ha2.isCopy("k1") {
		t.Fatal("lb2 took k1 over without traffic while lb1 is up")
	}
	stop()
	// lb1 fails.
	if err := ha1.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "lb2 owning k1 once lb1 is down", func() bool { return ha2.owns("k1") })
	lb2.change("k5", "v-k5-lb2")
	time.Sleep(300 * time.Millisecond)
	// lb1 comes back with its pinned k5 (its last packet before the
	// failure) and no other entry.
	lb1 = newTimedCT()
	lb1.put("k5", "v-k5", now)
	ha1 = start("lb1", lb1)
	// Ready only with lb2's resync in: at every look until it is ready,
	// a ready lb1 holds what lb2 took over. (Asking once right after
	// the start raced the resync on a loaded machine: on loopback it may
	// complete before the test's next statement runs.)
	waitFor(t, "lb1 ready", func() bool {
		if ha1.Waiting() != "" {
			return false
		}
		if !lb1.has("k1") || !lb1.has("k2") {
			t.Fatalf("rejoining lb1 ready before lb2's resync (k1 held %v, k2 held %v)", lb1.has("k1"), lb1.has("k2"))
		}
		return true
	})
	time.Sleep(500 * time.Millisecond) // refresh rounds on both
	for _, k := range []string{"k1", "k2", "k5"} {
		if !lb2.has(k) {
			t.Errorf("lb2 lost %s when lb1 rejoined", k)
		}
		if !lb1.has(k) {
			t.Errorf("rejoined lb1 lacks %s, which lb2 serves", k)
		}
	}
	if v, _ := lb2.value("k5"); v != "v-k5-lb2" {
		t.Errorf("lb2's k5 = %q after lb1 rejoined, want its own v-k5-lb2", v)
	}
	if v, _ := lb1.value("k5"); v != "v-k5-lb2" {
		t.Errorf("lb1's k5 = %q after the resync, want lb2's v-k5-lb2", v)
	}
	// Traffic moves back to lb1: lb1 takes the flows over, lb2 keeps them
	// as copies (nothing deleted).
	time.Sleep(200 * time.Millisecond)
	lb1.flowing(t, "k1", "k2", "k5")
	defer func() {
		for _, k := range []string{"k1", "k2", "k5"} {
			t.Logf("%s: lb1 owns %v copy %v; lb2 owns %v copy %v", k, ha1.owns(k), ha1.isCopy(k), ha2.owns(k), ha2.isCopy(k))
		}
	}()
	waitFor(t, "lb1 owning k1, k2, k5 again", func() bool {
		return ha1.owns("k1") && ha1.owns("k2") && ha1.owns("k5") && ha2.isCopy("k1") && ha2.isCopy("k2") && ha2.isCopy("k5")
	})
	for _, k := range []string{"k1", "k2", "k5"} {
		if !lb2.has(k) || !lb1.has(k) {
			t.Errorf("%s lost when traffic moved back to lb1: lb1 %v, lb2 %v", k, lb1.has(k), lb2.has(k))
		}
	}
}
