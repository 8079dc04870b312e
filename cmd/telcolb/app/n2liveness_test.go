package app

import (
	"context"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/ha/member"
	"github.com/telcolb/telcolb/sctplb/abort"
)

// The gate on a VIP no advertisement elects an owner for (BGP), with the
// liveness path: aborted at once, in the default mode too, once the path
// has lost the peer as well; while the path hears the peer, waited for
// until takeoverOwnerWait and then left, in mode peer-lost too (which
// aborted on the sync's verdict alone past the grace); a path that never
// heard the peer changes nothing. Each row gives another step than the
// gate without the path did (pathNone: every row's mode and time).
func TestTakeoverDecisionByTheLivenessPath(t *testing.T) {
	owner, peerLost := TakeoverAbortOwner, TakeoverAbortPeerLost
	now, early, grace, late := time.Duration(0), takeoverGrace/2, takeoverGrace, takeoverOwnerWait
	for _, c := range []struct {
		mode    string
		lostFor time.Duration
		path    peerPath
		want    takeoverStep
	}{
		// The peer dead on both paths: at once, no grace, both modes.
		{owner, now, pathLost, stepAbort},
		{owner, early, pathLost, stepAbort},
		{owner, late, pathLost, stepAbort},
		{peerLost, now, pathLost, stepAbort},
		{peerLost, early, pathLost, stepAbort},
		// Heard on the liveness path: only the sync lost it. Waited for
		// (it may die: a kill's verdict comes before the path's detection
		// time), then left, in both modes.
		{owner, now, pathAlive, stepWait},
		{owner, grace, pathAlive, stepWait},
		{owner, late - time.Millisecond, pathAlive, stepWait},
		{peerLost, grace, pathAlive, stepWait},
		{peerLost, late, pathAlive, stepSkip},
	} {
		got, why := takeoverDecision(c.mode, false, false, c.lostFor, ownerNone, c.path)
		if got != c.want || why == "" {
			t.Errorf("mode %s, lost for %v, liveness path %v: %v (%q), want %v", c.mode, c.lostFor, c.path, got, why, c.want)
		}
		if before, _ := takeoverDecision(c.mode, false, false, c.lostFor, ownerNone, pathNone); before == c.want {
			t.Errorf("mode %s, lost for %v: the row gives %v without the liveness path too", c.mode, c.lostFor, before)
		}
	}
	// The path decides nothing where the L2 election does, or when off.
	for _, path := range []peerPath{pathNone, pathAlive, pathLost} {
		for _, o := range []struct {
			owner vipOwner
			want  takeoverStep
		}{{ownerSelf, stepAbort}, {ownerOther, stepWait}} {
			if got, _ := takeoverDecision(owner, false, false, now, o.owner, path); got != o.want {
				t.Errorf("owner %v, liveness path %v: %v, want %v", o.owner, path, got, o.want)
			}
		}
		if got, _ := takeoverDecision(TakeoverAbortOff, false, false, now, ownerNone, path); got != stepSkip {
			t.Errorf("mode off, liveness path %v: %v, want skip", path, got)
		}
	}
}

// The path's verdict from a member's state: no evidence unless the peer
// is a member that was heard at least once.
func TestLivenessPathFromTheMemberState(t *testing.T) {
	heard := time.Now()
	for _, c := range []struct {
		name string
		ms   member.MemberState
		ok   bool
		want peerPath
	}{
		{"not a member", member.MemberState{}, false, pathNone},
		{"never heard", member.MemberState{Name: "lb1"}, true, pathNone},
		{"heard, alive", member.MemberState{Name: "lb1", Alive: true, LastHeard: heard}, true, pathAlive},
		{"heard, lost", member.MemberState{Name: "lb1", LastHeard: heard}, true, pathLost},
	} {
		if got := livenessPath(c.ms, c.ok); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// The re-confirmation (n2alive.go) counts a liveness heartbeat as the L2
// election's: a peer heard on the liveness path long after the sync last
// heard it is alive, with no L2 advertisement at all.
func TestPeerAliveByALivenessHeartbeat(t *testing.T) {
	r := newN2Replica(nil, testLogger(t))
	syncAt := time.Now().Add(-10 * time.Second)
	r.setHeard(func(string) (time.Time, time.Time) { return syncAt, time.Time{} })
	if r.peerAliveOnL2("lb1") {
		t.Fatal("alive with no heartbeat heard anywhere")
	}
	r.setLiveness(func(peer string) (member.MemberState, bool) {
		return member.MemberState{Name: peer, Alive: true, LastHeard: syncAt.Add(4 * time.Second)}, true
	})
	if !r.peerAliveOnL2("lb1") {
		t.Error("a peer heard on the liveness path 4s after the sync last heard it is not alive by the re-confirmation")
	}
}

// livenessAddrs are loopback UDP addresses for lb1's and lb2's liveness
// heartbeats, and the mutation that gives each node the path.
func livenessAddrs(t *testing.T) func(node string, c *HAConfig) {
	t.Helper()
	addr := map[string]netip.AddrPort{}
	for _, n := range []string{"lb1", "lb2"} {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		addr[n] = c.LocalAddr().(*net.UDPAddr).AddrPort()
		c.Close()
	}
	return func(node string, c *HAConfig) {
		c.Liveness = &member.NodeConfig{Self: node, Interval: member.DefaultInterval,
			Members: []member.Peer{{Name: "lb1", Addr: addr["lb1"]}, {Name: "lb2", Addr: addr["lb2"]}}}
	}
}

// The daemon's wiring, default mode, a VIP no advertisement elects an
// owner for (BGP): lb1 ends (its sync connection and its liveness
// heartbeats with it, as a kill does) and lb2 ABORTs the gNB associations
// lb1's records name once the liveness path has lost lb1 too.
func TestTakeoverOnABGPVIPWhenThePeerDies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pair := newHAPair(t)
	live := livenessAddrs(t)
	lb1 := pair.startWith("lb1", newMemCT(), func(c *HAConfig) { live("lb1", c) })
	lb2 := pair.startWith("lb2", newMemCT(), func(c *HAConfig) { c.TakeoverAbort = TakeoverAbortOwner; live("lb2", c) })
	r, sent := twoGNBTakeover(t, ctx, lb2, ownerNone)
	waitFor(t, "lb1 and lb2 connected, heard on the liveness path", func() bool {
		return lb1.node.Up("lb2") && lb2.node.Up("lb1") && r.livenessOf("lb1") == pathAlive
	})
	closed := time.Now()
	if err := lb1.Close(); err != nil {
		t.Fatal(err)
	}
	var sentAt []time.Time
	waitFor(t, "the takeover's ABORTs", func() bool { sentAt = sent(); return len(sentAt) == 2 })
	t.Logf("ABORTs %v after lb1 closed", sentAt[1].Sub(closed).Round(time.Millisecond))
	if c := r.takeoverCounts(); c["sent"] != 2 {
		t.Errorf("counts %v, want sent 2", c)
	}
}

// The sync link alone cut (lb1 alive, its liveness heartbeats still
// heard): lb2's sync declares lb1 lost, and no ABORT goes on the BGP VIP
// in either mode (peer-lost aborted on the sync's verdict alone after the
// grace), counted peer_alive (without the path: not_owner, or sent).
func TestNoTakeoverOnABGPVIPWhenOnlyTheSyncLinkIsCut(t *testing.T) {
	for _, mode := range []string{TakeoverAbortOwner, TakeoverAbortPeerLost} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			live := livenessAddrs(t)
			rig := newCutRig(t, ctx, time.Second, map[string]abort.Target{"gnb-a": tgt("192.0.2.1:4001", 11), "gnb-b": tgt("192.0.2.2:4002", 22)},
				live, func(_ string, c *HAConfig) { c.TakeoverAbort = mode })
			r := rig.r
			r.setOwner(func(netip.Addr) vipOwner { return ownerNone })
			waitFor(t, "lb1 heard on the liveness path", func() bool { return r.livenessOf("lb1") == pathAlive })
			rig.cutLink(t)
			waitFor(t, "the gate leaving the VIP", func() bool { return r.takeoverCounts()["peer_alive"] == 2 })
			if sent := rig.sent(); len(sent) != 0 {
				t.Errorf("ABORTs of a live peer's associations: %v", sent)
			}
			if c := r.takeoverCounts(); c["not_owner"] != 0 || c["sent"] != 0 {
				t.Errorf("counts %v, want peer_alive 2 only", c)
			}
		})
	}
}

// --ha-liveness-members and --ha-liveness-interval: parsed from flags and
// the file; a bad list is refused naming the flag (a member that is no
// sync peer, this node missing, a host name, a member twice).
func TestHALivenessFlags(t *testing.T) {
	base := []string{"--ha-node-name=lb1", "--ha-listen-address=10.0.0.1:7946", "--ha-peers=lb2=10.0.0.2:7946",
		"--ha-tls-cert-file=/c.pem", "--ha-tls-key-file=/k.pem", "--ha-tls-ca-file=/ca.pem"}
	o, err := ParseOptions(append(base, "--ha-liveness-members=lb1=10.1.0.1:7947,lb2=10.1.0.2:7947", "--ha-liveness-interval=50ms"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c, err := o.HA.Config()
	if err != nil {
		t.Fatal(err)
	}
	want := []member.Peer{{Name: "lb1", Addr: netip.MustParseAddrPort("10.1.0.1:7947")}, {Name: "lb2", Addr: netip.MustParseAddrPort("10.1.0.2:7947")}}
	if l := c.Liveness; l == nil || l.Self != "lb1" || l.Interval != 50*time.Millisecond || !slices.Equal(l.Members, want) {
		t.Errorf("liveness %+v", c.Liveness)
	}
	if o, err := ParseOptions(base, io.Discard); err != nil {
		t.Error(err)
	} else if c, err := o.HA.Config(); err != nil || c.Liveness != nil {
		t.Errorf("without the flag: %+v %v", c, err)
	}
	cfg := writeFile(t, "ha.yaml", "ha:\n  nodeName: lb1\n  listenAddress: ':7946'\n  peers: ['lb2=h:1']\n  tlsCertFile: c\n  tlsKeyFile: k\n  tlsCAFile: ca\n"+
		"  livenessMembers: ['lb1=10.1.0.1:7947', 'lb2=10.1.0.2:7947']\n")
	if o, err := ParseOptions([]string{"--config", cfg}, io.Discard); err != nil {
		t.Error(err)
	} else if c, err := o.HA.Config(); err != nil || c.Liveness == nil || c.Liveness.Interval != member.DefaultInterval || len(c.Liveness.Members) != 2 {
		t.Errorf("file: %+v %v", c, err)
	}
	for _, bad := range [][]string{
		{"--ha-liveness-members=lb1=10.1.0.1:7947,lb3=10.1.0.3:7947"},
		{"--ha-liveness-members=lb2=10.1.0.2:7947,lb3=10.1.0.3:7947"},
		{"--ha-liveness-members=lb1=10.1.0.1:7947"},
		{"--ha-liveness-members=lb1=host:7947,lb2=10.1.0.2:7947"},
		{"--ha-liveness-members=lb1=10.1.0.1:7947,lb1=10.1.0.2:7947"},
		{"--ha-liveness-members=lb1=10.1.0.1:7947,lb2=10.1.0.2:7947", "--ha-liveness-interval=2s"},
		{"--ha-liveness-interval=50ms"},
	} {
		_, err := ParseOptions(append(append([]string(nil), base...), bad...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "ha-liveness-") {
			t.Errorf("%v: error %v does not name the flag", bad, err)
		}
	}
}
