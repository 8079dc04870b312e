package pfcp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	pf "github.com/telcolb/telcolb/l7parse/pfcp"
)

// ServeUPF answers PFCP on conn with u until ctx ends. With report set,
// every session the UPF establishes gets one Session Report Request
// (downlink data report) sent to its CP F-SEID address, retransmitted every
// t1 until answered, at most 3 times.
func ServeUPF(ctx context.Context, conn *net.UDPConn, u *UPFSim, report bool, t1 time.Duration) error {
	return ServeUPFWith(ctx, conn, u, UPFServe{Report: report, T1: t1})
}

// UPFServe says how ServeUPFWith serves a UPF simulator.
type UPFServe struct {
	// Report: one Session Report Request per session established.
	Report bool
	// T1 and N1: retransmission timer and count of its reports (N1
	// default 3).
	T1 time.Duration
	N1 int
	// Burst: each value received sends one report for every session held,
	// BurstRate per second (default 1000), and then calls BurstDone with
	// the number sent once each is answered or given up.
	Burst     <-chan struct{}
	BurstRate int
	BurstDone func(sent, unanswered int)
}

// ServeUPFWith is ServeUPF with more options.
func ServeUPFWith(ctx context.Context, conn *net.UDPConn, u *UPFSim, o UPFServe) error {
	report, t1 := o.Report, o.T1
	if o.N1 <= 0 {
		o.N1 = 3
	}
	go func() { <-ctx.Done(); _ = conn.Close() }()
	var mu sync.Mutex
	pending := map[uint32]outReq{} // report seq -> datagram
	gaveUp := map[uint32]bool{}    // reports given up on
	if report || o.Burst != nil {
		go resend(ctx, conn, &mu, pending, gaveUp, t1, o.N1)
	}
	if o.Burst != nil {
		go burst(ctx, conn, u, o, &mu, pending, gaveUp)
	}
	buf := make([]byte, 65536)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		b := append([]byte(nil), buf[:n]...)
		if len(b) > 1 && b[1] == pf.SessionReportResp && len(b) >= 16 {
			seq := uint32(b[12])<<16 | uint32(b[13])<<8 | uint32(b[14])
			mu.Lock()
			delete(pending, seq)
			mu.Unlock()
		}
		r, first := u.HandleFirst(from, b)
		if r == nil {
			continue
		}
		if _, err := conn.WriteToUDPAddrPort(r, from); err != nil {
			return err
		}
		// Only a session just established reports, not the retransmission
		// of its establishment.
		if report && first && r[1] == pf.SessionEstablishmentResp {
			m, err := pf.Parse(r)
			if err != nil || m.Cause != pf.CauseAccepted {
				continue
			}
			rep, cp, ok := u.Report(m.FSEID.SEID)
			if !ok {
				continue
			}
			to := netip.AddrPortFrom(cp, pf.Port)
			seq := uint32(rep[12])<<16 | uint32(rep[13])<<8 | uint32(rep[14])
			mu.Lock()
			pending[seq] = outReq{to: to, data: rep, sent: time.Now()}
			mu.Unlock()
			_, _ = conn.WriteToUDPAddrPort(rep, to)
		}
	}
}

type outReq struct {
	to    netip.AddrPort
	data  []byte
	sent  time.Time
	tries int
}

// burst sends a report for every session on each signal, paced, and
// reports when they are all answered or given up.
func burst(ctx context.Context, conn *net.UDPConn, u *UPFSim, o UPFServe, mu *sync.Mutex, pending map[uint32]outReq, gaveUp map[uint32]bool) {
	rate := o.BurstRate
	if rate <= 0 {
		rate = 1000
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.Burst:
		}
		var seqs []uint32
		tk := time.NewTicker(time.Second / time.Duration(rate))
		for up := range u.Sessions() {
			rep, cp, ok := u.Report(up)
			if !ok {
				continue
			}
			seq := uint32(rep[12])<<16 | uint32(rep[13])<<8 | uint32(rep[14])
			to := netip.AddrPortFrom(cp, pf.Port)
			mu.Lock()
			pending[seq] = outReq{to: to, data: rep, sent: time.Now()}
			mu.Unlock()
			_, _ = conn.WriteToUDPAddrPort(rep, to)
			seqs = append(seqs, seq)
			select {
			case <-ctx.Done():
				tk.Stop()
				return
			case <-tk.C:
			}
		}
		tk.Stop()
		for {
			mu.Lock()
			left, lost := 0, 0
			for _, q := range seqs {
				if _, ok := pending[q]; ok {
					left++
				}
				if gaveUp[q] {
					lost++
				}
			}
			mu.Unlock()
			if left == 0 {
				if o.BurstDone != nil {
					o.BurstDone(len(seqs), lost)
				}
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

func resend(ctx context.Context, conn *net.UDPConn, mu *sync.Mutex, pending map[uint32]outReq, gaveUp map[uint32]bool, t1 time.Duration, n1 int) {
	tk := time.NewTicker(t1 / 4)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tk.C:
			mu.Lock()
			for k, r := range pending {
				switch {
				case now.Sub(r.sent) < t1:
				case r.tries >= n1: // a UPF gives up, as TS 29.244 §6.4 has it
					delete(pending, k)
					gaveUp[k] = true
				default:
					r.sent, r.tries = now, r.tries+1
					pending[k] = r
					_, _ = conn.WriteToUDPAddrPort(r.data, r.to)
				}
			}
			mu.Unlock()
		}
	}
}

// Load is what an SMF run does.
type Load struct {
	Sessions int
	// Window bounds the requests outstanding.
	Window int
	// T1 and N1: retransmission timer and count, as an SMF does.
	T1 time.Duration
	N1 int
	// ReportWait is how long to wait after the modifications for the
	// UPFs' Session Report Requests to arrive.
	ReportWait time.Duration
	// Pause, if set, is called between the modification and deletion
	// phases (a test restarts or kills a UPF there).
	Pause func()
	// Impair, when set, impairs the SMF's link in both directions, as
	// netem would where the kernel lacks sch_netem.
	Impair *Impairment
	// RTT, when set, receives the round-trip time of every request
	// answered without a retransmission.
	RTT func(time.Duration)
}

// Impairment drops, duplicates and reorders datagrams, in percent.
type Impairment struct {
	Loss, Duplicate, Reorder int
	// Delay holds a reordered datagram back (default 3ms).
	Delay time.Duration
}

// roll reports, with probability pct percent, true.
func roll(pct int) bool { return pct > 0 && rand.IntN(100) < pct }

// deliver applies the impairment to one datagram: f runs zero, one or two
// times, now or after Delay.
func (im *Impairment) deliver(f func()) {
	if im == nil {
		f()
		return
	}
	if roll(im.Loss) {
		return
	}
	n := 1
	if roll(im.Duplicate) {
		n = 2
	}
	d := im.Delay
	if d <= 0 {
		d = 3 * time.Millisecond
	}
	for range n {
		if roll(im.Reorder) {
			time.AfterFunc(d, f)
		} else {
			f()
		}
	}
}

// RunSMF associates with peer, establishes, modifies and deletes
// l.Sessions sessions, answering Session Reports meanwhile, and returns the
// SMF's counters.
func RunSMF(ctx context.Context, conn *net.UDPConn, peer netip.AddrPort, s *SMFSim, l Load) (SMFStats, error) {
	if l.Window <= 0 {
		l.Window = 64
	}
	if l.T1 <= 0 {
		l.T1 = time.Second
	}
	if l.N1 <= 0 {
		l.N1 = 3
	}
	var mu sync.Mutex
	out := map[uint32]outReq{}
	done := make(chan struct{}, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		buf := make([]byte, 65536)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if rctx.Err() != nil {
				return
			}
			if err != nil {
				continue
			}
			b := append([]byte(nil), buf[:n]...)
			l.Impair.deliver(func() {
				m, perr := pf.Parse(b)
				if r := s.Handle(b); r != nil {
					l.Impair.deliver(func() { _, _ = conn.WriteToUDPAddrPort(r, from) })
				}
				if perr == nil && !pf.IsRequest(m.Type) {
					mu.Lock()
					if r, ok := out[m.Seq]; ok && r.tries == 0 && l.RTT != nil {
						l.RTT(time.Since(r.sent))
					}
					delete(out, m.Seq)
					mu.Unlock()
					select {
					case done <- struct{}{}:
					default:
					}
				}
			})
		}
	}()
	var failed error
	send := func(b []byte) {
		m, _ := pf.Parse(b)
		mu.Lock()
		out[m.Seq] = outReq{to: peer, data: b, sent: time.Now()}
		mu.Unlock()
		l.Impair.deliver(func() { _, _ = conn.WriteToUDPAddrPort(b, peer) })
	}
	// wait until at most max requests are outstanding, retransmitting.
	wait := func(max int) {
		for {
			mu.Lock()
			n := len(out)
			now := time.Now()
			for k, r := range out {
				if now.Sub(r.sent) < l.T1 {
					continue
				}
				if r.tries >= l.N1 {
					delete(out, k)
					failed = fmt.Errorf("request seq %d unanswered after %d retransmissions", k, r.tries)
					continue
				}
				r.sent, r.tries = now, r.tries+1
				out[k] = r
				data, to := r.data, r.to
				l.Impair.deliver(func() { _, _ = conn.WriteToUDPAddrPort(data, to) })
			}
			mu.Unlock()
			if n <= max || ctx.Err() != nil {
				return
			}
			select {
			case <-done:
			case <-time.After(l.T1 / 4):
			}
		}
	}
	send(s.AssociationSetup())
	wait(0)
	if s.Snapshot().Associated == 0 {
		return s.Snapshot(), errors.New("association setup not accepted")
	}
	for cp := uint64(1); cp <= uint64(l.Sessions); cp++ {
		send(s.Establish(cp))
		wait(l.Window - 1)
	}
	wait(0)
	for cp := uint64(1); cp <= uint64(l.Sessions); cp++ {
		if b, ok := s.Modify(cp); ok {
			send(b)
			wait(l.Window - 1)
		}
	}
	wait(0)
	if l.ReportWait > 0 {
		deadline := time.Now().Add(l.ReportWait)
		for time.Now().Before(deadline) && s.Snapshot().Reports < l.Sessions {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if l.Pause != nil {
		l.Pause()
	}
	for cp := uint64(1); cp <= uint64(l.Sessions); cp++ {
		if b, ok := s.Modify(cp); ok {
			send(b)
			wait(l.Window - 1)
		}
	}
	wait(0)
	for cp := uint64(1); cp <= uint64(l.Sessions); cp++ {
		if b, ok := s.Delete(cp); ok {
			send(b)
			wait(l.Window - 1)
		}
	}
	wait(0)
	return s.Snapshot(), failed
}
