package sync

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"
)

// FuzzParse: any input parses or is refused with ErrMalformed, never a
// crash; what parses encodes back to the same bytes.
func FuzzParse(f *testing.F) {
	f.Add(AppendHello(nil, Hello{Name: "node-a", Incarnation: 9, PeerInc: 3, Stream: 2, Expected: 17}))
	f.Add(AppendHello(nil, Hello{Name: "node-b", Incarnation: 9, Heard: true, Keepalive: true}))
	f.Add(AppendHello(nil, Hello{Name: "node-c", Incarnation: 9, Keepalive: true, Held: true}))
	f.Add(AppendAck(nil, Ack{Incarnation: 1, Stream: 1, Seq: 5, Nack: true}))
	f.Add(AppendData(nil, Data{Incarnation: 1, Stream: 1, Seq: 1, Begin: true, End: true}))
	f.Add(AppendData(nil, Data{Incarnation: 1, Stream: 2, Seq: 7, Records: []Record{
		{Kind: 1, Key: []byte{10, 0, 0, 1, 0, 80}, Value: []byte("conntrack")},
		{Kind: 2, Key: []byte("assoc"), Deleted: true},
		{Kind: 1, Key: []byte{10, 0, 0, 2, 0, 80}, Value: []byte("held"), Held: 93 * time.Second},
	}}))
	f.Add([]byte{1, 2, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := Parse(b)
		if err != nil {
			if !errorsIs(err) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var back []byte
		switch {
		case msg.Hello != nil:
			back = AppendHello(nil, *msg.Hello)
		case msg.Ack != nil:
			back = AppendAck(nil, *msg.Ack)
		case msg.Data != nil:
			back = AppendData(nil, *msg.Data)
		default:
			t.Fatal("parsed into nothing")
		}
		// The reserved byte is not read, except a hello's feature bits.
		canonical := b[3] == 0 || msg.Hello != nil && b[3]&^(FeatureKeepalive|FeatureHeld) == 0
		if canonical && !bytes.Equal(back, b) {
			t.Fatalf("%x parsed and encoded back as %x", b, back)
		}
	})
}

// FuzzMachine drives three nodes with operations chosen by the input:
// puts, deletes, flushes, in-order / reordered / duplicated / dropped
// deliveries, connection cuts, node restarts mid-stream and garbage, with
// every invariant checked after every step; then heals everything and
// checks every node holds every other node's table exactly.
func FuzzMachine(f *testing.F) {
	for _, s := range []uint64{1, 2, 3, 42} {
		f.Add(s, uint16(500), uint8(8))
	}
	f.Add(uint64(7), uint16(3000), uint8(60))
	f.Fuzz(func(t *testing.T, seed uint64, steps uint16, keys uint8) {
		s := newSim(t, Config{Window: 3, BatchBytes: 100, MaxPending: 8, RetransmitTimeout: 30 * time.Millisecond, NackHoldoff: 5 * time.Millisecond}, "a", "b", "c")
		s.connectAll()
		s.chaos(rand.New(rand.NewPCG(seed, binary.BigEndian.Uint64([]byte("telcolb!")))), int(steps%4000), 1+int(keys))
		s.settle()
	})
}
