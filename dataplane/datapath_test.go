package dataplane

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

func (e *env) ifindex(name string) int {
	e.t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		e.t.Fatal(err)
	}
	return l.Attrs().Index
}

func diffHex(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s mismatch\n got: %s\nwant: %s", what, hex.EncodeToString(got), hex.EncodeToString(want))
	}
}

var modeNames = map[Mode]string{ModeDefault: "default", ModeOneArm: "onearm", ModeFullNAT: "fullnat", ModeDSR: "dsr"}
var protoNames = map[Proto]string{ProtoTCP: "tcp", ProtoUDP: "udp", ProtoSCTP: "sctp"}

// Every mode x protocol x family: first packet (conntrack miss) is DNATed
// (and SNATed) toward the endpoint, the endpoint's reply is translated back
// to VIP->client, and a second client packet hits conntrack. Expected frames
// are built from scratch, so every checksum and the SCTP CRC32c are checked
// against independent full computations.
func TestForwardAndReplyAreTranslatedByteExact(t *testing.T) {
	e := newEnv(t)
	lb1 := e.ifindex("lb1")
	id := uint32(1)
	for _, mode := range []Mode{ModeDefault, ModeOneArm, ModeFullNAT, ModeDSR} {
		for _, proto := range []Proto{ProtoTCP, ProtoUDP, ProtoSCTP} {
			for _, v6 := range []bool{false, true} {
				fam := "v4"
				if v6 {
					fam = "v6"
				}
				t.Run(fmt.Sprintf("%s/%s/%s", modeNames[mode], protoNames[proto], fam), func(t *testing.T) {
					e := e.sub(t)
					id++
					vip, client := vipV4, clientV4
					if v6 {
						vip, client = vipV6, clientV6
					}
					vport := uint16(80 + id)
					epPort := uint16(8080)
					if mode == ModeDSR {
						epPort = 0
					}
					e.upsert(Service{ID: id, VIP: vip, PortStart: vport, Proto: proto, Mode: mode,
						Endpoints: testEndpoints(v6, 1, epPort)})
					ep := epAddr(v6, 0)
					if mode == ModeDSR {
						epPort = vport
					}
					cport := uint16(40000 + id)
					first := pkt{srcMAC: clientMAC, dstMAC: lbMAC0, src: client, dst: vip, proto: uint8(proto),
						sport: cport, dport: vport, ttl: 64}
					reply := pkt{srcMAC: epMAC(0), dstMAC: lbMAC1, src: ep, proto: uint8(proto), sport: epPort, ttl: 64}
					first, reply, second := openingPackets(proto, first, reply)

					ret, out := e.run(first.frame())
					if ret != actRedirect {
						t.Fatalf("first packet: verdict %d, want redirect; out %x conns %+v", ret, out, e.conns())
					}
					conn := e.conn(id)
					src, sport := client, cport
					switch mode {
					case ModeOneArm:
						src, sport = lbAddr1V4, conn.Source.Port()
						if v6 {
							src = lbAddr1V6
						}
					case ModeFullNAT:
						src, sport = vip, conn.Source.Port()
					}
					if conn.Source.Addr() != src || sport < 1024 {
						t.Fatalf("conntrack source %s, want %s with a port >= 1024", conn.Source, src)
					}
					if conn.Backend != netip.AddrPortFrom(ep, epPort) {
						t.Fatalf("conntrack backend %s, want %s", conn.Backend, netip.AddrPortFrom(ep, epPort))
					}
					fwd := func(p pkt) []byte {
						p.srcMAC, p.dstMAC, p.ttl = lbMAC1, epMAC(0), 63
						if mode != ModeDSR {
							p.src, p.sport, p.dst, p.dport = src, sport, ep, epPort
						}
						return p.frame()
					}
					diffHex(t, "forwarded first packet", out, fwd(first))

					if mode != ModeDSR {
						reply.dst, reply.dport = src, sport
						ret, out = e.runOn(e.d.objs.TcIngress, lb1, reply.frame())
						if ret != actRedirect {
							t.Fatalf("reply: verdict %d, want redirect", ret)
						}
						want := reply
						want.srcMAC, want.dstMAC, want.ttl = lbMAC0, clientMAC, 63
						want.src, want.sport, want.dst, want.dport = vip, vport, client, cport
						diffHex(t, "translated reply", out, want.frame())
					}

					ret, out = e.run(second.frame())
					if ret != actRedirect {
						t.Fatalf("second packet: verdict %d, want redirect", ret)
					}
					diffHex(t, "forwarded second packet", out, fwd(second))

					for _, c := range e.conns() {
						if c.ServiceID != id {
							continue
						}
						if c.OrigPackets != 2 {
							t.Errorf("orig packets %d, want 2", c.OrigPackets)
						}
						wantReply := uint64(1)
						if mode == ModeDSR {
							wantReply = 0
						}
						if c.ReplyPackets != wantReply {
							t.Errorf("reply packets %d, want %d", c.ReplyPackets, wantReply)
						}
						wantState := map[Proto]string{ProtoTCP: "ESTABLISHED", ProtoUDP: "ESTABLISHED", ProtoSCTP: "COOKIE_WAIT"}[proto]
						if mode == ModeDSR {
							wantState = map[Proto]string{ProtoTCP: "SYN_SENT", ProtoUDP: "NEW", ProtoSCTP: "INIT"}[proto]
						}
						if c.State != wantState {
							t.Errorf("state %s, want %s", c.State, wantState)
						}
						if proto == ProtoSCTP {
							if c.VTagClient != 0x11111111 {
								t.Errorf("client vtag %#x", c.VTagClient)
							}
							if mode != ModeDSR && c.VTagEndpoint != 0x22222222 {
								t.Errorf("endpoint vtag %#x", c.VTagEndpoint)
							}
						}
					}
				})
			}
		}
	}
}
