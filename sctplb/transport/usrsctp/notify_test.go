package usrsctp

import (
	"encoding/binary"
	"net/netip"
	"reflect"
	"testing"
)

func notif(typ uint16, size int, fill func(b []byte)) []byte {
	b := make([]byte, size)
	ne := binary.NativeEndian
	ne.PutUint16(b[0:], typ)
	ne.PutUint32(b[4:], uint32(size))
	if fill != nil {
		fill(b)
	}
	return b
}

func TestParseNotificationDecodesEachType(t *testing.T) {
	ne := binary.NativeEndian
	peer := netip.MustParseAddrPort("[fd77:2::11]:38412")
	tests := []struct {
		name string
		in   []byte
		want Notification
	}{
		{"assoc comm up", notif(typeAssocChange, 20, func(b []byte) {
			ne.PutUint16(b[8:], uint16(CommUp))
			ne.PutUint16(b[12:], 10)
			ne.PutUint16(b[14:], 16)
			ne.PutUint32(b[16:], 7)
		}), &AssocChange{State: CommUp, OutboundStreams: 10, InStreams: 16, AssocID: 7}},
		{"peer addr unreachable v4", notif(typePeerAddrChange, 152, func(b []byte) {
			copy(b[8:], appendSockaddr(nil, netip.MustParseAddr("10.77.2.11"), 3868))
			ne.PutUint32(b[136:], uint32(AddrUnreachable))
			ne.PutUint32(b[144:], 3)
		}), &PeerAddrChange{Addr: netip.MustParseAddrPort("10.77.2.11:3868"), State: AddrUnreachable, AssocID: 3}},
		{"peer addr v6 confirmed", notif(typePeerAddrChange, 152, func(b []byte) {
			copy(b[8:], appendSockaddr(nil, peer.Addr(), peer.Port()))
			ne.PutUint32(b[136:], uint32(AddrConfirmed))
		}), &PeerAddrChange{Addr: peer, State: AddrConfirmed}},
		{"remote error", notif(typeRemoteError, 16, func(b []byte) {
			ne.PutUint16(b[8:], 12)
			ne.PutUint32(b[12:], 9)
		}), &RemoteError{Error: 12, AssocID: 9}},
		{"shutdown", notif(typeShutdownEvent, 12, func(b []byte) { ne.PutUint32(b[8:], 4) }), &ShutdownEvent{AssocID: 4}},
		{"send failed keeps ppid in host order", notif(typeSendFailed, 32, func(b []byte) {
			ne.PutUint32(b[8:], 1)
			ne.PutUint16(b[12:], 3)
			binary.BigEndian.PutUint32(b[16:], 60)
			ne.PutUint32(b[28:], 5)
		}), &SendFailed{Error: 1, Stream: 3, PPID: 60, AssocID: 5}},
		{"unknown type", notif(0x0a, 12, nil), &UnknownNotification{Type: 0x0a}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseNotification(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseNotificationRejectsTruncatedInput(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"short header", []byte{1, 0, 0}},
		{"length beyond buffer", notif(typeAssocChange, 20, nil)[:12]},
		{"assoc change too short", notif(typeAssocChange, 12, nil)},
		{"paddr too short", notif(typePeerAddrChange, 100, nil)},
		{"paddr bad family", notif(typePeerAddrChange, 152, nil)},
		{"shutdown too short", notif(typeShutdownEvent, 8, nil)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if n, err := parseNotification(tc.in); err == nil {
				t.Fatalf("accepted: %v", n)
			}
		})
	}
}

func TestSockaddrRoundTrip(t *testing.T) {
	for _, s := range []string{"10.77.1.2:0", "10.77.100.1:38412", "[fd77:1::2]:3868", "[::ffff:10.1.2.3]:9"} {
		ap := netip.MustParseAddrPort(s)
		got, err := parseSockaddr(appendSockaddr(nil, ap.Addr(), ap.Port()))
		if err != nil {
			t.Fatal(err)
		}
		want := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if got != want {
			t.Errorf("%s: got %s", s, got)
		}
	}
}

func FuzzParseNotification(f *testing.F) {
	f.Add(notif(typeAssocChange, 20, nil))
	f.Add(notif(typePeerAddrChange, 152, func(b []byte) { copy(b[8:], appendSockaddr(nil, netip.MustParseAddr("10.0.0.1"), 1)) }))
	f.Add(notif(typeSendFailed, 32, nil))
	f.Add([]byte{2, 0, 0, 0, 255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := parseNotification(b)
		if err == nil && n == nil {
			t.Fatal("nil notification without error")
		}
		if n != nil {
			_ = n.String()
		}
	})
}
