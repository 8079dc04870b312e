package sctplb

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/telcolb/telcolb/l7parse/diameter"
	"github.com/telcolb/telcolb/sctplb/transport"
	"github.com/telcolb/telcolb/sctplb/transport/memory"
)

// sctpDiamServer answers CER, DWR and requests on an SCTP listener, one
// Diameter message per user message, and checks the PPID (46).
func sctpDiamServer(ctx context.Context, t *testing.T, ln transport.Listener, host string) {
	id := diameter.Identity{Host: host, Realm: "sctp.example"}
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		go func() {
			for {
				m, err := c.Recv(ctx)
				if err != nil {
					return
				}
				if m.PPID != diameter.PPID {
					t.Errorf("server got PPID %d, want 46", m.PPID)
				}
				msg, err := diameter.Parse(m.Data)
				if err != nil || !msg.IsRequest() {
					continue
				}
				ans := diameter.Answer(msg.Header, msg.SessionID, id, diameter.Success)
				if msg.Code == diameter.CmdCapabilitiesExchange {
					ans = diameter.CEA(msg.Header, diameter.Capabilities{Identity: id, AuthApps: []uint32{diameter.AppCC}}, diameter.Success)
				}
				_ = c.Send(ctx, transport.Message{PPID: diameter.PPID, Data: ans})
			}
		}()
	}
}

// TestDiameterAgentOverSCTPTransport runs the shell over an SCTP
// transport (the in-memory one the N2 proxy's tests use; the kernel and
// usrsctp transports implement the same interface): capabilities exchange
// with two servers and a client, sessions bound and relayed, PPID 46 both
// ways.
func TestDiameterAgentOverSCTPTransport(t *testing.T) {
	n := memory.New(memory.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := DiameterConfig{Listen: netip.MustParseAddrPort("10.0.0.1:3868"), SCTP: n,
		Identity: diameter.Identity{Host: "dra.sctp.example", Realm: "sctp.example"}, TickInterval: 20 * time.Millisecond}
	for i := range 2 {
		addr := netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("10.0.1.%d", i+1)), 3868)
		ln, err := n.Listen(transport.Endpoint{Addrs: []netip.Addr{addr.Addr()}, Port: addr.Port()})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go sctpDiamServer(ctx, t, ln, fmt.Sprintf("ocs%d.sctp.example", i))
		cfg.Servers = append(cfg.Servers, DiameterServer{Name: addr.String(), Addr: addr})
	}
	a, err := NewDiameter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Open(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, 10*time.Second, func() bool {
		s := a.Stats()
		return len(s.Servers) == 2 && s.Servers[0].Up && s.Servers[1].Up
	})
	c, err := n.Dial(ctx, nil, transport.Endpoint{Addrs: []netip.Addr{cfg.Listen.Addr()}, Port: cfg.Listen.Port()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := diameter.Identity{Host: "pgw.sctp.example", Realm: "client.example"}
	recv := func() diameter.Msg {
		t.Helper()
		m, err := c.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.PPID != diameter.PPID {
			t.Fatalf("client got PPID %d", m.PPID)
		}
		msg, err := diameter.Parse(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	if err := c.Send(ctx, transport.Message{PPID: diameter.PPID, Data: diameter.CER(diameter.Capabilities{Identity: id, AuthApps: []uint32{diameter.AppCC}}, 1, 1)}); err != nil {
		t.Fatal(err)
	}
	if cea := recv(); cea.ResultCode != diameter.Success {
		t.Fatalf("CEA %d", cea.ResultCode)
	}
	origin := map[string]string{}
	for i := range 20 {
		sid := fmt.Sprintf("pgw;%d", i%10)
		req := diameter.Message(diameter.FlagRequest|diameter.FlagProxiable, diameter.CmdCreditControl, diameter.AppCC, uint32(100+i), uint32(100+i),
			diameter.Str(diameter.AVPSessionID, sid), diameter.Str(diameter.AVPOriginHost, id.Host), diameter.Str(diameter.AVPOriginRealm, id.Realm),
			diameter.Str(diameter.AVPDestinationRealm, "sctp.example"), diameter.U32(diameter.AVPAuthAppID, diameter.AppCC))
		if err := c.Send(ctx, transport.Message{PPID: diameter.PPID, Data: req}); err != nil {
			t.Fatal(err)
		}
		a := recv()
		if a.ResultCode != diameter.Success || a.HopByHop != uint32(100+i) || string(a.SessionID) != sid {
			t.Fatalf("answer %+v", a)
		}
		if o, ok := origin[sid]; ok && o != string(a.OriginHost) {
			t.Fatalf("session %s answered by %s, then %s", sid, o, a.OriginHost)
		}
		origin[sid] = string(a.OriginHost)
	}
	per := map[string]int{}
	for _, o := range origin {
		per[o]++
	}
	if per["ocs0.sctp.example"] != 5 || per["ocs1.sctp.example"] != 5 {
		t.Fatalf("sessions per server %v, want 5 and 5", per)
	}
}

// TestDiameterAgentAnswersAnUnframeableStreamThenCloses: a TCP client
// whose header says version 2 gets a 5011 answer (its header was readable)
// and the connection is closed; the agent keeps serving.
func TestDiameterAgentAnswersAnUnframeableStreamThenCloses(t *testing.T) {
	cfg := DiameterConfig{Listen: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freePort(t)),
		Identity: diameter.Identity{Host: "dra.example", Realm: "example"}}
	startDiameterAgent(t, cfg)
	conn, err := net.Dial("tcp", cfg.Listen.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cer := diameter.CER(diameter.Capabilities{Identity: diameter.Identity{Host: "c.example", Realm: "example"}, AuthApps: []uint32{4}}, 7, 8)
	cer[0] = 2
	if _, err := conn.Write(cer); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read: %v (want the answer, then EOF)", err)
	}
	m, err := diameter.Parse(b)
	if err != nil || m.ResultCode != diameter.UnsupportedVersion || m.HopByHop != 7 {
		t.Fatalf("got %x (%v), want a 5011 answer to hop-by-hop 7", b, err)
	}
}
