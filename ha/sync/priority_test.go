package sync

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// pipe runs two machines against each other without the network: the
// messages each sends wait in a queue until pumped.
type pipe struct {
	t       *testing.T
	m       map[string]*Machine
	now     time.Time
	queue   []Send              // in order; Peer is the receiver
	applied map[string][]Record // per receiver, in the order applied
}

func newPipe(t *testing.T, cfg Config) *pipe {
	p := &pipe{t: t, m: map[string]*Machine{}, now: time.Unix(1000, 0), applied: map[string][]Record{}}
	for i, n := range []string{"a", "b"} {
		c := cfg
		c.Self, c.Peers = n, []string{"ab"[1-i : 2-i]}
		m, err := New(c, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		p.m[n] = m
	}
	p.take("a", p.m["a"].Connected(p.now, "b"))
	p.take("b", p.m["b"].Connected(p.now, "a"))
	p.pump(-1)
	return p
}

// take queues what node sent and notes what it applied.
func (p *pipe) take(node string, out Output) {
	for _, s := range out.Sends {
		p.queue = append(p.queue, Send{Peer: s.Peer + "<" + node, Data: s.Data})
	}
	for _, a := range out.Applied {
		p.applied[node] = append(p.applied[node], a.Record)
	}
}

// pump delivers up to n queued messages (all, and what they cause, if n < 0).
func (p *pipe) pump(n int) {
	for i := 0; (n < 0 || i < n) && len(p.queue) > 0; i++ {
		s := p.queue[0]
		p.queue = p.queue[1:]
		to, from := s.Peer[:1], s.Peer[2:]
		p.take(to, p.m[to].Receive(p.now, from, s.Data))
	}
}

func (p *pipe) put(node, key, value string) {
	out, err := p.m[node].Put(p.now, Record{Kind: 1, Key: []byte(key), Value: []byte(value)})
	if err != nil {
		p.t.Fatal(err)
	}
	p.take(node, out)
}

// A key new to the table (a flow's first record) queued behind 10,000
// changes of keys the peer already has (a refresh of established flows)
// goes out in the next message the window allows, not after them: a flow
// opened just before a failure reaches the peer while the refresh waits.
func TestNewKeyGoesBeforeQueuedChanges(t *testing.T) {
	const keys = 10_000
	p := newPipe(t, Config{BatchBytes: 1024})
	val := func(v int) string { return fmt.Sprintf("%064d", v) }
	for i := range keys {
		p.put("a", fmt.Sprintf("k%05d", i), val(0))
	}
	p.take("a", p.m["a"].Flush(p.now))
	p.pump(-1)
	if got := len(p.applied["b"]); got != keys {
		t.Fatalf("b applied %d records, want %d", got, keys)
	}
	p.applied["b"] = nil
	// The peer is slow: the window fills with changes, the rest wait.
	for i := range keys {
		p.put("a", fmt.Sprintf("k%05d", i), val(1))
	}
	p.take("a", p.m["a"].Flush(p.now))
	inFlight := 0
	for _, s := range p.queue {
		msg, err := Parse(s.Data)
		if err != nil || msg.Data == nil {
			t.Fatalf("queued message: %v %+v", err, msg)
		}
		inFlight += len(msg.Data.Records)
	}
	if inFlight == 0 || inFlight >= keys {
		t.Fatalf("%d of %d changes in flight: the test needs a full window and changes waiting", inFlight, keys)
	}
	p.put("a", "young", val(2))
	p.take("a", p.m["a"].Flush(p.now))
	p.pump(-1)
	at := slices.IndexFunc(p.applied["b"], func(r Record) bool { return string(r.Key) == "young" })
	if at < 0 {
		t.Fatal("b never applied the new key")
	}
	if len(p.applied["b"]) != keys+1 {
		t.Errorf("b applied %d records, want %d", len(p.applied["b"]), keys+1)
	}
	// What was in flight when it was put, then it, at the head of the next
	// message.
	if at != inFlight {
		t.Errorf("new key applied after %d changes, want right after the %d in flight when it was put", at, inFlight)
	}
}
