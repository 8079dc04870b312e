package n2

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/memory"
)

// holdAnswers wraps the gNB's side of the network: once armed, the
// Downlink NAS Transports it receives are held until the gNB has sent want
// Uplink NAS Transports, i.e. no UE gets its answer before every UE has
// sent its uplink.
type holdAnswers struct {
	transport.Transport
	armed   atomic.Bool
	want    int64
	sent    atomic.Int64
	release chan struct{}
	once    sync.Once
}

type holdConn struct {
	transport.Conn
	h *holdAnswers
}

func (h *holdAnswers) Dial(ctx context.Context, local []netip.Addr, remote transport.Endpoint) (transport.Conn, error) {
	c, err := h.Transport.Dial(ctx, local, remote)
	if err != nil {
		return nil, err
	}
	return holdConn{c, h}, nil
}

func procedure(b []byte) int64 {
	k, _, err := ngapl.Decode(b)
	if err != nil {
		return -1
	}
	return k.Procedure
}

func (c holdConn) Send(ctx context.Context, m transport.Message) error {
	if err := c.Conn.Send(ctx, m); err != nil {
		return err
	}
	if c.h.armed.Load() && procedure(m.Data) == ngapType.ProcedureCodeUplinkNASTransport && c.h.sent.Add(1) == c.h.want {
		c.h.once.Do(func() { close(c.h.release) })
	}
	return nil
}

func (c holdConn) Recv(ctx context.Context) (transport.Message, error) {
	m, err := c.Conn.Recv(ctx)
	if err == nil && c.h.armed.Load() && procedure(m.Data) == ngapType.ProcedureCodeDownlinkNASTransport {
		select {
		case <-c.h.release:
		case <-ctx.Done():
			return m, ctx.Err()
		}
	}
	return m, err
}

// Resume's UEs are independent, as real UEs are: every registered UE sends
// its uplink NAS without waiting for another UE's answer (a gNB simulator
// that paced them Parallel at a time would measure its own pacing as the
// failover's gap). Here no answer reaches the gNB before all 100 uplinks
// were sent; each UE's answer comes from its AMF under its AMF-UE-NGAP-ID,
// stamped no earlier than its uplink went out.
func TestResumeSendsEveryUEsUplinkWithoutWaiting(t *testing.T) {
	ngapl.SilenceLibraryLogs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const ues = 100
	n := memory.New(memory.Config{Queue: 4 * ues})
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	at := startMemAMFs(t, ctx, &wg, n, 1).eps[0].Address
	h := &holdAnswers{Transport: n, want: ues, release: make(chan struct{})}
	g, err := NewGNB(GNBConfig{Name: "gnb", Transport: h, Remote: at, GNBID: 1, UEs: ues, SetID: 0x3f8, Parallel: 8, Wait: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.Register(ctx)
	if err := g.PrepareResume(); err != nil {
		t.Fatal(err)
	}
	h.armed.Store(true)
	g.Resume(ctx)
	if got := h.sent.Load(); got != ues {
		t.Errorf("%d uplinks sent, want %d", got, ues)
	}
	for _, u := range g.Report().UEs {
		switch {
		case !u.Registered:
			t.Fatalf("ue %d not registered: %s", u.Index, u.Error)
		case u.Error != "" || u.UplinkAtNs == 0:
			t.Errorf("ue %d: uplink NAS not answered: %q", u.Index, u.Error)
		case u.UplinkAMFUEID != u.AMFUEID || u.UplinkPointer != int(u.RegPointer):
			t.Errorf("ue %d: answered under %#x by AMF %d, registered %#x by %d", u.Index, u.UplinkAMFUEID, u.UplinkPointer, u.AMFUEID, u.RegPointer)
		case u.UplinkSentNs == 0 || u.UplinkAtNs < u.UplinkSentNs:
			t.Errorf("ue %d: sent at %d, answered at %d", u.Index, u.UplinkSentNs, u.UplinkAtNs)
		}
	}
}
