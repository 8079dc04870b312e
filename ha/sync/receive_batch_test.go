package sync

import (
	"fmt"
	stdsync "sync"
	"testing"
	"time"
)

// A receiver whose Apply is slow (the datapath's lock held by an ageing
// round) applies everything that arrived meanwhile in one Apply call, not
// one per message: a slowed-down receiver catches up instead of falling
// further behind with every message (issue 15: the records of young flows
// waited seconds in the standby's queue).
func TestMessagesWaitingDuringASlowApplyAreAppliedTogether(t *testing.T) {
	const msgs = 40
	var (
		mu      stdsync.Mutex
		calls   []int // records per Apply call of b
		blocked = make(chan struct{})
		release = make(chan struct{})
	)
	// No resend and no silence verdict while b is held (a loaded machine
	// may hold it long): the messages waiting are the 40 sent, once each.
	g := &group{t: t, ca: newCA(t, "group"), names: []string{"a", "b"}, addrs: map[string]string{}, nodes: map[string]*tnode{},
		mcfg: Config{RetransmitTimeout: 10 * time.Minute, PeerTimeout: -1}}
	g.applying = func(name string, as []Applied) {
		if name != "b" || len(as) == 0 {
			return
		}
		mu.Lock()
		calls = append(calls, len(as))
		first := len(calls) == 1
		mu.Unlock()
		if first {
			close(blocked)
			<-release
		}
	}
	g.start("b", "127.0.0.1:0")
	g.start("a", "127.0.0.1:0")
	var once stdsync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open) // before the nodes close: b's loop must not stay blocked
	g.converged(time.Minute)
	a, b := g.nodes["a"], g.nodes["b"]
	g.put("a", "k-first", "v")
	<-blocked
	// One message each: every Put wakes a's loop, which flushes.
	sent := a.n.Stats().SentMessages
	for i := range msgs {
		g.put("a", fmt.Sprintf("k%02d", i), "v")
		for a.n.Stats().SentMessages == sent {
			time.Sleep(time.Millisecond)
		}
		sent = a.n.Stats().SentMessages
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(b.n.events) < msgs {
		if time.Now().After(deadline) {
			t.Fatalf("b holds %d messages waiting after 30s, want %d", len(b.n.events), msgs)
		}
		time.Sleep(time.Millisecond)
	}
	open()
	g.converged(time.Minute)
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 || calls[1] != msgs {
		t.Errorf("b's Apply calls (records each) %v: want [1 %d], the %d messages waiting applied together", calls, msgs, msgs)
	}
}
