package n4_test

import (
	"testing"
	"time"

	"github.com/telcolb/telcolb/l7parse/pfcp"
	"github.com/telcolb/telcolb/sctplb/n4"
)

// FuzzMachine drives the machine with an arbitrary sequence of SMF and UPF
// actions (establish, modify, delete, report, UPF restart, UPF outage,
// time passing, retransmissions, mutated messages, the proxy restarted from
// its journal); the world checks the invariants, that the journal adds up to
// the machine's state, and the constant Recovery Time Stamp after every
// step, and every message the proxy sends must parse.
func FuzzMachine(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 0, 8, 9})
	f.Add([]byte{0, 0, 0, 0, 4, 4, 5, 5, 5, 5, 1, 1, 2, 2})
	f.Add([]byte{9, 9, 0, 6, 0, 6, 7, 7, 7, 1, 3, 3})
	f.Add([]byte{0, 0, 0, 10, 1, 2, 4, 10, 6, 3, 5, 0, 10, 6, 1})
	pfcp.SilenceLibraryLogs()
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 200 {
			ops = ops[:200]
		}
		w := newWorld(t, 3, func(c *n4.Config) { c.OnLoss = n4.LossPolicy(len(ops) % 2) })
		w.associate()
		var next uint64 = 1
		var last []byte
		for i, op := range ops {
			arg := uint64(op >> 4)
			switch op % 11 {
			case 0:
				last = w.smf.Establish(next)
				next++
				w.smfSends(last)
			case 1:
				if b, ok := w.smf.Modify(1 + arg%next); ok {
					last = b
					w.smfSends(b)
				}
			case 2:
				if b, ok := w.smf.Delete(1 + arg%next); ok {
					last = b
					w.smfSends(b)
				}
			case 3:
				u := int(arg % 3)
				for up := range w.upfs[u].Sessions() {
					if b, _, ok := w.upfs[u].Report(up); ok {
						w.step(n4.Datagram{From: upfAddr(u), Data: b})
					}
					break
				}
			case 4:
				w.upfs[arg%3].Restart(w.now)
			case 5:
				w.down[arg%3] = !w.down[arg%3]
			case 6:
				w.advance(time.Duration(1+arg) * time.Second)
			case 7:
				if last != nil { // the SMF retransmits
					w.smfSends(last)
				}
			case 10:
				w.restartProxy(nil)
			case 8, 9:
				if last != nil { // a corrupted copy
					b := append([]byte(nil), last...)
					b[int(arg)%len(b)] ^= byte(i) | 1
					w.smfSends(b)
				}
			}
		}
		for i := range w.down {
			w.down[i] = false
		}
		w.advance(2 * time.Minute)
		if w.smf.Snapshot().RecoveryChanges != 0 {
			t.Fatal("SMF saw the Recovery Time Stamp change")
		}
	})
}
