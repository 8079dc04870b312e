package n2

import (
	"context"
	"sync"
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
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	at := startMemAMFs(t, ctx, &wg, n, 1).eps[0].Address
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
