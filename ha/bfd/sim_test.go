package bfd

import (
	"container/heap"
	"math/rand/v2"
	"testing"
	"time"
)

// sim runs two sessions on a virtual clock; packets take 1 ms. With cut
// set, packets from session 1 to session 0 are lost.
type sim struct {
	t      *testing.T
	now    time.Time
	s      [2]*Session
	q      evq
	seq    int
	gen    [2][2]int // timer generations: [session][0 tx, 1 detect]
	cut    bool
	downAt [2]time.Time
}

type simEv struct {
	at   time.Time
	seq  int
	to   int
	ev   any
	kind int // -1 packet, 0 tx timer, 1 detect timer
	gen  int
}

type evq []simEv

func (q evq) Len() int { return len(q) }
func (q evq) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q evq) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *evq) Push(x any)   { *q = append(*q, x.(simEv)) }
func (q *evq) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

func newSim(t *testing.T, r *rand.Rand) *sim {
	m := &sim{t: t, now: time.Unix(0, 0)}
	for i := range 2 {
		cfg := fastCfg
		cfg.LocalDiscr = uint32(100 + i)
		s, out, err := New(cfg, r)
		if err != nil {
			t.Fatal(err)
		}
		m.s[i] = s
		m.apply(i, out)
	}
	return m
}

func (m *sim) push(e simEv) {
	m.seq++
	e.seq = m.seq
	heap.Push(&m.q, e)
}

func (m *sim) apply(i int, out []Action) {
	for _, a := range out {
		switch a := a.(type) {
		case Send:
			if m.cut && i == 1 {
				continue
			}
			// Through the codec, as on the wire.
			p, err := Parse(a.Packet.Marshal())
			if err != nil {
				m.t.Fatalf("session %d sent an unparsable packet: %v", i, err)
			}
			m.push(simEv{at: m.now.Add(time.Millisecond), to: 1 - i, ev: Received{p}, kind: -1})
		case ArmTx:
			m.gen[i][0]++
			m.push(simEv{at: m.now.Add(a.After), to: i, ev: TxTimerExpired{}, kind: 0, gen: m.gen[i][0]})
		case StopTx:
			m.gen[i][0]++
		case ArmDetect:
			m.gen[i][1]++
			m.push(simEv{at: m.now.Add(a.After), to: i, ev: DetectTimerExpired{}, kind: 1, gen: m.gen[i][1]})
		case StopDetect:
			m.gen[i][1]++
		case StateChanged:
			if a.To == Down {
				m.downAt[i] = m.now
			}
		}
	}
}

func (m *sim) run(d time.Duration) {
	end := m.now.Add(d)
	for m.q.Len() > 0 && !m.q[0].at.After(end) {
		e := heap.Pop(&m.q).(simEv)
		m.now = e.at
		if e.kind >= 0 && e.gen != m.gen[e.to][e.kind] {
			continue // stopped or rearmed timer
		}
		s := m.s[e.to]
		prev := s.State()
		out, err := s.Handle(e.ev)
		if err != nil {
			m.t.Fatalf("session %d: %v", e.to, err)
		}
		if msg := checkInvariants(s, prev, e.ev, out); msg != "" {
			m.t.Fatalf("session %d after %T: %s", e.to, e.ev, msg)
		}
		m.apply(e.to, out)
	}
	m.now = end
}
