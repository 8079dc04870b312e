package userspace

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/scenarios/capture"
	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/sctplb"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/usrsctp"
)

// The proxy runs in this process (namespace "lb", usrsctp stack), a gNB and
// two AMFs run in a helper process (this binary re-executed in namespace
// "ran" with its own stack): real SCTP over a veth pair, through the adapter
// on both sides.
const (
	helperEnv = "TLB_USERSPACE_N2_HELPER"
	ues       = 10
)

var (
	lbAddr  = netip.MustParseAddr("10.98.0.1")
	ranAddr = netip.MustParseAddr("10.98.0.2")
	plmn    = [3]byte{0x02, 0xf8, 0x39}
	loc     = ngapl.Location{PLMN: plmn, TAC: 1, CellID: 1}
	stackCf = usrsctp.Config{RTOMin: 100 * time.Millisecond, RTOInitial: 200 * time.Millisecond, RTOMax: 400 * time.Millisecond, InitMaxRetrans: 5, Streams: 16}
)

func TestProxyOverUserspaceSCTP(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("running as helper")
	}
	if os.Geteuid() != 0 {
		t.Skip("usrsctp raw mode needs root")
	}
	l := lab.NewEmpty(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	lbHost, err := l.AddHost(ctx, "lb")
	if err != nil {
		t.Fatal(err)
	}
	ranHost, err := l.AddHost(ctx, "ran")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Connect(ctx, lbHost, "eth0", ranHost, "eth0"); err != nil {
		t.Fatal(err)
	}
	for h, a := range map[*lab.Host]netip.Addr{lbHost: lbAddr, ranHost: ranAddr} {
		if err := h.AddAddr(ctx, "eth0", netip.PrefixFrom(a, 24)); err != nil {
			t.Fatal(err)
		}
		if err := h.DropProtoUnreachable(ctx); err != nil {
			t.Fatal(err)
		}
	}

	var stack *usrsctp.Stack
	if err := lbHost.Do(func() error {
		var err error
		stack, err = usrsctp.Init(stackCf)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer stack.Close()
	tr, err := New(Config{Stack: stack, Streams: stackCf.Streams})
	if err != nil {
		t.Fatal(err)
	}
	p, err := sctplb.New(sctplb.Config{
		Transport: tr,
		Listen:    transport.Endpoint{Addrs: []netip.Addr{lbAddr}, Port: 38412},
		AMFs: []sctplb.AMFEndpoint{
			{Name: "amf0", Address: transport.Endpoint{Addrs: []netip.Addr{ranAddr}, Port: 38413}},
			{Name: "amf1", Address: transport.Endpoint{Addrs: []netip.Addr{ranAddr}, Port: 38414}},
		},
		SetupWait: 300 * time.Millisecond,
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	defer func() {
		pcancel()
		if err := <-done; err != nil {
			t.Errorf("proxy: %v", err)
		}
	}()

	capt, err := capture.Start(ctx, lbHost, "eth0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper, err := ranHost.Start("env", helperEnv+"=1", exe, "-test.run=^TestHelperRAN$", "-test.v")
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Wait(ctx); err != nil {
		t.Fatalf("helper: %v\nstdout:\n%s\nstderr:\n%s", err, helper.Stdout(), helper.Stderr())
	}
	t.Logf("helper:\n%s", helper.Stdout())
	if err := capt.Stop(); err != nil {
		t.Fatal(err)
	}
	checkCapture(t, ctx, capt.File)
}

// checkCapture has tshark decode both legs (gNB-proxy and proxy-AMF share the
// link): every PDU is valid NGAP with PPID 60, each UE message crossed twice,
// and streams follow TS 38.412 (0 for non-UE, non-zero for UE signalling).
func checkCapture(t *testing.T, ctx context.Context, file string) {
	t.Helper()
	msgs, err := capture.NGAP(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	count := map[int]int{}
	for _, m := range msgs {
		count[m.ProcedureCode]++
		ueAssoc := m.ProcedureCode == 15 || m.ProcedureCode == 4 || m.ProcedureCode == 46
		if (ueAssoc && m.Stream == 0) || (m.ProcedureCode == 21 && m.Stream != 0) {
			t.Errorf("frame %d: procedure %d on stream %d", m.Frame, m.ProcedureCode, m.Stream)
		}
	}
	for proc, want := range map[int]int{15: 2 * ues, 4: 2 * ues, 46: 2 * ues} {
		if count[proc] != want {
			t.Errorf("capture holds %d PDUs of procedure %d, want %d (both legs)", count[proc], proc, want)
		}
	}
	// NG Setup: the gNB's request and the merged response, plus one request
	// and one response per AMF.
	if count[21] != 6 {
		t.Errorf("capture holds %d NG Setup PDUs, want 6", count[21])
	}
	for _, filter := range []string{"_ws.malformed", "sctp.data_payload_proto_id && sctp.data_payload_proto_id != 60"} {
		rows, err := capture.Fields(ctx, file, filter, "frame.number")
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 0 {
			t.Errorf("%d frames match %q", len(rows), filter)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

// TestHelperRAN is the gNB + AMFs process, not a test on its own.
func TestHelperRAN(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper process only")
	}
	stack, err := usrsctp.Init(stackCf)
	if err != nil {
		t.Fatal(err)
	}
	defer stack.Close()
	tr, err := New(Config{Stack: stack, Streams: stackCf.Streams})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var mu sync.Mutex
	got := map[uint32]int{} // RAN UE ID -> AMF that received its uplink NAS
	owned := [2]map[uint64]uint32{{}, {}}
	bad := 0
	for i := 0; i < 2; i++ {
		ln, err := tr.Listen(transport.Endpoint{Addrs: []netip.Addr{ranAddr}, Port: uint16(38413 + i)})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			next := uint64(1)
			for {
				m, err := c.Recv(ctx)
				if err != nil {
					return
				}
				k, _, err := ngapl.Decode(m.Data)
				var reply []byte
				mu.Lock()
				switch {
				case err != nil || m.PPID != ngapl.PPID:
					bad++
				case k.Procedure == ngapType.ProcedureCodeNGSetup:
					g := ngapl.GUAMI{PLMN: plmn, Region: 0xca, SetID: 1016, Pointer: uint8(i + 1)}
					reply, err = ngapl.NGSetupResponse(ngapl.SetupResponse{AMFName: fmt.Sprintf("amf%d", i), Served: []ngapType.ServedGUAMIItem{ngapl.ServedGUAMI(g)}, Capacity: 10,
						PLMNSupport: []ngapType.PLMNSupportItem{ngapl.PLMNSupport(plmn, ngapl.SNSSAI{SST: 1})}})
				case k.Procedure == ngapType.ProcedureCodeInitialUEMessage:
					owned[i][next] = k.RANUEID
					reply, err = ngapl.DownlinkNASTransport(next, k.RANUEID, nil)
					next++
				case k.Procedure == ngapType.ProcedureCodeUplinkNASTransport:
					if owned[i][k.AMFUEID] == k.RANUEID {
						got[k.RANUEID] = i
					} else {
						bad++
					}
				}
				mu.Unlock()
				if err != nil {
					t.Errorf("AMF %d: %v", i, err)
					return
				}
				if reply != nil {
					if err := c.Send(ctx, transport.Message{Stream: m.Stream, PPID: ngapl.PPID, Data: reply}); err != nil {
						return
					}
				}
			}
		}()
	}

	var gnb transport.Conn
	for try := 0; ; try++ {
		gnb, err = tr.Dial(ctx, nil, transport.Endpoint{Addrs: []netip.Addr{lbAddr}, Port: 38412})
		if err == nil {
			break
		}
		if try == 20 {
			t.Fatalf("dial proxy: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer gnb.Close()
	send := func(stream uint16) func([]byte, error) {
		return func(b []byte, err error) {
			if err != nil {
				t.Fatal(err)
			}
			if err := gnb.Send(ctx, transport.Message{Stream: stream, PPID: ngapl.PPID, Data: b}); err != nil {
				t.Fatal(err)
			}
		}
	}
	expect := func(proc int64, typ ngapl.MessageType) ngapl.Key {
		for {
			m, err := gnb.Recv(ctx)
			if err != nil {
				t.Fatalf("gNB waiting for %s: %v", ngapl.ProcedureName(proc), err)
			}
			k, _, err := ngapl.Decode(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			if m.PPID != ngapl.PPID {
				t.Fatalf("PPID %d from proxy", m.PPID)
			}
			if k.Procedure == proc && k.Type == typ {
				return k
			}
		}
	}
	send(0)(ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: plmn, GNBID: 1, GNBIDBits: 22, TACs: []uint32{1}, Slices: []ngapl.SNSSAI{{SST: 1}}}))
	expect(ngapType.ProcedureCodeNGSetup, ngapl.Successful)
	for ran := uint32(1); ran <= ues; ran++ {
		send(1)(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: ran, Location: loc}))
		k := expect(ngapType.ProcedureCodeDownlinkNASTransport, ngapl.Initiating)
		send(1)(ngapl.UplinkNASTransport(k.AMFUEID, ran, nil, loc))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n, b := len(got), bad
		per := [2]int{}
		for _, a := range got {
			per[a]++
		}
		mu.Unlock()
		if b != 0 {
			t.Fatalf("%d misrouted or bad messages at the AMFs", b)
		}
		if n == ues {
			if per[0] == 0 || per[1] == 0 {
				t.Fatalf("UEs per AMF %v: not spread", per)
			}
			fmt.Printf("RESULT ok ues=%d amf0=%d amf1=%d\n", n, per[0], per[1])
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d UEs reached their AMF", n, ues)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
