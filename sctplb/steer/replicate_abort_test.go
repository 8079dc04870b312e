package steer

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb/abort"
)

var testTarget = abort.Target{
	Src: netip.MustParseAddrPort("10.0.0.100:38412"),
	Dst: netip.MustParseAddrPort("192.0.2.7:40123"),
	Tag: 0x1234abcd,
}

// A gNB whose GNBUp named its association (the userspace transport) gets
// a version 2 record carrying the target; the standby parks it, exports
// it back unchanged (checkReplica at every step), and GNBAbortTarget
// reads it. A gNB without one keeps the version 1 record.
func TestGNBRecordCarriesAbortTarget(t *testing.T) {
	s := newSim(t, 2, RoundRobin)
	g := &fakeGNB{id: gnbA, inbox: map[int64]int{}, ues: map[uint32]*gnbUE{}}
	s.gnbs[gnbA] = g
	s.run(GNBUp{Assoc: gnbA, OutStreams: 4, Abort: testTarget})
	s.run(GNBMessage{Assoc: gnbA, Data: s.must(ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: plmn, GNBID: uint32(gnbA), GNBIDBits: 22, TACs: []uint32{1}, Slices: []ngapl.SNSSAI{{SST: 1}}}))})
	if !g.setupOK {
		t.Fatal("NG Setup failed")
	}
	s.addGNB(gnbB)
	if msg := checkReplica(s.m, s.mirror); msg != "" {
		t.Fatal(msg)
	}
	got := map[string]abort.Target{}
	versions := map[string]byte{}
	for _, r := range s.mirror.Imported() {
		if r.Key[0] != recGNB {
			continue
		}
		versions[string(r.Key[1:])] = r.Value[0]
		tg, ok, err := GNBAbortTarget(r)
		if err != nil {
			t.Fatalf("%q: %v", r.Key, err)
		}
		if ok {
			got[string(r.Key[1:])] = tg
		}
	}
	if len(versions) != 2 {
		t.Fatalf("standby holds %d gNB records, want 2", len(versions))
	}
	if len(got) != 1 {
		t.Fatalf("targets %v, want gNB A's only", got)
	}
	for name, tg := range got {
		if tg != testTarget {
			t.Errorf("gNB %s: target %v, want %v", name, tg, testTarget)
		}
		if versions[name] != recVersionAbort {
			t.Errorf("gNB %s: record version %d with a target", name, versions[name])
		}
	}
	for name, v := range versions {
		if _, has := got[name]; !has && v != recVersion {
			t.Errorf("gNB %s without a target: record version %d, want %d", name, v, recVersion)
		}
	}
}

// A version 1 gNB record, as nodes before version 2 send it (bytes built
// here by hand, not by the encoder), still imports, exports back byte for
// byte and has no target.
func TestVersion1GNBRecordStillDecodes(t *testing.T) {
	req := []byte{0x00, 0x15, 0x00, 0x01, 0x02}
	resp := []byte{0x20, 0x15, 0x07}
	v1 := []byte{1, byte(len(req))}
	v1 = append(v1, req...)
	v1 = append(v1, 1, 4, 'a', 'm', 'f', '0', byte(len(resp)))
	v1 = append(v1, resp...)
	rec := Record{Key: gnbKey("00101-gnb-9"), Value: v1}
	m := mustNew(t, Config{AMFs: []AMF{{Name: "amf0"}}, Replicate: true})
	if err := m.Import([]Record{rec}); err != nil {
		t.Fatal(err)
	}
	out := m.Imported()
	if len(out) != 1 || !bytes.Equal(out[0].Value, v1) {
		t.Fatalf("re-export %v, want value %x", out, v1)
	}
	if _, ok, err := GNBAbortTarget(rec); ok || err != nil {
		t.Errorf("version 1 record: target ok=%v err=%v, want none", ok, err)
	}
	if _, ok, err := GNBAbortTarget(Record{Key: ueKey("g", 1), Value: v1}); ok || err != nil {
		t.Errorf("UE record: ok=%v err=%v, want not a gNB record", ok, err)
	}
}

// Version 2 records whose target is cut short, mixes families, lacks a
// tag or carries extra bytes are refused with an error naming the gNB.
func TestVersion2GNBRecordRefusesBadTargets(t *testing.T) {
	good := encodeGNBValue([]byte{1, 2, 3}, map[string][]byte{"amf0": {9}}, testTarget)
	if _, _, tg, err := decodeGNBValue(good); err != nil || tg != testTarget {
		t.Fatalf("good record: %v %v", tg, err)
	}
	v6 := testTarget
	v6.Dst = netip.MustParseAddrPort("[2001:db8::7]:40123")
	noTag := testTarget
	noTag.Tag = 0
	mixed := encodeGNBValue([]byte{1}, nil, testTarget)
	mixed = mixed[:len(mixed)-len(appendAddrPort(nil, testTarget.Dst))]
	mixed = appendAddrPort(mixed, v6.Dst)
	untagged := encodeGNBValue([]byte{1}, nil, testTarget)
	copy(untagged[len(untagged)-2*len(appendAddrPort(nil, testTarget.Dst))-4:], []byte{0, 0, 0, 0})
	for name, v := range map[string][]byte{
		"truncated": good[:len(good)-1],
		"trailing":  append(append([]byte(nil), good...), 0),
		"mixed":     mixed,
		"no tag":    untagged,
		"bad addr":  append(append([]byte{}, good[:len(good)-9]...), 3, 1, 2, 3, 0x9c, 0x4b),
	} {
		_, _, err := GNBAbortTarget(Record{Key: gnbKey("g7"), Value: v})
		if err == nil || !strings.Contains(err.Error(), `"g7"`) {
			t.Errorf("%s: %v, want an error naming the gNB", name, err)
		}
		m := mustNew(t, Config{AMFs: []AMF{{Name: "amf0"}}, Replicate: true})
		if err := m.Import([]Record{{Key: gnbKey("g7"), Value: v}}); err == nil || len(m.Imported()) != 0 {
			t.Errorf("%s: imported (%v)", name, err)
		}
	}
	if v := encodeGNBValue([]byte{1}, nil, noTag); v[0] != recVersion {
		t.Errorf("a target without a tag made a version %d record", v[0])
	}
}
