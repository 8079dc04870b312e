package n4_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/wmnsk/go-pfcp/ie"
	"github.com/wmnsk/go-pfcp/message"

	"github.com/telcolb/telcolb/l7parse/pfcp"
	sims "github.com/telcolb/telcolb/scenarios/pfcp"
	"github.com/telcolb/telcolb/sctplb/n4"
)

func TestProxyAssociatesWithEveryUPFAndAnswersTheSMFAsOneUPF(t *testing.T) {
	w := newWorld(t, 3, nil)
	for i, u := range w.upfs {
		if u.Snapshot().Associations != 1 {
			t.Fatalf("UPF %d: %d association setups", i, u.Snapshot().Associations)
		}
	}
	if up := w.m.UPFUp(); !up[0] || !up[1] || !up[2] {
		t.Fatalf("UPFs up: %v", up)
	}
	w.associate()
	resp, err := pfcp.Decode(w.toSMF[len(w.toSMF)-1])
	if err != nil {
		t.Fatal(err)
	}
	r := resp.(*message.AssociationSetupResponse)
	node, _ := r.NodeID.NodeID()
	if node != vip.String() || r.UPFunctionFeatures == nil {
		t.Fatalf("SMF sees Node ID %q features %v", node, r.UPFunctionFeatures)
	}
	// Heartbeats go both ways and carry the proxy's Recovery Time Stamp
	// (the world checks every message the SMF gets).
	w.advance(30 * time.Second)
	for i, u := range w.upfs {
		if u.Snapshot().Heartbeats < 5 {
			t.Fatalf("UPF %d got %d heartbeats in 30s", i, u.Snapshot().Heartbeats)
		}
	}
	if w.smf.Snapshot().RecoveryChanges != 0 {
		t.Fatal("SMF saw the Recovery Time Stamp change")
	}
	hb := mustMarshal(t, message.NewHeartbeatRequest(999, ie.NewRecoveryTimeStamp(w.smf.Recovery), nil))
	w.smfSends(hb)
	last, _ := pfcp.Parse(w.toSMF[len(w.toSMF)-1])
	if last.Type != pfcp.HeartbeatResponse || last.Seq != 999 || last.Recovery != w.m.RecoveryTimeStamp() {
		t.Fatalf("heartbeat answer %+v", last)
	}
}

func mustMarshal(t testing.TB, m message.Message) []byte {
	b := make([]byte, m.MarshalLen())
	if err := m.MarshalTo(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSessionsGetProxySEIDsAndEachMessageTheRightPeer: UPFs that all pick
// the same SEIDs; the SMF sees distinct UP F-SEIDs with the VIP, each UPF
// sees CP F-SEIDs with the proxy's address, and modifications, reports and
// deletions reach the right peer with the SEID it expects.
func TestSessionsGetProxySEIDsAndEachMessageTheRightPeer(t *testing.T) {
	const n = 30
	w := newWorld(t, 3, nil)
	w.associate()
	w.establish(n)
	st := w.smf.Snapshot()
	if st.Collisions != 0 || st.WrongSEID != 0 {
		t.Fatalf("SMF stats %+v", st)
	}
	for i, u := range w.upfs {
		ss := u.Sessions()
		if len(ss) != n/3 {
			t.Fatalf("UPF %d holds %d sessions, want %d (round robin)", i, len(ss), n/3)
		}
		for up, s := range ss {
			if up < 0x101 || up > 0x100+n/3 {
				t.Fatalf("UPF %d allocated %#x", i, up)
			}
			if s.CPAddr != upfSide {
				t.Fatalf("UPF %d sees CP address %v, want the proxy's %v", i, s.CPAddr, upfSide)
			}
		}
	}
	if got := w.m.Sessions(); got[0] != n/3 || got[1] != n/3 || got[2] != n/3 {
		t.Fatalf("Sessions() = %v", got)
	}
	for cp := uint64(1); cp <= n; cp++ {
		s, _ := w.smf.Session(cp)
		if s.UPAddr != vip || s.UPSEID == 0 {
			t.Fatalf("session %d: SMF sees UP F-SEID %#x at %v", cp, s.UPSEID, s.UPAddr)
		}
		b, _ := w.smf.Modify(cp)
		w.smfSends(b)
	}
	if st := w.smf.Snapshot(); st.Modified != n || st.WrongSEID != 0 {
		t.Fatalf("after modifications: %+v", st)
	}
	mods := 0
	for _, u := range w.upfs {
		for _, s := range u.Sessions() {
			mods += s.Mods
		}
		if u.Snapshot().Unknown != 0 {
			t.Fatal("a modification reached a UPF with the wrong SEID")
		}
	}
	if mods != n {
		t.Fatalf("UPFs applied %d modifications, want %d", mods, n)
	}
	// Every UPF reports on every session it holds.
	for i, u := range w.upfs {
		for up := range u.Sessions() {
			b, _, _ := u.Report(up)
			w.step(n4.Datagram{From: upfAddr(i), Data: b})
		}
	}
	if st := w.smf.Snapshot(); st.Reports != n || st.WrongSEID != 0 {
		t.Fatalf("reports: %+v", st)
	}
	answered := 0
	for _, u := range w.upfs {
		answered += u.Snapshot().ReportsAnswered
	}
	if answered != n {
		t.Fatalf("UPFs got %d report answers, want %d", answered, n)
	}
	for cp := uint64(1); cp <= n; cp++ {
		b, _ := w.smf.Delete(cp)
		w.smfSends(b)
	}
	if st := w.smf.Snapshot(); st.Deleted != n || st.Rejected != 0 {
		t.Fatalf("deletions: %+v", st)
	}
	for i, u := range w.upfs {
		if len(u.Sessions()) != 0 || w.m.Sessions()[i] != 0 {
			t.Fatalf("UPF %d still holds sessions", i)
		}
	}
}

// TestUnknownIEsPassUnchanged: the vendor-specific IE of the SMF's request
// reaches the UPF byte for byte, as does everything but F-SEID and Node ID.
func TestUnknownIEsPassUnchanged(t *testing.T) {
	w := newWorld(t, 1, nil)
	w.associate()
	req := w.smf.Establish(1)
	acts := w.m.Step(w.now, n4.Datagram{From: smfAddr, Data: req})
	var fwd []byte
	for _, a := range acts {
		if a.Kind == n4.Send && a.To == upfAddr(0) {
			fwd = a.Data
		}
	}
	if fwd == nil {
		t.Fatal("establishment not forwarded")
	}
	in, _ := pfcp.Parse(req)
	out, _ := pfcp.Parse(fwd)
	tailIn := req[in.FSEIDSpan.Off+in.FSEIDSpan.Len:]
	tailOut := fwd[out.FSEIDSpan.Off+out.FSEIDSpan.Len:]
	if !bytes.Equal(tailIn, tailOut) {
		t.Fatal("IEs after the F-SEID changed on the way")
	}
	if v := pfcp.FindIE(fwd, sims.VendorIE.Type); v == nil {
		t.Fatal("vendor IE lost")
	}
	if out.FSEID.V4 != upfSide || out.FSEID.SEID == 0 || out.NodeID.String() != vip.String() {
		t.Fatalf("forwarded F-SEID %+v node %v", out.FSEID, out.NodeID)
	}
}

// TestRetransmissionsAreAnsweredFromTheCacheNeverForwardedTwice.
func TestRetransmissionsAreAnsweredFromTheCacheNeverForwardedTwice(t *testing.T) {
	w := newWorld(t, 2, nil)
	w.associate()
	req := w.smf.Establish(1)
	// First copy: forwarded, answer not delivered yet (UPF down).
	w.down[0], w.down[1] = true, true
	w.smfSends(req)
	w.smfSends(req) // retransmission while pending: absorbed
	if w.count(n4.Absorbed) != 1 {
		t.Fatalf("absorbed %d", w.count(n4.Absorbed))
	}
	w.down[0], w.down[1] = false, false
	w.advance(time.Second) // the proxy's own retransmission reaches the UPF
	if st := w.smf.Snapshot(); st.Established != 1 {
		t.Fatalf("not established: %+v", st)
	}
	est := w.upfs[0].Snapshot().Established + w.upfs[1].Snapshot().Established
	if est != 1 {
		t.Fatalf("UPFs established %d sessions for one request", est)
	}
	// Retransmission after the answer: the cached answer, nothing forwarded.
	before := len(w.toSMF)
	w.smfSends(req)
	if len(w.toSMF) != before+1 || !bytes.Equal(w.toSMF[before], w.toSMF[before-1]) {
		t.Fatal("retransmission not answered with the cached answer")
	}
	if est := w.upfs[0].Snapshot().Established + w.upfs[1].Snapshot().Established; est != 1 {
		t.Fatalf("retransmission forwarded: %d establishments", est)
	}
	if w.smf.Snapshot().Unmatched != 1 {
		t.Fatalf("SMF saw %d duplicate answers, want the 1 it asked for", w.smf.Snapshot().Unmatched)
	}
	// Past CacheTTL, the entry is gone.
	w.advance(10 * time.Second)
}

// TestUPFRestartIsReplayedAndTheSMFSeesNothing.
func TestUPFRestartIsReplayedAndTheSMFSeesNothing(t *testing.T) {
	for _, how := range []string{"heartbeat", "up-initiated association"} {
		t.Run(how, func(t *testing.T) { testUPFRestart(t, how == "heartbeat") })
	}
}

func testUPFRestart(t *testing.T, byHeartbeat bool) {
	const n = 40
	w := newWorld(t, 2, nil)
	w.associate()
	w.establish(n)
	for cp := uint64(1); cp <= n; cp++ {
		b, _ := w.smf.Modify(cp)
		w.smfSends(b)
	}
	report := func(i int) {
		for up := range w.upfs[i].Sessions() {
			b, _, _ := w.upfs[i].Report(up)
			w.step(n4.Datagram{From: upfAddr(i), Data: b})
		}
	}
	report(1)
	before := len(w.toSMF)
	held := len(w.upfs[1].Sessions())
	w.upfs[1].Restart(t0.Add(time.Minute)) // new Recovery Time Stamp, sessions gone
	if byHeartbeat {
		w.advance(12 * time.Second) // a heartbeat reveals it
	} else {
		// The UPF associates itself, with sequence number 1, which its
		// previous incarnation used for a report moments ago.
		w.step(n4.Datagram{From: upfAddr(1), Data: mustMarshal(t, message.NewAssociationSetupRequest(1,
			ie.NewNodeID(upfAddr(1).Addr().String(), "", ""), ie.NewRecoveryTimeStamp(t0.Add(time.Minute))))})
	}
	for _, b := range w.toSMF[before:] {
		m, _ := pfcp.Parse(b)
		if m.Type != pfcp.HeartbeatRequest {
			t.Fatalf("SMF got %s during the replay", pfcp.TypeName(m.Type))
		}
	}
	if got := len(w.upfs[1].Sessions()); got != held {
		t.Fatalf("restarted UPF holds %d sessions after replay, had %d", got, held)
	}
	mods := 0
	for _, s := range w.upfs[1].Sessions() {
		mods += s.Mods
	}
	if mods != held {
		t.Fatalf("replay applied %d modifications to %d sessions", mods, held)
	}
	if w.count(n4.Replayed) != held || w.smf.Snapshot().RecoveryChanges != 0 {
		t.Fatalf("replayed %d, recovery changes %d", w.count(n4.Replayed), w.smf.Snapshot().RecoveryChanges)
	}
	// The restarted UPF numbers its reports from 1 again, within the
	// cache's lifetime: they are new requests, not retransmissions.
	report(1)
	if got := w.smf.Snapshot().Reports; got != 2*held {
		t.Fatalf("SMF got %d reports, want %d (before and after the restart)", got, 2*held)
	}
	// The SMF carries on with the SEIDs it has: everything still works.
	for cp := uint64(1); cp <= n; cp++ {
		b, _ := w.smf.Modify(cp)
		w.smfSends(b)
	}
	if st := w.smf.Snapshot(); st.Rejected != 0 || st.Modified != 2*n {
		t.Fatalf("after replay: %+v", st)
	}
}

func TestLostUPFSessionsAreMovedOrReleased(t *testing.T) {
	for _, policy := range []n4.LossPolicy{n4.Move, n4.Release} {
		t.Run(policy.String(), func(t *testing.T) {
			const n = 30
			w := newWorld(t, 3, func(c *n4.Config) { c.OnLoss = policy })
			w.associate()
			w.establish(n)
			w.down[2] = true
			w.advance(40 * time.Second)
			if w.m.UPFUp()[2] {
				t.Fatal("dead UPF still up")
			}
			s := w.m.Sessions()
			switch policy {
			case n4.Move:
				if s[2] != 0 || s[0]+s[1] != n || len(w.upfs[0].Sessions())+len(w.upfs[1].Sessions()) != n {
					t.Fatalf("after move: proxy %v, UPFs %d+%d", s, len(w.upfs[0].Sessions()), len(w.upfs[1].Sessions()))
				}
			case n4.Release:
				if s[2] != 0 || s[0]+s[1] != n-n/3 {
					t.Fatalf("after release: %v", s)
				}
			}
			for cp := uint64(1); cp <= n; cp++ {
				b, _ := w.smf.Modify(cp)
				w.smfSends(b)
			}
			st := w.smf.Snapshot()
			want := 0
			if policy == n4.Release {
				want = n / 3
			}
			if st.Causes[pfcp.CauseSessionNotFound] != want || st.Modified != n-want {
				t.Fatalf("modifications after loss: %+v", st)
			}
			if st.RecoveryChanges != 0 {
				t.Fatal("SMF saw a Recovery Time Stamp change")
			}
		})
	}
}

func TestBadRequestsGetTheSpecsAnswerAndChangeNothing(t *testing.T) {
	w := newWorld(t, 1, nil)
	// Establishment without association: No established PFCP Association.
	w.smfSends(w.smf.Establish(1))
	if c := w.smf.Snapshot().Causes[pfcp.CauseNoAssociation]; c != 1 {
		t.Fatalf("causes %v", w.smf.Snapshot().Causes)
	}
	w.associate()
	noFSEID := mustMarshal(t, message.NewSessionEstablishmentRequest(0, 0, 0, 77, 0, ie.NewNodeID("10.78.1.2", "", "")))
	unknown := mustMarshal(t, message.NewSessionModificationRequest(0, 0, 0xdead, 78, 0))
	short := []byte{0x21, 52, 0}
	v2 := mustMarshal(t, message.NewHeartbeatRequest(79, ie.NewRecoveryTimeStamp(t0), nil))
	v2[0] = 2 << 5
	lenBad := append(mustMarshal(t, message.NewSessionDeletionRequest(0, 0, 1, 80, 0)), 0, 0)
	want := []struct {
		b     []byte
		typ   uint8
		cause uint8
		off   uint16
	}{
		{noFSEID, pfcp.SessionEstablishmentResp, pfcp.CauseMandatoryIEMissing, pfcp.IEFSEID},
		{unknown, pfcp.SessionModificationResp, pfcp.CauseSessionNotFound, 0},
		{short, 0, 0, 0},
		{v2, pfcp.VersionNotSupported, 0, 0},
		{lenBad, pfcp.SessionDeletionResp, pfcp.CauseInvalidLength, 0},
	}
	for _, c := range want {
		before := len(w.toSMF)
		w.smfSends(c.b)
		if c.typ == 0 {
			if len(w.toSMF) != before {
				t.Fatalf("discardable message answered")
			}
			continue
		}
		if len(w.toSMF) != before+1 {
			t.Fatalf("message of type %d: %d answers", c.b[1], len(w.toSMF)-before)
		}
		m, err := pfcp.Parse(w.toSMF[before])
		if err != nil || m.Type != c.typ || m.Cause != c.cause {
			t.Fatalf("answer %+v (%v), want type %d cause %d", m, err, c.typ, c.cause)
		}
		if c.off != 0 {
			off := pfcp.FindIE(w.toSMF[before], pfcp.IEOffendingIE)
			if off == nil || off[4] != 0 || off[5] != byte(c.off) {
				t.Fatalf("offending IE %x, want %d", off, c.off)
			}
		}
	}
	if s := w.m.Sessions(); s[0] != 0 || len(w.upfs[0].Sessions()) != 0 {
		t.Fatal("a bad request created a session")
	}
	if w.count(n4.Malformed) != 4 {
		t.Fatalf("malformed counted %d, want 4", w.count(n4.Malformed))
	}
}

func TestPoliciesSpreadSessions(t *testing.T) {
	w := newWorld(t, 3, func(c *n4.Config) {
		c.Policy = n4.Weighted
		c.UPFs[0].Weight, c.UPFs[1].Weight, c.UPFs[2].Weight = 1, 2, 3
	})
	w.associate()
	w.establish(60)
	if s := w.m.Sessions(); s[0] != 10 || s[1] != 20 || s[2] != 30 {
		t.Fatalf("weighted 1:2:3 gave %v", s)
	}
	w = newWorld(t, 2, func(c *n4.Config) { c.Policy = n4.LeastSessions })
	w.associate()
	w.establish(4)
	for cp := uint64(1); cp <= 4; cp += 2 {
		b, _ := w.smf.Delete(cp) // sessions 1 and 3: both on one UPF? no: alternate
		w.smfSends(b)
	}
	w.smfSends(w.smf.Establish(5))
	w.smfSends(w.smf.Establish(6))
	if s := w.m.Sessions(); s[0] != s[1] {
		t.Fatalf("least-sessions left %v", s)
	}
}

func TestDuplicatedAnswersAndReportsActOnce(t *testing.T) {
	w := newWorld(t, 2, nil)
	w.associate()
	w.establish(4)
	// The UPF sends each report twice (its retransmission): the SMF gets it once.
	for i, u := range w.upfs {
		for up := range u.Sessions() {
			b, _, _ := u.Report(up)
			w.step(n4.Datagram{From: upfAddr(i), Data: b})
			w.step(n4.Datagram{From: upfAddr(i), Data: b})
		}
	}
	if st := w.smf.Snapshot(); st.Reports != 4 || st.DuplicateReports != 0 {
		t.Fatalf("reports %+v", st)
	}
	if w.count(n4.Absorbed) != 4 {
		t.Fatalf("absorbed %d", w.count(n4.Absorbed))
	}
}

// TestARelayGivenUpIsRetransmittedNotRepeated: the proxy gives up relaying
// a report whose answers are lost; the UPF's later retransmission sends the
// same relayed request again (same sequence number), so the SMF sees a
// retransmission and acts on the report once.
func TestARelayGivenUpIsRetransmittedNotRepeated(t *testing.T) {
	w := newWorld(t, 1, nil)
	w.associate()
	w.establish(1)
	var up uint64
	for k := range w.upfs[0].Sessions() {
		up = k
	}
	b, _, _ := w.upfs[0].Report(up)
	w.smfMute = true
	w.step(n4.Datagram{From: upfAddr(0), Data: b})
	w.advance(4 * time.Second) // T1 1s, N1 2: the proxy gives up
	if w.count(n4.SteeringFailure) == 0 {
		t.Fatal("the proxy never gave up")
	}
	w.smfMute = false
	w.step(n4.Datagram{From: upfAddr(0), Data: b}) // the UPF retransmits
	st := w.smf.Snapshot()
	if st.Reports != 1 || w.upfs[0].Snapshot().ReportsAnswered != 1 {
		t.Fatalf("SMF %+v, UPF answers %d", st, w.upfs[0].Snapshot().ReportsAnswered)
	}
	w.step(n4.Datagram{From: upfAddr(0), Data: b}) // and again: answered from the cache
	if st := w.smf.Snapshot(); st.Reports != 1 {
		t.Fatalf("SMF %+v", st)
	}
}
