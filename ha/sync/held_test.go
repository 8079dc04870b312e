package sync

import (
	"bytes"
	"testing"
	"time"
)

// heldPeer plays peer b against a real machine a: b's hello offers
// FeatureHeld or not, a's data messages are parsed as they go out.
type heldPeer struct {
	t    *testing.T
	m    *Machine
	sent []*Data // a's data messages, in order
	raw  [][]byte
	// aHello is a's hello, as b got it.
	aHello *Hello
}

func newHeldPeer(t *testing.T) *heldPeer {
	m, err := New(Config{Self: "a", Peers: []string{"b"}, KeepaliveInterval: -1, PeerTimeout: -1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	return &heldPeer{t: t, m: m}
}

func (h *heldPeer) take(out Output) {
	h.t.Helper()
	for _, s := range out.Sends {
		msg, err := Parse(s.Data)
		if err != nil {
			h.t.Fatal(err)
		}
		switch {
		case msg.Hello != nil:
			h.aHello = msg.Hello
		case msg.Data != nil:
			h.sent = append(h.sent, msg.Data)
			h.raw = append(h.raw, s.Data)
		}
	}
}

// up connects b at now, its hello offering FeatureHeld or not.
func (h *heldPeer) up(now time.Time, held bool) {
	h.take(h.m.Connected(now, "b"))
	h.take(h.m.Receive(now, "b", AppendHello(nil, Hello{Name: "b", Incarnation: 2, Heard: true, Held: held})))
}

func (h *heldPeer) put(now time.Time, key string) {
	h.t.Helper()
	out, err := h.m.Put(now, Record{Kind: 1, Key: []byte(key), Value: []byte("v-" + key)})
	if err != nil {
		h.t.Fatal(err)
	}
	h.take(out)
}

// held is what the last message a sent says of key's hold time.
func (h *heldPeer) held(key string) time.Duration {
	h.t.Helper()
	if len(h.sent) == 0 {
		h.t.Fatalf("a sent no data message (%s)", key)
	}
	for _, r := range h.sent[len(h.sent)-1].Records {
		if string(r.Key) == key {
			return r.Held
		}
	}
	h.t.Fatalf("a's last message does not carry %s", key)
	return 0
}

// TestHeldValuesCarryTheirHoldTime: a record goes with how long its value
// was held before it went, so that its receiver ages it by that much. A
// bulk resync sends values put long before (here 90 s, up to the 2
// minutes between two full refreshes in the daemon): without it, a
// conntrack copy took its flow for that much younger and outlived it
// after a failover. A value sent within a millisecond of its put goes
// without the field, as a deletion always does.
func TestHeldValuesCarryTheirHoldTime(t *testing.T) {
	h := newHeldPeer(t)
	h.put(t0, "old") // no peer up: it waits in the table
	h.up(t0.Add(90*time.Second), true)
	if h.aHello == nil || !h.aHello.Held {
		t.Fatalf("a's hello %+v does not offer FeatureHeld", h.aHello)
	}
	if got := h.held("old"); got != 90*time.Second {
		t.Fatalf("the snapshot carries a value put 90 s before with a hold time of %v", got)
	}
	ack := func(now time.Time) {
		d := h.sent[len(h.sent)-1]
		h.take(h.m.Receive(now, "b", AppendAck(nil, Ack{Incarnation: d.Incarnation, Stream: d.Stream, Seq: d.Seq})))
	}
	now := t0.Add(91 * time.Second)
	ack(now)
	h.put(now, "live")
	h.take(h.m.Flush(now))
	if got := h.held("live"); got != 0 {
		t.Fatalf("a value sent when put goes with a hold time of %v, want none", got)
	}
	ack(now)
	// Queued 250 ms before the flush that sends it (a full window, a
	// gathering producer): that is held too.
	h.put(now, "queued")
	h.take(h.m.Flush(now.Add(250 * time.Millisecond)))
	if got := h.held("queued"); got != 250*time.Millisecond {
		t.Fatalf("a value queued 250 ms goes with a hold time of %v", got)
	}
	ack(now.Add(250 * time.Millisecond))
	// A deletion has no value to age.
	out, err := h.m.Delete(now.Add(time.Minute), 1, []byte("old"))
	if err != nil {
		t.Fatal(err)
	}
	h.take(out)
	h.take(h.m.Flush(now.Add(2 * time.Minute)))
	if got := h.held("old"); got != 0 {
		t.Fatalf("a deletion goes with a hold time of %v", got)
	}
}

// TestHeldGoesOnlyToPeersThatTakeIt: a peer whose hello does not offer
// FeatureHeld (an older version, whose parser refuses the record flag) gets
// every record as version 1 wrote it.
func TestHeldGoesOnlyToPeersThatTakeIt(t *testing.T) {
	h := newHeldPeer(t)
	h.put(t0, "old")
	h.up(t0.Add(90*time.Second), false)
	if len(h.sent) != 1 {
		t.Fatalf("a sent %d data messages, want its snapshot", len(h.sent))
	}
	d := *h.sent[0]
	for i, r := range d.Records {
		if r.Held != 0 {
			t.Fatalf("record %d goes with a hold time of %v to a peer without the feature", i, r.Held)
		}
	}
	if want := AppendData(nil, d); !bytes.Equal(h.raw[0], want) {
		t.Fatalf("a's snapshot to an older peer is\n%x\nwant version 1's\n%x", h.raw[0], want)
	}
}

// TestHeldOnTheWire: the record flag and its field, and what a parser
// refuses of them.
func TestHeldOnTheWire(t *testing.T) {
	d := Data{Incarnation: 1, Stream: 1, Seq: 2, Records: []Record{
		{Kind: 1, Key: []byte("k"), Value: []byte("v"), Held: 93*time.Second + 400*time.Microsecond},
		{Kind: 1, Key: []byte("j"), Value: []byte("w"), Held: 999 * time.Microsecond},
	}}
	b := AppendData(nil, d)
	msg, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Data.Records; got[0].Held != 93*time.Second || got[1].Held != 0 {
		t.Fatalf("hold times %v and %v read back, want 93s (whole ms) and none (under 1 ms)", got[0].Held, got[1].Held)
	}
	// The first record: header at dataHdrLen, its flags byte at +2, the
	// field after the header.
	flags, field := dataHdrLen+2, dataHdrLen+recordHdrLen
	if b[flags] != recordHeld || !bytes.Equal(b[field:field+4], []byte{0, 1, 0x6b, 0x48}) {
		t.Fatalf("record flags %#x, hold time %x; want %#x and 93,000 ms", b[flags], b[field:field+4], recordHeld)
	}
	for _, c := range []struct {
		name string
		bad  func([]byte) []byte
		want string
	}{
		{"a field of 0", func(b []byte) []byte { copy(b[field:], []byte{0, 0, 0, 0}); return b }, "hold time field of 0"},
		{"on a deletion", func(b []byte) []byte {
			// Deleted, held, no value: the value's byte goes.
			b[flags] = recordDeleted | recordHeld
			b[dataHdrLen+5+3] = 0
			return append(b[:field+4+1], b[field+4+2:]...)
		}, "deleted with a hold time"},
		{"cut", func(b []byte) []byte {
			b = b[:field+2]
			b[dataHdrLen-1] = 1 // one record
			return b
		}, "hold time cut"},
	} {
		_, err := Parse(c.bad(bytes.Clone(b)))
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
		}
	}
}
