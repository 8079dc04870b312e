package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	stdsync "sync"
	"testing"
	"time"

	"github.com/telcolb/telcolb/dataplane"
	"github.com/telcolb/telcolb/ha/sync"
	labha "github.com/telcolb/telcolb/scenarios/ha"
)

// memCT is a conntrack table in memory with a change feed, standing in
// for the datapath on both sides of a sync.
type memCT struct {
	mu      stdsync.Mutex
	table   map[string]dataplane.Record
	changes chan []dataplane.Record
	closed  chan struct{}
	imports int // records imported
}

func newMemCT() *memCT {
	return &memCT{table: map[string]dataplane.Record{}, changes: make(chan []dataplane.Record, 16), closed: make(chan struct{})}
}

func (m *memCT) ConntrackChanges() (ChangeReader, error) { return m, nil }

func (m *memCT) Read() ([]dataplane.Record, error) {
	select {
	case r := <-m.changes:
		return r, nil
	case <-m.closed:
		return nil, dataplane.ErrChangesClosed
	}
}

func (m *memCT) Close() error {
	select {
	case <-m.closed:
	default:
		close(m.closed)
	}
	return nil
}

func (m *memCT) DumpConntrack() ([]dataplane.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []dataplane.Record
	for _, r := range m.table {
		out = append(out, r)
	}
	return out, nil
}

func (m *memCT) ImportConntrack(recs []dataplane.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		m.imports++
		if r.Deleted {
			delete(m.table, string(r.Key))
		} else {
			m.table[string(r.Key)] = r
		}
	}
	return nil
}

// local is a change made by this node's datapath: in the table and on
// the feed.
func (m *memCT) local(r dataplane.Record) {
	m.mu.Lock()
	if r.Deleted {
		delete(m.table, string(r.Key))
	} else {
		m.table[string(r.Key)] = r
	}
	m.mu.Unlock()
	m.changes <- []dataplane.Record{r}
}

func (m *memCT) HoldsRecord(r dataplane.Record) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.table[string(r.Key)]
	return ok, nil
}

func (m *memCT) has(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.table[key]
	return ok
}

func (m *memCT) importCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.imports
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// haPair is an HA group of two nodes, lb1 and lb2, on loopback with mutual
// TLS and test timings (refresh every 100 ms, redial every 50 ms).
type haPair struct {
	t     *testing.T
	certs map[string]labha.NodeCerts
	addrs map[string]string
	// logs, when set for a node, receives its log.
	logs map[string]*logBuffer
}

func newHAPair(t *testing.T) *haPair {
	t.Helper()
	certs, err := labha.WriteGroupCerts(t.TempDir(), "lb1", "lb2")
	if err != nil {
		t.Fatal(err)
	}
	return &haPair{t: t, certs: certs, addrs: map[string]string{"lb1": freePort(t), "lb2": freePort(t)}}
}

// start runs node n ("lb1" or "lb2") over dp, closed at the test's end; a
// node may be started again after Close (a restart).
func (p *haPair) start(n string, dp ConntrackSource) *HA {
	p.t.Helper()
	return p.startWith(n, dp, nil)
}

// testFullRefreshEvery is the test pairs' full refresh period, in rounds
// of 100 ms: the default's 40 rounds would make tests that wait for full
// rounds wait 4 s each.
const testFullRefreshEvery = 10

// startWith is start with the configuration changed by mutate.
func (p *haPair) startWith(n string, dp ConntrackSource, mutate func(*HAConfig)) *HA {
	p.t.Helper()
	peer := map[string]string{"lb1": "lb2", "lb2": "lb1"}[n]
	c := HAConfig{Refresh: 100 * time.Millisecond, FullRefreshEvery: testFullRefreshEvery, JoinTimeout: time.Minute, Node: sync.NodeConfig{Self: n, Listen: p.addrs[n],
		Peers: []sync.Peer{{Name: peer, Addr: p.addrs[peer]}}, CertFile: p.certs[n].Cert, KeyFile: p.certs[n].Key, CAFile: p.certs[n].CA,
		RedialInterval: 50 * time.Millisecond}}
	if mutate != nil {
		mutate(&c)
	}
	log := testLogger(p.t)
	if l := p.logs[n]; l != nil {
		log = bufferLogger(l)
	}
	h, err := StartHA(context.Background(), c, dp, log)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { _ = h.Close() })
	return h
}

func ctRec(key, val string) dataplane.Record {
	return dataplane.Record{Kind: dataplane.RecordConntrack, Key: []byte(key), Value: []byte(val)}
}

// TestHASyncSendsOnlyWhatTheNodeOwns: lb1's table (present before the
// sync starts) reaches lb2; lb2 sends none of it back, neither from its
// refresh nor when its copy ages out (lb1 keeps the flow); a flow lb2
// makes itself, and one that changes state on lb2 after a failover, go
// to lb1; a node is ready only once its peer's resync arrived.
func TestHASyncSendsOnlyWhatTheNodeOwns(t *testing.T) {
	pair := newHAPair(t)
	dps := map[string]*memCT{"lb1": newMemCT(), "lb2": newMemCT()}
	dps["lb1"].table["k1"] = ctRec("k1", "v1") // before the start
	has := map[string]*HA{}
	for _, n := range []string{"lb1", "lb2"} {
		h := pair.start(n, dps[n])
		has[n] = h
		if why := h.Waiting(); why == "" {
			t.Errorf("%s ready before its peer's resync", n)
		}
	}
	lb1, lb2 := dps["lb1"], dps["lb2"]
	waitFor(t, "k1 on lb2 and both ready", func() bool {
		return lb2.has("k1") && has["lb1"].Waiting() == "" && has["lb2"].Waiting() == ""
	})
	// Several refresh rounds: lb2 holds k1 only as a copy.
	time.Sleep(500 * time.Millisecond)
	if n := lb1.importCount(); n != 0 {
		t.Fatalf("lb1 imported %d records while lb2 owns nothing", n)
	}
	// lb2's copy ages out there: lb1 keeps its flow.
	lb2.local(dataplane.Record{Kind: dataplane.RecordConntrack, Key: []byte("k1"), Deleted: true})
	lb2.local(ctRec("k2", "v2"))
	waitFor(t, "k2 on lb1", func() bool { return lb1.has("k2") })
	if !lb1.has("k1") {
		t.Fatal("lb2's ageing of its copy deleted lb1's flow")
	}
	// After a failover the flow changes state on lb2: lb2 owns it now.
	waitFor(t, "k1 back on lb2 (refresh)", func() bool { return lb2.has("k1") })
	lb2.local(ctRec("k1", "v1-closing"))
	waitFor(t, "lb2's state of k1 on lb1", func() bool {
		lb1.mu.Lock()
		defer lb1.mu.Unlock()
		return string(lb1.table["k1"].Value) == "v1-closing"
	})
	if st := has["lb2"].Status(); !st.Ready || len(st.Peers) != 1 || !st.Peers[0].Synced || st.RecordsReceived == 0 {
		t.Errorf("lb2 status %+v", st)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(errors.New(fmt.Sprint("timed out waiting for ", what)))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHAExpiryIsThePeersOwn: lb1's flows k1 and k2, made while the sync
// is up, are on lb2. k1 expires on lb1 (the ageing's deletion,
// Record.Expired): lb1 sends nothing, lb2 keeps its copy for its own
// ageing to remove, and lb1 no longer counts the flow as its own. k2 is
// flushed on lb1 (a deletion only lb1 knows of): lb2 loses it.
func TestHAExpiryIsThePeersOwn(t *testing.T) {
	pair := newHAPair(t)
	lb1, lb2 := newTimedCT(), &perKeyCT{newTimedCT(), map[string]int{}}
	ha1, ha2 := pair.start("lb1", lb1), pair.start("lb2", lb2)
	waitFor(t, "both ready", func() bool { return ha1.Waiting() == "" && ha2.Waiting() == "" })
	// Flows made once the sync is up, sent live (a bulk resync's copies
	// get their expiries: ha/sync's Record.Local).
	lb1.change("k1", "v1")
	lb1.change("k2", "v2")
	waitFor(t, "lb1's flows on lb2", func() bool { return lb2.has("k1") && lb2.has("k2") })
	imports := lb2.imported("k1")
	lb1.local(dataplane.Record{Kind: dataplane.RecordConntrack, Key: []byte("k1"), Deleted: true, Expired: true})
	waitFor(t, "lb1 no longer owning k1", func() bool { return !ha1.owns("k1") })
	time.Sleep(5 * 100 * time.Millisecond) // refresh rounds, sends
	if !lb2.has("k1") || lb2.imported("k1") != imports {
		t.Fatalf("lb1's expiry of k1 reached lb2 (copy held %v, %d records of k1 imported since): the expiry is lb2's own to make",
			lb2.has("k1"), lb2.imported("k1")-imports)
	}
	lb1.local(dataplane.Record{Kind: dataplane.RecordConntrack, Key: []byte("k2"), Deleted: true})
	waitFor(t, "lb1's flush of k2 on lb2", func() bool { return !lb2.has("k2") })
}
