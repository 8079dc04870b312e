package sync

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPutAllHandsABurstOverAtOnce: a producer's burst handed over with
// PutAll leaves in one data message (it fits one batch), where records put
// one at a time while the node's loop runs on another CPU could go out in
// several, each drawing an acknowledgement. Every record arrives, in
// order: a key put twice in one burst holds its second value.
func TestPutAllHandsABurstOverAtOnce(t *testing.T) {
	g := newGroup(t, Config{}, "a", "b")
	g.converged(10 * time.Second)
	a := g.nodes["a"]
	const bursts, per = 60, 16
	before := a.n.Stats().SentMessages
	for i := 0; i < bursts; i++ {
		rs := make([]Record, 0, per+1)
		a.mu.Lock()
		for j := 0; j < per; j++ {
			k, v := fmt.Sprintf("burst%d-%d", i, j), value(i*per+j)
			a.own[k] = v
			rs = append(rs, Record{Kind: 1, Key: []byte(k), Value: []byte(v)})
		}
		k := fmt.Sprintf("burst%d-0", i)
		a.own[k] = "again"
		rs = append(rs, Record{Kind: 1, Key: []byte(k), Value: []byte("again")})
		a.mu.Unlock()
		if err := a.n.PutAll(rs); err != nil {
			t.Fatal(err)
		}
		// Acknowledged before the next burst: bursts never share a message.
		g.converged(10 * time.Second)
	}
	if got := a.n.Stats().SentMessages - before; got != bursts {
		t.Errorf("%d bursts went out in %d data messages, want one each", bursts, got)
	}
}

// TestPutAllQueuesTheGoodRecords: a record that fails the checks is named
// in PutAll's error (its place in the batch) and left out; the others
// are queued and arrive.
func TestPutAllQueuesTheGoodRecords(t *testing.T) {
	g, a := convergedPair(t)
	a.owns("good", "1", "also-good", "2")
	err := a.n.PutAll([]Record{
		{Kind: 1, Key: []byte("good"), Value: []byte("1")},
		{Kind: 1}, // no key
		{Kind: 1, Key: []byte("also-good"), Value: []byte("2")},
	})
	if err == nil || !strings.Contains(err.Error(), "record 2 of 3") || !strings.Contains(err.Error(), "key of 0 bytes") {
		t.Fatalf("PutAll error %v, want one naming record 2 of 3 and its empty key", err)
	}
	g.converged(10 * time.Second)
}
