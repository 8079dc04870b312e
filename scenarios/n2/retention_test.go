package n2

import (
	"context"
	"testing"
	"time"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb/transport/memory"
)

// The simulators speak UE Retention Information: a gNB asking for it gets
// "ues-retained" from the AMF simulator, one not asking does not.
func TestSimulatorsUERetention(t *testing.T) {
	ngapl.SilenceLibraryLogs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := memory.New(memory.Config{Queue: 64})
	at := mep("10.1.0.1", 38412)
	a, err := NewAMF(AMFConfig{Name: "amf1", Transport: n, Listen: at, Region: 0xca, SetID: 0x3f8, Pointer: 1})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := a.Listen()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	for i, retain := range []bool{false, true} {
		g, err := NewGNB(GNBConfig{Name: "gnb", Transport: n, Remote: at, GNBID: uint32(i + 1), UEs: 1, RetainUEs: retain, Wait: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if g.Retained() != retain {
			t.Errorf("gNB asking for retention %v: response retained = %v", retain, g.Retained())
		}
		_ = g.Close()
	}
}
