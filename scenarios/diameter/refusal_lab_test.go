package diameter

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/avp"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
	"github.com/fiorix/go-diameter/v4/diam/dict"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/l7parse/diameter"
	"github.com/telcolb/telcolb/scenarios/l4"
	"github.com/telcolb/telcolb/scenarios/lab"
)

// rawPeer is a client connection whose messages the test builds with
// go-diameter (a stack we did not write) and then mutates; answers are
// read with go-diameter too.
type rawPeer struct {
	t   *testing.T
	c   net.Conn
	hbh uint32
}

func (p *rawPeer) ccr(sid string, typ uint32, edit func(*diam.Message)) ([]byte, uint32) {
	p.hbh++
	m := diam.NewRequest(diam.CreditControl, AppCC, dict.Default)
	m.Header.CommandFlags |= diam.ProxiableFlag
	m.Header.HopByHopID, m.Header.EndToEndID = p.hbh, p.hbh
	m.NewAVP(avp.SessionID, avp.Mbit, 0, datatype.UTF8String(sid))
	m.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("pcef.raw.example"))
	m.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("raw.example"))
	m.NewAVP(avp.DestinationRealm, avp.Mbit, 0, datatype.DiameterIdentity("lab.example"))
	m.NewAVP(avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(AppCC))
	m.NewAVP(avp.CCRequestType, avp.Mbit, 0, datatype.Enumerated(typ))
	if edit != nil {
		edit(m)
	}
	// Last, 12 bytes: the AVP the overrun case lengthens.
	m.NewAVP(avp.CCRequestNumber, avp.Mbit, 0, datatype.Unsigned32(0))
	b, err := m.Serialize()
	if err != nil {
		p.t.Fatal(err)
	}
	return b, p.hbh
}

// send writes b and reads the next message that is not a watchdog; it
// returns the answer, or nil once the agent closed the connection. The
// answer is read with l7parse/diameter: go-diameter cannot decode a 5014
// answer, whose Failed-AVP carries the offending AVP header with its
// invalid length as RFC 6733 §7.1.5 asks.
func (p *rawPeer) send(b []byte) *diameter.Msg {
	p.t.Helper()
	if _, err := p.c.Write(b); err != nil {
		p.t.Fatal(err)
	}
	for {
		_ = p.c.SetReadDeadline(time.Now().Add(20 * time.Second))
		var h [4]byte
		if _, err := io.ReadFull(p.c, h[:]); err != nil {
			return nil
		}
		n, err := diameter.FrameLen(h[:])
		if err != nil {
			p.t.Fatalf("the agent sent an unframeable message: %v", err)
		}
		buf := make([]byte, n)
		copy(buf, h[:])
		if _, err := io.ReadFull(p.c, buf[4:]); err != nil {
			return nil
		}
		m, err := diameter.Parse(buf)
		if err != nil {
			p.t.Fatalf("the agent sent a malformed message: %v", err)
		}
		if m.Code == diameter.CmdDeviceWatchdog && m.IsRequest() {
			_, _ = p.c.Write(diameter.Answer(m.Header, nil, diameter.Identity{Host: "pcef.raw.example", Realm: "raw.example"}, diameter.Success))
			continue
		}
		return &m
	}
}

func result(m *diameter.Msg) (uint32, string) { return m.ResultCode, string(m.OriginHost) }

// TestDiameterRefusalsThroughTheDaemon sends the real daemon's agent
// requests built by go-diameter, some of them mutated, from a client
// namespace, with two go-diameter servers behind it: a loop (Route-Record
// holding the agent's identity) is answered 3005 and reaches no server;
// a 3004 from a busy server moves the request to the other server; an AVP
// running past the end of the message gets 5014, a request with the E bit
// 3008, and a message whose length is not a multiple of 4 gets 5015 and
// the connection closed. None of the refusals reaches a server or changes
// a binding: the session's next request, on a new connection, goes to the
// server it was bound to, and the status still counts one binding.
func TestDiameterRefusalsThroughTheDaemon(t *testing.T) {
	needRoot(t, "nsenter")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	bin, err := l4.Build(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	l := lab.NewEmpty(t)
	lb, err := l.AddHost(ctx, "lb")
	if err != nil {
		t.Fatal(err)
	}
	cliHost, err := l.AddHost(ctx, "cli")
	if err != nil {
		t.Fatal(err)
	}
	link(t, ctx, l, lb, cliHost, "dcli", 1)
	if err := lb.AddAddr(ctx, "dcli", netip.PrefixFrom(labVIP, 32)); err != nil {
		t.Fatal(err)
	}
	svc := api.Service{Name: "diar", VIP: labVIP.String(), Port: 3868, Protocol: api.ProtocolTCP,
		Diameter: &api.DiameterSpec{OriginHost: "dra.lab.example", OriginRealm: "lab.example"}}
	servers := map[string]*Server{}
	for k := 1; k <= 2; k++ {
		h, err := l.AddHost(ctx, fmt.Sprintf("srv%d", k))
		if err != nil {
			t.Fatal(err)
		}
		a := link(t, ctx, l, lb, h, fmt.Sprintf("dsrv%d", k), 10+k)
		host := fmt.Sprintf("ocs%d.lab.example", k)
		// The server runs here, its listening socket in its namespace.
		if err := h.Do(func() error {
			s, err := StartServer(netip.AddrPortFrom(a, 3868).String(), host, "lab.example")
			servers[host] = s
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(servers[host].Kill)
		svc.Endpoints = append(svc.Endpoints, api.Endpoint{Address: a.String(), Port: 3868})
	}
	d, err := l4.StartDaemon(ctx, l4.DaemonConfig{Bin: bin, Host: lb, Interfaces: []string{"dcli"}, StateDir: t.TempDir(),
		PinPath: filepath.Join("/sys/fs/bpf", "telcolb-diar-"+l.ID)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Destroy(context.Background()); err != nil {
			t.Errorf("daemon destroy: %v", err)
		}
	})
	defer func() {
		if t.Failed() {
			t.Logf("daemon log (tail):\n%s", tail(d.Log(), 60))
		}
	}()
	if err := d.Client.ApplyService(ctx, svc); err != nil {
		t.Fatalf("create the Diameter service: %v", err)
	}
	waitFor(t, "both servers OKAY", 30*time.Second, func() bool {
		st, err := d.Client.GetService(ctx, "diar")
		return err == nil && st.Endpoints[0].Healthy && st.Endpoints[1].Healthy
	})
	connect := func() *rawPeer {
		var c net.Conn
		if err := cliHost.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", netip.AddrPortFrom(labVIP, 3868).String(), 10*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		p := &rawPeer{t: t, c: c, hbh: 1000}
		cer := diam.NewRequest(diam.CapabilitiesExchange, 0, dict.Default)
		cer.Header.HopByHopID, cer.Header.EndToEndID = 1, 1
		cer.NewAVP(avp.OriginHost, avp.Mbit, 0, datatype.DiameterIdentity("pcef.raw.example"))
		cer.NewAVP(avp.OriginRealm, avp.Mbit, 0, datatype.DiameterIdentity("raw.example"))
		cer.NewAVP(avp.HostIPAddress, avp.Mbit, 0, datatype.Address(net.IPv4(10, 80, 1, 2).To4()))
		cer.NewAVP(avp.VendorID, avp.Mbit, 0, datatype.Unsigned32(0))
		cer.NewAVP(avp.ProductName, 0, 0, datatype.UTF8String("raw"))
		cer.NewAVP(avp.AuthApplicationID, avp.Mbit, 0, datatype.Unsigned32(AppCC))
		b, _ := cer.Serialize()
		if a := p.send(b); a == nil {
			t.Fatal("no CEA")
		} else if code, _ := result(a); code != diameter.Success {
			t.Fatalf("CEA %d", code)
		}
		return p
	}
	requests := func() map[string]int {
		out := map[string]int{}
		for h, s := range servers {
			out[h], _ = s.Counts()
		}
		return out
	}
	p := connect()
	const sid = "pcef.raw.example;refusals;1"
	b, _ := p.ccr(sid, diameter.CCInitial, nil)
	code, bound := result(p.send(b))
	if code != diameter.Success {
		t.Fatalf("CCR-I answered %d", code)
	}
	other := "ocs1.lab.example"
	if bound == other {
		other = "ocs2.lab.example"
	}
	before := requests()
	expect := func(what string, b []byte, want uint32) {
		t.Helper()
		a := p.send(b)
		if a == nil {
			t.Fatalf("%s: connection closed, want answer %d", what, want)
		}
		code, origin := result(a)
		if code != want || origin != "dra.lab.example" {
			t.Errorf("%s: answer %d from %q, want %d from the agent", what, code, origin, want)
		}
		if want < 4000 && a.Flags&diameter.FlagError == 0 {
			t.Errorf("%s: protocol error %d without the E bit", what, code)
		}
		if got := requests(); fmt.Sprint(got) != fmt.Sprint(before) {
			t.Errorf("%s reached a server: requests %v, before %v", what, got, before)
		}
	}
	// A loop: our identity already in the Route-Record.
	b, _ = p.ccr(sid, diameter.CCUpdate, func(m *diam.Message) {
		m.NewAVP(avp.RouteRecord, avp.Mbit, 0, datatype.DiameterIdentity("dra.lab.example"))
	})
	expect("loop", b, diameter.LoopDetected)
	// An AVP running past the end of the message.
	b, _ = p.ccr(sid, diameter.CCUpdate, nil)
	b[len(b)-12+7] = 200
	expect("AVP overrunning the message", b, diameter.InvalidAVPLength)
	// The E bit in a request.
	b, _ = p.ccr(sid, diameter.CCUpdate, nil)
	b[4] |= diam.ErrorFlag
	expect("E bit in a request", b, diameter.InvalidHdrBits)
	// Busy: the bound server answers 3004; the agent moves the request.
	servers[bound].Busy.Store(true)
	b, _ = p.ccr(sid, diameter.CCUpdate, nil)
	a := p.send(b)
	servers[bound].Busy.Store(false)
	if a == nil {
		t.Fatal("busy: connection closed")
	}
	if code, origin := result(a); code != diameter.Success || origin != other {
		t.Errorf("busy server: answer %d from %q, want 2001 from %s", code, origin, other)
	}
	after := requests()
	if after[bound] != before[bound]+1 || after[other] != before[other]+1 {
		t.Errorf("busy: requests %v, before %v (want one to each)", after, before)
	}
	before, bound = after, other
	// A length that is not a multiple of 4: the stream cannot be framed,
	// so the agent answers 5015 and closes.
	b, _ = p.ccr(sid, diameter.CCUpdate, nil)
	b[3] ^= 2
	if a := p.send(b); a == nil {
		t.Error("bad message length: closed without an answer")
	} else if code, _ := result(a); code != diameter.InvalidMessageLength {
		t.Errorf("bad message length: answer %d, want 5015", code)
	}
	var buf [1]byte
	_ = p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.c.Read(buf[:]); err == nil {
		t.Error("connection still open after an unframeable message")
	}
	if got := requests(); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("bad message length reached a server: %v, before %v", got, before)
	}
	// State unchanged: one binding, the session's next request (a new
	// connection) on the server it is bound to.
	// The status is a snapshot the agent refreshes every tick (100 ms).
	waitFor(t, "the status to count the one binding", 10*time.Second, func() bool {
		st, err := d.Client.GetService(ctx, "diar")
		return err == nil && st.ActiveConnections == 1
	})
	p = connect()
	b, _ = p.ccr(sid, diameter.CCTermination, nil)
	if code, origin := result(p.send(b)); code != diameter.Success || origin != bound {
		t.Errorf("session after the refusals: %d from %q, want 2001 from %s", code, origin, bound)
	}
	m := scrapeMetrics(t, d)
	for _, want := range []string{`reason="loop"`, `reason="malformed-`, `reason="busy-retried"`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks telcolb_diameter_rejected_total{%s}", want)
		}
	}
}

// scrapeMetrics reads the daemon's /metrics (with its token).
func scrapeMetrics(t *testing.T, d *l4.Daemon) string {
	t.Helper()
	body, err := d.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return body
}
