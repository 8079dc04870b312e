package n4

import "fmt"

// CheckInvariants verifies the machine's invariants; tests call it after
// every step. They are:
//
//  1. Every session is indexed under its own SEID, which is never 0; each
//     UPF's and SMF's session count equals the sessions placed on it, and
//     every session's SMF is associated.
//  2. A session that is up knows its UPF's SEID; one being replayed or
//     established does not answer to it yet, and holds at most maxHeld
//     requests; only sessions being replayed or established hold any.
//  3. Each outstanding request is indexed under its own sequence number
//     (24 bits, not 0) and has been sent at most N1+1 times; a UPF has at
//     most ReplayWindow replay requests outstanding, and as many as the
//     replay transactions toward it.
//  4. Every cached request has an expiry entry, so the cache cannot grow
//     without bound.
func (m *Machine) CheckInvariants() error {
	perUPF := make([]int, len(m.upfs))
	perSMF := map[*smf]int{}
	for sid, x := range m.sessions {
		if sid == 0 || x.sid != sid {
			return fmt.Errorf("session %d indexed under %d", x.sid, sid)
		}
		if x.upf < 0 || x.upf >= len(m.upfs) {
			return fmt.Errorf("session %d on UPF %d", sid, x.upf)
		}
		perUPF[x.upf]++
		perSMF[x.smf]++
		if m.smfs[x.smf.addr] != x.smf {
			return fmt.Errorf("session %d belongs to an SMF without association (%v)", sid, x.smf.addr)
		}
		if x.state == sessUp && !x.hasUP {
			return fmt.Errorf("session %d up without a UP SEID", sid)
		}
		if x.state == sessEstablishing && x.hasUP {
			return fmt.Errorf("session %d establishing with a UP SEID", sid)
		}
		if len(x.held) > maxHeld || (len(x.held) > 0 && x.state != sessReplaying && x.state != sessEstablishing) {
			return fmt.Errorf("session %d (state %d) holds %d requests", sid, x.state, len(x.held))
		}
		if x.est == nil {
			return fmt.Errorf("session %d has no stored establishment", sid)
		}
	}
	for i, u := range m.upfs {
		if u.sessions != perUPF[i] {
			return fmt.Errorf("UPF %s counts %d sessions, holds %d", u.cfg.Name, u.sessions, perUPF[i])
		}
	}
	for _, s := range m.smfs {
		if s.sessions != perSMF[s] {
			return fmt.Errorf("SMF %v counts %d sessions, holds %d", s.addr, s.sessions, perSMF[s])
		}
	}
	replays := make([]int, len(m.upfs))
	for seq, t := range m.txns {
		if seq == 0 || seq > 0xffffff || t.seq != seq {
			return fmt.Errorf("request %d indexed under %d", t.seq, seq)
		}
		if t.tries < 1 || t.tries > m.cfg.N1+1 {
			return fmt.Errorf("request %d sent %d times", seq, t.tries)
		}
		if t.kind == txReplay {
			replays[t.upf]++
		}
	}
	for i, u := range m.upfs {
		if u.replaying != replays[i] || u.replaying > m.cfg.ReplayWindow {
			return fmt.Errorf("UPF %s: %d replays outstanding, counted %d (window %d)", u.cfg.Name, replays[i], u.replaying, m.cfg.ReplayWindow)
		}
	}
	if len(m.rxq) < len(m.rx) {
		return fmt.Errorf("%d cached requests, %d expiries", len(m.rx), len(m.rxq))
	}
	return nil
}
