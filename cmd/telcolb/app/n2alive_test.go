package app

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha"
	"github.com/telcolb/telcolb/ha/member"
	"github.com/telcolb/telcolb/sctplb"
	"github.com/telcolb/telcolb/sctplb/abort"
	"github.com/telcolb/telcolb/sctplb/transport/memory"
)

// The re-confirmation rule: alive when the L2 election heard the peer
// 2.5 s or more after the sync last did. A killed peer goes silent on both
// within the sync's keepalive interval; a peer behind a cut sync link is
// heard on L2 up to the sync's peer timeout (4 s) later at the verdict.
func TestHeardOnL2AfterSync(t *testing.T) {
	base := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name         string
		syncAt, l2At time.Time
		alive        bool
	}{
		{"never heard by the sync", time.Time{}, base, false},
		{"never heard on L2", base, time.Time{}, false},
		{"neither", time.Time{}, time.Time{}, false},
		{"kill: both at once", base, base, false},
		{"kill: L2 a keepalive interval later", base, base.Add(time.Second), false},
		{"L2 heard it first", base.Add(3 * time.Second), base, false},
		{"just under the margin", base, base.Add(l2HeardAfterSync - time.Millisecond), false},
		{"at the margin", base, base.Add(l2HeardAfterSync), true},
		{"cut sync link: verdict by the 4 s peer timeout", base, base.Add(4 * time.Second), true},
		{"stalled peer heard again after the verdict", base, base.Add(4*time.Second + 320*time.Millisecond), true},
	} {
		if got := heardOnL2AfterSync(c.syncAt, c.l2At); got != c.alive {
			t.Errorf("%s: heardOnL2AfterSync = %v, want %v", c.name, got, c.alive)
		}
	}
}

// A peer alive by the re-confirmation is aborted in no mode, whoever owns
// the VIP, whenever asked (mode off keeps its own reason).
func TestTakeoverDecisionSkipsAPeerAliveOnL2(t *testing.T) {
	for _, mode := range []string{TakeoverAbortOwner, TakeoverAbortPeerLost} {
		for _, owner := range []vipOwner{ownerSelf, ownerOther, ownerNone} {
			for _, lostFor := range []time.Duration{0, takeoverGrace, takeoverOwnerWait, time.Minute} {
				for _, path := range []peerPath{pathNone, pathAlive, pathLost} {
					got, why := takeoverDecision(mode, false, true, lostFor, owner, path)
					if got != stepSkip || why != reasonPeerAlive {
						t.Errorf("mode %s, owner %v, lost for %v, liveness path %v, peer alive on L2: %v (%q), want skip (%q)", mode, owner, lostFor, path, got, why, reasonPeerAlive)
					}
				}
				// The same with the rule saying nothing decides as before.
				before, _ := takeoverDecision(mode, false, false, lostFor, owner, pathNone)
				if owner == ownerSelf && before != stepAbort {
					t.Errorf("mode %s, lost for %v: a VIP owned here with the peer not alive on L2 gives %v, want abort", mode, lostFor, before)
				}
			}
		}
	}
	if got, why := takeoverDecision(TakeoverAbortOff, false, true, 0, ownerSelf, pathNone); got != stepSkip || why == reasonPeerAlive {
		t.Errorf("mode off: %v (%q), want skip for being off", got, why)
	}
}

// In the shell: on a VIP owned here, a peer the L2 election hears long
// after the sync is left alone (counted peer_alive); one it does not is
// aborted; and a heartbeat heard that late in the middle of a takeover
// stops the ABORTs not yet sent.
func TestAbortPeerLeavesAPeerTheL2ElectionHears(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := runProxy(t, ctx, memory.New(memory.Config{Queue: 64}))
	r := newN2Replica(nil, slog.New(slog.DiscardHandler))
	var sent []abort.Target
	var alive bool
	syncAt := time.Now()
	r.setHeard(func(string) (time.Time, time.Time) {
		if alive {
			return syncAt, syncAt.Add(4 * time.Second)
		}
		return syncAt, syncAt.Add(300 * time.Millisecond)
	})
	r.held["n2"] = map[string]heldN2{}
	targets := []abort.Target{tgt("192.0.2.1:4001", 11), tgt("192.0.2.2:4002", 22), tgt("192.0.2.3:4003", 33)}
	for i, tg := range targets {
		k, v := gnbRecord(t, "gnb-"+string(rune('a'+i)), tg)
		r.held["n2"][k] = heldN2{from: "lb1", value: v}
	}
	r.setRunning(func(svc string) (*sctplb.Proxy, bool) { return p, svc == "n2" })
	r.setOwner(func(netip.Addr) vipOwner { return ownerSelf })
	never := func() bool { return false }

	alive = true
	r.takeover.send = func(t abort.Target) error { sent = append(sent, t); return nil }
	if more := r.abortPeer(ctx, "lb1", 0, TakeoverAbortOwner, map[netip.Addr]bool{}, never); more || len(sent) != 0 {
		t.Fatalf("peer alive on L2: sent %v (more %v), want nothing", sent, more)
	}
	if c := r.takeoverCounts(); c["peer_alive"] != 3 || c["not_owner"] != 0 {
		t.Errorf("counts %v, want peer_alive 3", c)
	}
	// Not alive: the first ABORT goes; the peer is then heard on L2
	// (it was stalled, not dead): the other two are not sent.
	alive = false
	r.takeover.send = func(t abort.Target) error { sent = append(sent, t); alive = true; return nil }
	r.abortPeer(ctx, "lb1", 0, TakeoverAbortOwner, map[netip.Addr]bool{}, never)
	if len(sent) != 1 || !slices.Contains(targets, sent[0]) {
		t.Errorf("sent %v, want one ABORT before the peer was heard again", sent)
	}
}

// membersAnnouncer is an L2 announcer's Members.
type membersAnnouncer struct {
	fixedAnnouncer
	members []member.MemberState
}

func (m membersAnnouncer) Members() []member.MemberState { return m.members }

// l2HeardAt reads the L2 election's member of that name, never this node
// itself; nothing without an L2 advertisement.
func TestL2HeardAtReadsTheElectionsMembers(t *testing.T) {
	heard := time.Now()
	l2 := membersAnnouncer{members: []member.MemberState{{Name: "lb2", Self: true, LastHeard: heard.Add(time.Hour)}, {Name: "lb1", LastHeard: heard}}}
	a := &advertiser{announcers: map[string]ha.Announcer{api.AdvertiseL2: l2}}
	if got := a.l2HeardAt("lb1"); !got.Equal(heard) {
		t.Errorf("l2HeardAt(lb1) = %v, want %v", got, heard)
	}
	for _, name := range []string{"lb2", "lb3"} {
		if got := a.l2HeardAt(name); !got.IsZero() {
			t.Errorf("l2HeardAt(%s) = %v, want zero", name, got)
		}
	}
	a = &advertiser{announcers: map[string]ha.Announcer{api.AdvertiseBGP: fixedAnnouncer{}}}
	if got := a.l2HeardAt("lb1"); !got.IsZero() {
		t.Errorf("no L2: l2HeardAt = %v, want zero", got)
	}
}

// Two real sync nodes, the sync link cut (every message dropped, the
// connections open): lb2's sync loses lb1 by its peer timeout while the
// L2 election (here: a member always just heard) still hears lb1, and
// lb2 owns the VIP (lb1 stalled past the L2 detection time). lb2 sends no
// ABORT: the sync last heard lb1 a peer timeout before the election did.
func TestCutSyncLinkWithThePeerHeardOnL2AbortsNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rig := newCutRig(t, ctx, 3*time.Second, map[string]abort.Target{"gnb-a": tgt("192.0.2.1:4001", 11), "gnb-b": tgt("192.0.2.2:4002", 22)})
	r := rig.r
	r.setOwner(func(netip.Addr) vipOwner { return ownerSelf })
	r.setL2Heard(func(string) time.Time { return time.Now() })
	rig.cutLink(t)
	waitFor(t, "the takeover's verdict", func() bool { c := r.takeoverCounts(); return c["peer_alive"]+c["sent"] >= 2 })
	time.Sleep(takeoverOwnerPoll * 3)
	if sent := rig.sent(); len(sent) != 0 {
		t.Errorf("sent %v: ABORTs of a peer the L2 election still hears", sent)
	}
}
