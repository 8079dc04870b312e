package app

import (
	"testing"

	"github.com/telcolb/telcolb/sctplb/steer"
)

// An N2 proxy's published records reach the peer's N2 replica (per
// service, deletions included) and never its datapath.
func TestN2RecordsGoToThePeersReplica(t *testing.T) {
	pair := newHAPair(t)
	dps := map[string]*memCT{"lb1": newMemCT(), "lb2": newMemCT()}
	has := map[string]*HA{"lb1": pair.start("lb1", dps["lb1"]), "lb2": pair.start("lb2", dps["lb2"])}
	held := func(svc, key string) (string, bool) {
		r := has["lb2"].N2Replica()
		r.mu.Lock()
		defer r.mu.Unlock()
		v, ok := r.held[svc][key]
		return string(v.value), ok
	}
	pub := has["lb1"].N2Replica().publisher("n2")
	pub([]steer.Record{{Key: []byte("gA"), Value: []byte("setup")}, {Key: []byte("uA1"), Value: []byte("ue1")}})
	has["lb1"].N2Replica().publisher("other")([]steer.Record{{Key: []byte("uA1"), Value: []byte("ue-other")}})
	waitFor(t, "both N2 services' records on lb2", func() bool {
		_, a := held("n2", "uA1")
		_, b := held("other", "uA1")
		return a && b
	})
	// GET /v1/ha counts them (what the two-daemon lab waits for).
	if n := has["lb2"].Status().N2Records; n != 3 {
		t.Errorf("lb2 /v1/ha n2Records = %d, want 3", n)
	}
	if v, _ := held("n2", "gA"); v != "setup" {
		t.Errorf("gNB record on lb2 = %q", v)
	}
	if v, _ := held("other", "uA1"); v != "ue-other" {
		t.Errorf("services mixed up: other's record = %q", v)
	}
	pub([]steer.Record{{Key: []byte("uA1"), Deleted: true}})
	waitFor(t, "deletion on lb2", func() bool { _, ok := held("n2", "uA1"); return !ok })
	if n := has["lb2"].Status().N2Records; n != 2 {
		t.Errorf("lb2 /v1/ha n2Records after a deletion = %d, want 2", n)
	}
	if n := dps["lb2"].importCount(); n != 0 {
		t.Errorf("lb2's datapath got %d records; N2 records are not conntrack", n)
	}
}
