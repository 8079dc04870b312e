package n4_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/telcolb/telcolb/l7parse/pfcp"
	sims "github.com/telcolb/telcolb/scenarios/pfcp"
	"github.com/telcolb/telcolb/sctplb/n4"
)

var (
	vip     = netip.MustParseAddr("10.78.100.1")
	upfSide = netip.MustParseAddr("10.78.200.1")
	smfAddr = netip.AddrPortFrom(netip.MustParseAddr("10.78.1.2"), pfcp.Port)
	t0      = time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
)

func upfAddr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 78, byte(10 + i), 2}), pfcp.Port)
}

type packet struct {
	from, to netip.AddrPort
	data     []byte
}

// world runs the machine between one SMF simulator and several UPF
// simulators, delivering every datagram it sends, and checks the
// invariants after every step.
type world struct {
	t    testing.TB
	m    *n4.Machine
	now  time.Time
	smf  *sims.SMFSim
	upfs []*sims.UPFSim
	down []bool // UPF i drops everything sent to it
	// smfMute drops the SMF's answers (it acts on what it gets).
	smfMute bool
	dupTo   bool // deliver every SMF-bound datagram twice
	// toSMF logs the datagrams the proxy sent to the SMF.
	toSMF [][]byte
	acts  []n4.Action
	// journal folds every TakeChanges, as the shell's journal does; after
	// every step it must equal the machine's Export.
	journal *n4.Builder
	cfg     n4.Config
	// reports are the distinct Session Report Requests the UPFs sent (UPF,
	// its start, sequence number); the SMF must never count more (a report delivered
	// twice, as two requests), and lastReport is each UPF's latest, which
	// it may retransmit.
	reports    map[[3]uint64]bool
	lastReport [][]byte
	sent       []packet // every report, in order
}

func newWorld(t testing.TB, nUPF int, mod func(*n4.Config)) *world {
	t.Helper()
	cfg := n4.Config{SMFSide: vip, UPFSide: upfSide, Recovery: t0.Add(-time.Hour),
		T1: time.Second, N1: 2, HeartbeatInterval: 5 * time.Second, LossTimeout: 20 * time.Second, ReplayWindow: 8}
	w := &world{t: t, now: t0, smf: sims.NewSMFSim(smfAddr.Addr(), t0.Add(-2*time.Hour)), down: make([]bool, nUPF),
		reports: map[[3]uint64]bool{}, lastReport: make([][]byte, nUPF)}
	for i := range nUPF {
		cfg.UPFs = append(cfg.UPFs, n4.UPF{Name: fmt.Sprintf("upf%d", i), Addr: upfAddr(i)})
		// Every UPF allocates the same SEIDs: the proxy must keep them apart.
		w.upfs = append(w.upfs, sims.NewUPFSim(upfAddr(i).Addr(), t0.Add(-3*time.Hour), 0x100))
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := n4.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.m, w.cfg, w.journal = m, cfg, n4.NewBuilder(n4.State{})
	w.step(n4.Tick{})
	return w
}

// restartProxy replaces the machine by a new one restored from the
// journal, as the daemon does after a restart (mod, if set, changes its
// configuration, as a service change does). Requests in flight are lost
// with the old machine; the peers retransmit.
func (w *world) restartProxy(mod func(*n4.Config)) {
	w.t.Helper()
	cfg := w.cfg
	cfg.UPFs = append([]n4.UPF(nil), w.cfg.UPFs...)
	cfg.Recovery = w.now // a new process has a new start time; the journal's wins
	if mod != nil {
		mod(&cfg)
	}
	m, err := n4.New(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	st := w.journal.State()
	if err := m.Restore(st); err != nil {
		w.t.Fatalf("restore: %v", err)
	}
	w.m, w.cfg, w.journal = m, cfg, n4.NewBuilder(st)
	w.checkJournal("restore")
	w.step(n4.Tick{})
}

// checkJournal: the changes the machine reported add up to its state.
func (w *world) checkJournal(after string) {
	w.t.Helper()
	w.journal.Apply(w.m.TakeChanges())
	if got, want := w.journal.State(), w.m.Export(); !reflect.DeepEqual(got, want) {
		for i := range min(len(got.Sessions), len(want.Sessions)) {
			if !reflect.DeepEqual(got.Sessions[i], want.Sessions[i]) {
				g, m := got.Sessions[i], want.Sessions[i]
				w.t.Errorf("session %#x: journal up %#x/%v on %s, %d mods; machine up %#x/%v on %s, %d mods", m.SID,
					g.UPSEID, g.HasUP, g.UPF, len(g.Mods), m.UPSEID, m.HasUP, m.UPF, len(m.Mods))
			}
		}
		w.t.Fatalf("after %s: journal holds %d sessions %+v, machine exports %d %+v", after, len(got.Sessions), got.Node, len(want.Sessions), want.Node)
	}
}

func (w *world) upfIndex(a netip.AddrPort) int {
	for i := range w.upfs {
		if upfAddr(i) == a {
			return i
		}
	}
	return -1
}

// step feeds ev and delivers everything that follows until quiet.
func (w *world) step(ev n4.Event) {
	w.t.Helper()
	queue := w.run(ev)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		queue = append(queue, w.run(n4.Datagram{From: p.from, Data: p.data})...)
	}
}

// run steps the machine once and delivers its sends to the simulators,
// returning their answers.
func (w *world) run(ev n4.Event) []packet {
	w.t.Helper()
	if d, ok := ev.(n4.Datagram); ok {
		if u := w.upfIndex(d.From); u >= 0 {
			if m, err := pfcp.Parse(d.Data); err == nil && m.Type == pfcp.SessionReportReq {
				// A restarted UPF numbers its requests afresh.
				w.reports[[3]uint64{uint64(u), uint64(w.upfs[u].Recovery.UnixNano()), uint64(m.Seq)}] = true
			}
		}
	}
	acts := w.m.Step(w.now, ev)
	w.acts = append(w.acts, acts...)
	if err := w.m.CheckInvariants(); err != nil {
		w.t.Fatalf("after %T: %v", ev, err)
	}
	w.checkJournal(fmt.Sprintf("%T", ev))
	var out []packet
	for _, a := range acts {
		if a.Kind != n4.Send {
			continue
		}
		data := append([]byte(nil), a.Data...)
		msg, err := pfcp.Parse(data)
		if err != nil {
			w.t.Fatalf("proxy sent an unparsable message to %v: %v", a.To, err)
		}
		if err := pfcp.Validate(data); err != nil {
			w.t.Fatalf("proxy sent a message go-pfcp refuses to %v: %v", a.To, err)
		}
		if msg.HasRecovery && msg.Recovery != w.m.RecoveryTimeStamp() {
			w.t.Fatalf("proxy sent Recovery Time Stamp %d, its own is %d", msg.Recovery, w.m.RecoveryTimeStamp())
		}
		if a.To == smfAddr {
			w.toSMF = append(w.toSMF, data)
			n := 1
			if w.dupTo {
				n = 2
			}
			for range n {
				if r := w.smf.Handle(data); r != nil && !w.smfMute {
					out = append(out, packet{smfAddr, a.To, r})
				}
			}
			if got := w.smf.Snapshot().Reports; got > len(w.reports) {
				w.t.Fatalf("the SMF acted on %d Session Reports, the UPFs sent %d: a report delivered twice", got, len(w.reports))
			}
			continue
		}
		i := w.upfIndex(a.To)
		if i < 0 {
			w.t.Fatalf("proxy sent to unknown peer %v", a.To)
		}
		if w.down[i] {
			continue
		}
		if r := w.upfs[i].Handle(netip.AddrPortFrom(upfSide, pfcp.Port), data); r != nil {
			out = append(out, packet{a.To, upfSide4(), r})
		}
	}
	return out
}

func upfSide4() netip.AddrPort { return netip.AddrPortFrom(upfSide, pfcp.Port) }

func (w *world) smfSends(b []byte) { w.t.Helper(); w.step(n4.Datagram{From: smfAddr, Data: b}) }

// report has UPF u send a Session Report Request for its session up (the
// UPF's SEID); false if it holds no such session.
func (w *world) report(u int, up uint64) bool {
	w.t.Helper()
	b, _, ok := w.upfs[u].Report(up)
	if !ok {
		return false
	}
	w.lastReport[u] = b
	w.sent = append(w.sent, packet{from: upfAddr(u), data: b})
	w.step(n4.Datagram{From: upfAddr(u), Data: b})
	return true
}

// retransmitReport has UPF u send its latest report again, unchanged.
func (w *world) retransmitReport(u int) {
	w.t.Helper()
	if b := w.lastReport[u]; b != nil {
		w.step(n4.Datagram{From: upfAddr(u), Data: b})
	}
}

// advance moves the clock in ticks of 500ms.
func (w *world) advance(d time.Duration) {
	w.t.Helper()
	for end := w.now.Add(d); w.now.Before(end); {
		w.now = w.now.Add(500 * time.Millisecond)
		w.step(n4.Tick{})
	}
}

func (w *world) count(k n4.ActionKind) int {
	n := 0
	for _, a := range w.acts {
		if a.Kind == k {
			n++
		}
	}
	return n
}

func (w *world) associate() {
	w.t.Helper()
	w.smfSends(w.smf.AssociationSetup())
	if w.smf.Snapshot().Associated != 1 {
		w.t.Fatalf("SMF association not accepted: %+v", w.smf.Snapshot())
	}
}

// establish establishes sessions 1..n.
func (w *world) establish(n int) {
	w.t.Helper()
	for cp := uint64(1); cp <= uint64(n); cp++ {
		w.smfSends(w.smf.Establish(cp))
	}
	if st := w.smf.Snapshot(); st.Established != n {
		w.t.Fatalf("established %d sessions, want %d: %+v", st.Established, n, st)
	}
}
