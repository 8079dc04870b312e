package n4_test

import (
	"testing"
	"time"

	"github.com/telcolb/telcolb/l7parse/pfcp"
	"github.com/telcolb/telcolb/sctplb/n4"
)

// FuzzMachine drives the machine with an arbitrary sequence of SMF and UPF
// actions (establish, modify, delete, report, UPF restart, UPF outage,
// time passing, retransmissions by the SMF and the UPFs, the SMF's answers
// lost, mutated messages, the proxy restarted from its journal); the world
// checks that no Session Report reaches the SMF twice as two requests, the invariants, that the journal adds up to
// the machine's state, and the constant Recovery Time Stamp after every
// step, and every message the proxy sends must parse.
func FuzzMachine(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 0, 8, 9})
	f.Add([]byte{0, 0, 0, 0, 4, 4, 5, 5, 5, 5, 1, 1, 2, 2})
	f.Add([]byte{9, 9, 0, 6, 0, 6, 7, 7, 7, 1, 3, 3})
	f.Add([]byte{0, 0, 0, 10, 1, 2, 4, 10, 6, 3, 5, 0, 10, 6, 1})
	// Reports whose answers are lost, the proxy restarted, the UPFs
	// retransmitting: each report reaches the SMF once.
	// (op%13 is the action, op>>4 its argument: 16 is a report from UPF 1,
	// 25 its retransmission.)
	f.Add([]byte{0, 0, 0, 0, 11, 3, 16, 42, 10, 11, 12, 25, 38, 6, 12})
	f.Add([]byte{0, 0, 0, 5, 3, 16, 10, 12, 25, 5, 12, 6, 12})
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
			switch op % 13 {
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
					w.report(u, up)
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
			case 11: // the SMF's answers are lost (or it stalls)
				w.smfMute = !w.smfMute
			case 12: // a UPF retransmits its latest report
				w.retransmitReport(int(arg % 3))
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
		w.smfMute = false
		w.advance(2 * time.Minute)
		if w.smf.Snapshot().RecoveryChanges != 0 {
			t.Fatal("SMF saw the Recovery Time Stamp change")
		}
	})
}
