package diam_test

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/telcolb/telcolb/l7parse/diameter"
	agent "github.com/telcolb/telcolb/sctplb/diam"
)

// FuzzMachine drives the agent with an arbitrary sequence of client
// requests (new sessions, updates, terminations), server failures and
// returns, busy, mute and deaf servers, time passing, client
// retransmissions and corrupted copies, and service changes (a server
// replaced, the policy changed). The world checks the invariants
// after every step; at the end every request has exactly one answer.
func FuzzMachine(f *testing.F) {
	addMachineSeeds(f)
	f.Fuzz(func(t *testing.T, ops []byte) { fuzzMachine(t, ops, false) })
}

// FuzzMachineRecycledBuffers is FuzzMachine with every message handed
// with a counted reference whose buffer is overwritten once released
// (world.refs): nothing is sent from a buffer after its last release,
// none is released twice, and none is held once nothing is pending.
func FuzzMachineRecycledBuffers(f *testing.F) {
	addMachineSeeds(f)
	f.Fuzz(func(t *testing.T, ops []byte) { fuzzMachine(t, ops, true) })
}

func addMachineSeeds(f *testing.F) {
	f.Add([]byte{0, 0, 1, 2, 3, 4, 5, 0, 1, 6, 7, 8, 9})
	f.Add([]byte{0, 0x10, 0x20, 3, 0x13, 4, 0x14, 0, 0, 5, 5, 5, 2})
	f.Add([]byte{0, 7, 8, 8, 9, 0x35, 0x45, 0x53, 6, 6, 6, 0})
	f.Add([]byte{0, 0, 0, 0x25, 1, 0x11, 0x84, 2, 0x94, 0x35, 1, 0xa4, 6, 0x02})
}

func fuzzMachine(t *testing.T, ops []byte, refs bool) {
	if len(ops) > 150 {
		ops = ops[:150]
	}
	w := newWorld(t, 3, func(c *agent.Config) { c.Policy = agent.Policy(len(ops) % 3) })
	if refs {
		w.refs = map[*testRef]bool{}
	}
	c := w.connect("pgw.client.example.org")
	sent := map[uint32]bool{} // end-to-end identifiers
	var all []uint32          // hop-by-hop identifiers
	next := 0
	var last []byte
	for i, op := range ops {
		arg := int(op >> 4)
		switch op % 10 {
		case 0, 1, 2:
			sid := fmt.Sprintf("fz;%d", arg%(next+1))
			if op%10 == 0 {
				sid = fmt.Sprintf("fz;%d", next)
				next++
			}
			b, h := w.ccr(c, sid, uint32(op%10)+1, "")
			sent[h] = true
			all = append(all, h)
			last = b
			w.clientSends(c, b)
		case 3:
			s := w.servers[arg%3]
			s.up = false
			if s.conn != 0 && w.byConn[s.conn] != nil {
				delete(w.byConn, s.conn)
				w.step(agent.Closed{Conn: s.conn})
			}
		case 4:
			if arg >= 8 {
				// a service change: server arg%3 replaced by a new
				// one, the policy changed
				var keep []*fakeServer
				for j, s := range w.servers {
					if j != arg%3 {
						keep = append(keep, s)
					}
				}
				w.reconfigure(agent.Policy(arg%3), append(keep, w.newServer(fmt.Sprintf("new%d", i)))...)
				continue
			}
			w.servers[arg%3].up = true
		case 5:
			w.servers[arg%3].mode = []string{"", "busy", "mute", "drop"}[arg%4]
		case 6:
			w.advance(time.Duration(1+arg) * time.Second)
		case 7:
			if last != nil {
				// a copy with T: same end-to-end, new hop-by-hop
				b := append([]byte(nil), last...)
				diameter.SetRetransmit(b)
				w.hbh++
				diameter.SetHopByHop(b, w.hbh)
				all = append(all, w.hbh)
				w.clientSends(c, b)
			}
		case 8, 9:
			if last != nil {
				// corrupted anywhere but the identifiers
				b := append([]byte(nil), last...)
				w.hbh++
				diameter.SetHopByHop(b, w.hbh)
				all = append(all, w.hbh)
				pos := arg * 7 % len(b)
				if pos >= 12 && pos < 20 {
					pos = 4
				}
				b[pos] ^= byte(i) | 1
				w.clientSends(c, b)
			}
		}
	}
	for _, s := range w.servers {
		s.up, s.mode = true, ""
	}
	w.advance(time.Minute)
	if refs && w.m.Pending() == 0 && len(w.refs) != 0 {
		t.Fatalf("%d buffers never released", len(w.refs))
	}
	if !c.open {
		return
	}
	// No transmission gets two answers; no request goes unanswered.
	answered := map[uint32]bool{}
	for _, h := range all {
		if n := len(c.answers[h]); n > 1 {
			t.Fatalf("transmission %#x got %d answers", h, n)
		}
		for _, a := range c.answers[h] {
			answered[binary.BigEndian.Uint32(a[16:])] = true
		}
	}
	for e := range sent {
		if !answered[e] {
			t.Fatalf("request %#x got no answer", e)
		}
	}
	if w.m.Pending() != 0 {
		t.Fatalf("%d requests still pending", w.m.Pending())
	}
}
