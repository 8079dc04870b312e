package steer

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb/abort"
)

// checkReplica feeds mirror what m changed since the last call and says
// whether mirror's parked state now equals m's export: a standby that
// imported the change stream holds exactly what the active serves.
func checkReplica(m, mirror *Machine) string {
	if err := mirror.Import(m.TakeChanges()); err != nil {
		return fmt.Sprintf("import of the change stream: %v", err)
	}
	want, got := m.Export(), mirror.Imported()
	if len(want) != len(got) {
		return fmt.Sprintf("exporter holds %d records, importer %d", len(want), len(got))
	}
	for i := range want {
		if !bytes.Equal(want[i].Key, got[i].Key) || !bytes.Equal(want[i].Value, got[i].Value) {
			return fmt.Sprintf("record %d: exporter %q=%x, importer %q=%x", i, want[i].Key, want[i].Value, got[i].Key, got[i].Value)
		}
	}
	return ""
}

// retainedSetup is gNB id's NG Setup Request asking for UE retention.
func (s *sim) retainedSetup(id AssocID) []byte {
	return s.must(ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: plmn, GNBID: uint32(id), GNBIDBits: 22, TACs: []uint32{1}, Slices: []ngapl.SNSSAI{{SST: 1}}, UEsRetained: true}))
}

// takeover builds the standby's sim: its machine is the failed proxy's
// mirror, the AMFs are the same, and the gNBs reconnect (with new
// association IDs, keeping their UE contexts) and redo NG Setup with UE
// retention. local registers UEs of another gNB on the standby first.
func takeover(t *testing.T, old *sim, retain bool, local int) (*sim, map[AssocID]AssocID) {
	t.Helper()
	cfg := old.m.cfg
	mirror, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{t: t, m: old.mirror, mirror: mirror, now: old.now, amfs: old.amfs, gnbs: map[AssocID]*fakeGNB{},
		upAMF: map[AssocID]int{}, upGNB: map[AssocID]AssocID{}, fails: map[string]int{}, closed: map[AssocID]bool{}, prev: old, retain: retain}
	s.inherited = inherit(old)
	if local > 0 {
		c := s.addGNB(gnbC)
		if !c.setupOK {
			t.Fatal("standby's own gNB not set up")
		}
		for i := 0; i < local; i++ {
			ran := uint32(1000 + i) // the same RAN-UE-NGAP-IDs as the adopted UEs
			s.initialUE(gnbC, ran, nil)
			s.uplinkNAS(gnbC, ran)
		}
	}
	moved := map[AssocID]AssocID{}
	for id, g := range old.gnbs {
		nid := id + 100
		moved[id] = nid
		ng := &fakeGNB{id: nid, inbox: map[int64]int{}, ues: g.ues}
		s.gnbs[nid] = ng
		s.run(GNBUp{Assoc: nid, OutStreams: 4})
		s.run(GNBMessage{Assoc: nid, Data: s.retainedSetup(id)})
		if !ng.setupOK {
			t.Fatalf("gNB %d: NG Setup on the standby failed", id)
		}
	}
	return s, moved
}

const gnbC AssocID = 3

func inherit(old *sim) map[*simUE]string {
	out := map[*simUE]string{}
	for _, f := range old.amfs {
		for _, u := range f.ues {
			if g := old.m.gnbs[old.gnbOfUp(u.gnb)]; g != nil {
				out[u] = g.name
			}
		}
	}
	return out
}

func TestTakeoverResumesReplicatedUEs(t *testing.T) {
	const n = 200
	a := newSim(t, 3, RoundRobin)
	a.addGNB(gnbA)
	a.addGNB(gnbB)
	where := register(t, a, n)
	if a.mirror.ParkedUEs() != n {
		t.Fatalf("standby parked %d UEs, want %d", a.mirror.ParkedUEs(), n)
	}
	before := map[[2]uint32]int{}
	for ran, g := range where {
		before[[2]uint32{uint32(g), ran}] = a.owner(g, ran)
	}
	const local = 50
	b, moved := takeover(t, a, true, local)
	for id, g := range moved {
		if !b.gnbs[g].retained {
			t.Errorf("gNB %d: NG Setup Response on the standby does not say ues-retained", id)
		}
	}
	if b.m.ParkedUEs() != 0 {
		t.Errorf("%d UEs still parked after every gNB reconnected", b.m.ParkedUEs())
	}
	misBefore := totalMisrouted(b)
	for ran, g := range where {
		ng := moved[g]
		amf := before[[2]uint32{uint32(g), ran}]
		msgs := 0
		for _, u := range b.amfs[amf].ues {
			if u.ran == ran && u.gnb == b.upstreamOf(ng, amf) {
				msgs = u.msgs
			}
		}
		b.uplinkNAS(ng, ran)
		after := 0
		for _, u := range b.amfs[amf].ues {
			if u.ran == ran && u.gnb == b.upstreamOf(ng, amf) {
				after = u.msgs
			}
		}
		if after != msgs+1 {
			t.Fatalf("UE %d of gNB %d: uplink NAS did not reach AMF %d under its AMF-UE-NGAP-ID (msgs %d -> %d)", ran, g, amf, msgs, after)
		}
	}
	if d := totalMisrouted(b) - misBefore; d != 0 {
		t.Errorf("%d messages misrouted after takeover", d)
	}
	for id, g := range moved {
		if e := b.gnbs[g].errInd; e != 0 {
			t.Errorf("gNB %d got %d Error Indications after takeover", id, e)
		}
	}
	// The standby's own UEs, with the same RAN-UE-NGAP-IDs, are untouched.
	for i := 0; i < local; i++ {
		b.uplinkNAS(gnbC, uint32(1000+i))
	}
	if e := b.gnbs[gnbC].errInd; e != 0 {
		t.Errorf("standby's own gNB got %d Error Indications", e)
	}
	if got := sum(b.m.UEs()); got != n+local {
		t.Errorf("standby holds %d UEs, want %d", got, n+local)
	}
}

// Without UE retention (the gNB does not ask, or the AMFs do not keep),
// nothing is adopted and the gNB is told so: it re-initialises its UEs.
func TestTakeoverWithoutRetention(t *testing.T) {
	for _, tc := range []struct {
		name     string
		amfKeeps bool
		gnbAsks  bool
	}{{"amf-does-not-retain", false, true}, {"gnb-does-not-ask", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			a := newSim(t, 2, RoundRobin)
			a.addGNB(gnbA)
			a.addGNB(gnbB)
			register(t, a, 20)
			b := &sim{t: t, m: a.mirror, mirror: mustNew(t, a.m.cfg), now: a.now, amfs: a.amfs, gnbs: map[AssocID]*fakeGNB{},
				upAMF: map[AssocID]int{}, upGNB: map[AssocID]AssocID{}, fails: map[string]int{}, closed: map[AssocID]bool{}, prev: a, retain: tc.amfKeeps}
			ng := &fakeGNB{id: 9, inbox: map[int64]int{}, ues: map[uint32]*gnbUE{}}
			b.gnbs[9] = ng
			b.inherited = inherit(a)
			b.run(GNBUp{Assoc: 9, OutStreams: 4})
			req := b.retainedSetup(gnbA)
			if !tc.gnbAsks {
				req = b.must(ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: plmn, GNBID: uint32(gnbA), GNBIDBits: 22, TACs: []uint32{1}, Slices: []ngapl.SNSSAI{{SST: 1}}}))
			}
			b.run(GNBMessage{Assoc: 9, Data: req})
			if !ng.setupOK || ng.retained {
				t.Fatalf("setup ok %v, retained %v; want ok and not retained", ng.setupOK, ng.retained)
			}
			if got := sum(b.m.UEs()); got != 0 {
				t.Errorf("%d UEs adopted though not retained", got)
			}
			if p := b.m.ParkedUEs(); p != 10 {
				t.Errorf("%d UEs parked, want gNB B's 10 only", p)
			}
		})
	}
}

func mustNew(t *testing.T, cfg Config) *Machine {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A record that does not decode is refused with an error; the others of
// the batch are applied.
func TestImportRefusesGarbage(t *testing.T) {
	m := mustNew(t, Config{AMFs: []AMF{{Name: "amf0"}}, Replicate: true})
	good := Record{Key: ueKey("00101-gnb-1", 7), Value: append(appendBytes([]byte{recVersion}, []byte("amf0")), 0, 0, 0, 0, 0, 0, 0, 9)}
	bad := []Record{
		{Key: nil, Value: []byte{1}},
		{Key: []byte("x"), Value: []byte{1}},
		{Key: ueKey("g", 1), Value: []byte{recVersion, 4, 'a'}},
		{Key: ueKey("g", 1)[:3], Value: good.Value},
		{Key: ueKey("g", 1), Value: append(appendBytes([]byte{recVersion}, []byte("a")), 0xff, 0, 0, 0, 0, 0, 0, 0)},
		{Key: gnbKey("g"), Value: []byte{recVersion, 0, 0}},
		{Key: gnbKey(""), Value: []byte{recVersion}},
		{Key: gnbKey("g"), Value: []byte{9}},
	}
	err := m.Import(append(bad, good))
	if err == nil {
		t.Fatal("garbage imported without error")
	}
	if m.ParkedUEs() != 1 {
		t.Errorf("parked %d UEs, want the one good record", m.ParkedUEs())
	}
	if err := mustNew(t, Config{AMFs: []AMF{{Name: "amf0"}}}).Import([]Record{good}); err != ErrReplicationOff {
		t.Errorf("import without Replicate: %v, want ErrReplicationOff", err)
	}
}

// FuzzImport: any record is either parked or refused; what is parked
// exports back to a record that imports again to the same state.
func FuzzImport(f *testing.F) {
	f.Add([]byte{recUE, 3, 'a', 'b', 'c', 0, 0, 0, 1}, []byte{recVersion, 4, 'a', 'm', 'f', '0', 0, 0, 0, 0, 0, 0, 0, 9})
	f.Add([]byte{recGNB, 'g'}, []byte{recVersion, 1, 0x20, 1, 4, 'a', 'm', 'f', '0', 1, 0})
	f.Add([]byte{recGNB, 'g'}, encodeGNBValue([]byte{0x20}, map[string][]byte{"amf0": {0}}, abort.Target{
		Src: netip.MustParseAddrPort("10.0.0.1:38412"), Dst: netip.MustParseAddrPort("10.0.1.2:4000"), Tag: 7}))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		m := mustNew(t, Config{AMFs: []AMF{{Name: "amf0"}}, Replicate: true})
		if err := m.Import([]Record{{Key: key, Value: value}}); err != nil {
			if len(m.Imported()) != 0 {
				t.Fatalf("refused record left state: %v", m.Imported())
			}
			return
		}
		again := mustNew(t, Config{AMFs: []AMF{{Name: "amf0"}}, Replicate: true})
		if err := again.Import(m.Imported()); err != nil {
			t.Fatalf("re-import of an export: %v", err)
		}
		x, y := m.Imported(), again.Imported()
		if len(x) != len(y) {
			t.Fatalf("re-import holds %d records, want %d", len(y), len(x))
		}
		for i := range x {
			if !bytes.Equal(x[i].Key, y[i].Key) || !bytes.Equal(x[i].Value, y[i].Value) {
				t.Fatalf("re-import differs at %d", i)
			}
		}
	})
}
