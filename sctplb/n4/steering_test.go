package n4_test

import (
	"testing"
	"time"

	"github.com/wmnsk/go-pfcp/ie"

	"github.com/telcolb/telcolb/l7parse/pfcp"
	"github.com/telcolb/telcolb/sctplb/n4"
)

// TestSteeringRulesConfineSessionsToTheirUPFs: the operator maps the IMS
// DNN to upf2 and slice SST 2 to upf1 and upf3; other sessions go
// anywhere. A session of a rule whose UPFs are all down is refused with No
// resources rather than placed elsewhere, and a lost UPF's sessions move
// only within their rule.
func TestSteeringRulesConfineSessionsToTheirUPFs(t *testing.T) {
	w := newWorld(t, 4, func(c *n4.Config) {
		c.OnLoss = n4.Move
		c.Steering = []n4.SteeringRule{
			{DNN: "IMS", UPFs: []string{"upf2"}},
			{SNSSAI: "2", UPFs: []string{"upf1", "upf3"}},
		}
	})
	w.associate()
	est := func(cp uint64, extra ...*ie.IE) { t.Helper(); w.smfSends(w.smf.EstablishWith(cp, extra...)) }
	for cp := uint64(1); cp <= 4; cp++ {
		est(cp, ie.NewAPNDNN("ims.mnc001.mcc001.gprs"))
	}
	for cp := uint64(5); cp <= 12; cp++ {
		est(cp, ie.NewSNSSAI(2, 0x000001), ie.NewAPNDNN("internet"))
	}
	for cp := uint64(13); cp <= 20; cp++ {
		est(cp, ie.NewSNSSAI(1, 0x000001))
	}
	if st := w.smf.Snapshot(); st.Established != 20 {
		t.Fatalf("SMF: %+v", st)
	}
	held := func(i int) int { return len(w.upfs[i].Sessions()) }
	for i, u := range w.upfs {
		for _, x := range u.Sessions() {
			if x.SST == 2 && i != 1 && i != 3 {
				t.Errorf("upf%d holds a session of slice SST 2", i)
			}
			if x.DNN == "ims.mnc001.mcc001.gprs" && i != 2 {
				t.Errorf("upf%d holds an IMS session", i)
			}
		}
	}
	if held(0)+held(1)+held(2)+held(3) != 20 || held(0) == 0 {
		t.Fatalf("UPFs hold %d %d %d %d", held(0), held(1), held(2), held(3))
	}
	imsOn2 := held(2)
	// upf2, the only IMS UPF, goes down and is lost: a new IMS session is
	// refused, a session of no rule still finds a UPF, and upf2's IMS
	// sessions have nowhere to move (released) while its others move.
	w.down[2] = true
	w.advance(40 * time.Second)
	est(21, ie.NewAPNDNN("ims"))
	est(22)
	st := w.smf.Snapshot()
	if st.Causes[pfcp.CauseNoResources] != 1 || st.Established != 21 {
		t.Fatalf("with the IMS UPF lost: %+v", st)
	}
	if s := w.m.Sessions(); s[2] != 0 || s[0]+s[1]+s[3] != 21-4 {
		t.Fatalf("after loss: %v (upf2 held %d, 4 of them IMS)", s, imsOn2)
	}
	if held(0)+held(1)+held(3) != 21-4 {
		t.Fatalf("remaining UPFs hold %d %d %d", held(0), held(1), held(3))
	}
}

func TestSteeringRulesAreChecked(t *testing.T) {
	for name, r := range map[string]n4.SteeringRule{
		"matches nothing": {UPFs: []string{"upf0"}},
		"unknown UPF":     {DNN: "x", UPFs: []string{"nope"}},
		"no UPF":          {DNN: "x"},
		"bad S-NSSAI":     {SNSSAI: "1-12", UPFs: []string{"upf0"}},
		"SST too big":     {SNSSAI: "256", UPFs: []string{"upf0"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := n4.New(n4.Config{UPFs: []n4.UPF{{Name: "upf0", Addr: upfAddr(0)}}, SMFSide: vip, UPFSide: upfSide,
				Recovery: t0, Steering: []n4.SteeringRule{r}})
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
