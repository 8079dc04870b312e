package sync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Wire format, version 1. The transport frames each message with a 4-byte
// big-endian length (FrameHeader); Parse reads one message without it.
//
//	every message: version u8 (1) | type u8 | flags u8 | reserved u8
//	hello: incarnation u64 | ack: senderInc u64, stream u32, expected u64 |
//	       nameLen u8 | name
//	data:  incarnation u64 | stream u32 | seq u64 | count u32 |
//	       count x (kind u16 | rflags u8 | keyLen u16 | valueLen u32 |
//	                [held u32, with rflag Held] | key | value)
//	ack:   incarnation u64 | stream u32 | seq u64
//
// A hello tells the peer who we are and where its stream to us stands, so a
// reconnect can resume instead of resyncing. The reserved byte of a hello
// carries feature bits (version 1 parsers ignore it): FeatureKeepalive,
// the sender sends a message at least every keepalive interval while the
// connection is up, so the receiver may time it out (liveness.go);
// FeatureHeld, the sender takes records with a hold time (rflag Held: how
// many milliseconds the sender held the value before it sent it), which a
// version 1 parser without the feature refuses, so a node sends them only
// to peers that offered it. Hello flag Heard: the sender
// has had the addressee's hello. Data flags: Begin opens a bulk
// resync (a new stream, seq 1), End closes it. Ack flag Nack asks for the
// unacknowledged messages at once (a gap was seen).
const (
	Version = 1

	TypeHello = 1
	TypeData  = 2
	TypeAck   = 3

	FlagBegin = 1
	FlagEnd   = 2
	FlagNack  = 1
	FlagHeard = 1

	FeatureKeepalive = 1
	FeatureHeld      = 2

	recordDeleted = 1
	recordHeld    = 2

	// MaxFrame bounds one message (the transport refuses longer frames).
	MaxFrame = 1 << 20
	// MaxKey and MaxValue bound one record.
	MaxKey   = 1024
	MaxValue = 64 << 10
	// FrameHeader is the length prefix the transport puts before a message.
	FrameHeader = 4

	hdrLen       = 4
	dataHdrLen   = hdrLen + 8 + 4 + 8 + 4
	recordHdrLen = 2 + 1 + 2 + 4
	heldLen      = 4
	ackLen       = hdrLen + 8 + 4 + 8
	helloMinLen  = hdrLen + 8 + 8 + 4 + 8 + 1
	maxNameLen   = 253
)

// Record is one replicated entry. The machine never interprets Key or
// Value; Kind tells the consumer what they are.
type Record struct {
	Kind    uint16
	Key     []byte
	Value   []byte
	Deleted bool
	// Local, on a deletion put here, is one the peers make themselves
	// from the value they hold (the consumer knows: a conntrack entry's
	// expiry, by the age in the value): the record leaves this node's
	// table, so no later bulk resync carries it, and no message, unless
	// a resync's snapshot carried the key since its last put. That value
	// reached a peer later than it was put: a peer without FeatureHeld
	// takes it for younger than it is and expires it late, so the
	// deletion is sent (to every peer: the machine keeps one set of such
	// keys). Not on the wire.
	Local bool
	// ID, when set, is KeyOf(Kind, Key), which the caller holds already
	// (the key of its own map of these records): the node keeps that
	// string as its table's key instead of making another, one for every
	// record a loaded node puts. Empty: made here. Not on the wire.
	ID string
	// Held, on a record received, is how long its sender held the value
	// before it sent it (whole milliseconds; zero under one, or from a
	// peer without FeatureHeld): a bulk resync sends values put minutes
	// before, and a value that dates its contents by ages (a conntrack
	// entry's last packet) is that much older than it says. Ignored on a
	// record put.
	Held time.Duration
}

// KeyOf is the string a record's kind and key are known by in the node's
// table: the kind (2 bytes, big endian), then the key. A caller keeping
// its own map of the records can key it by the same string and hand it
// over in Record.ID.
func KeyOf(kind uint16, key []byte) string {
	// One allocation (the Builder's string is its buffer), not a slice
	// and then its copy: a string for every record a loaded node puts.
	var b strings.Builder
	b.Grow(2 + len(key))
	b.WriteByte(byte(kind >> 8))
	b.WriteByte(byte(kind))
	b.Write(key)
	return b.String()
}

// AppendKeyOf appends KeyOf's bytes to dst: a lookup by string(the
// result) in a map makes no string.
func AppendKeyOf(dst []byte, kind uint16, key []byte) []byte {
	return append(append(dst, byte(kind>>8), byte(kind)), key...)
}

// Hello opens a connection.
type Hello struct {
	Name        string
	Incarnation uint64
	// Where the sender of the hello stands on the addressee's stream to it:
	// the stream it follows (incarnation, number) and the next seq it
	// expects. Zero when it follows none.
	PeerInc  uint64
	Stream   uint32
	Expected uint64
	// Heard says the sender has the addressee's hello already (a hello
	// without it is answered, so a lost hello is made up for).
	Heard bool
	// Keepalive says the sender sends keepalives (FeatureKeepalive): a
	// silence past the receiver's PeerTimeout means a lost peer. Older
	// senders leave it clear, and are never timed out.
	Keepalive bool
	// Held says the sender takes records with a hold time (FeatureHeld).
	Held bool
}

// Data is one batch of records of a stream.
type Data struct {
	Incarnation uint64
	Stream      uint32
	Seq         uint64
	Begin, End  bool
	Records     []Record
}

// Ack acknowledges every message of the stream up to Seq.
type Ack struct {
	Incarnation uint64
	Stream      uint32
	Seq         uint64
	Nack        bool
}

// Message is one parsed message: exactly one field is set.
type Message struct {
	Hello *Hello
	Data  *Data
	Ack   *Ack
}

// ErrMalformed wraps every parse error.
var ErrMalformed = errors.New("sync: malformed message")

func malformed(f string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(f, a...))
}

// Parse decodes one message. Record keys and values alias b.
func Parse(b []byte) (Message, error) {
	if len(b) < hdrLen {
		return Message{}, malformed("%d bytes, header needs %d", len(b), hdrLen)
	}
	if len(b) > MaxFrame {
		return Message{}, malformed("%d bytes, limit %d", len(b), MaxFrame)
	}
	if b[0] != Version {
		return Message{}, malformed("version %d, want %d", b[0], Version)
	}
	flags := b[2]
	switch b[1] {
	case TypeHello:
		if len(b) < helloMinLen {
			return Message{}, malformed("hello of %d bytes, want at least %d", len(b), helloMinLen)
		}
		if flags&^FlagHeard != 0 {
			return Message{}, malformed("hello flags %#x", flags)
		}
		h := &Hello{
			Heard: flags&FlagHeard != 0,
			// Feature bits this version does not know are ignored: a
			// newer peer may offer more.
			Keepalive:   b[3]&FeatureKeepalive != 0,
			Held:        b[3]&FeatureHeld != 0,
			Incarnation: binary.BigEndian.Uint64(b[4:]),
			PeerInc:     binary.BigEndian.Uint64(b[12:]),
			Stream:      binary.BigEndian.Uint32(b[20:]),
			Expected:    binary.BigEndian.Uint64(b[24:]),
		}
		n := int(b[32])
		if n == 0 || len(b) != helloMinLen+n {
			return Message{}, malformed("hello name of %d bytes in a %d-byte message", n, len(b))
		}
		h.Name = string(b[helloMinLen:])
		return Message{Hello: h}, nil
	case TypeAck:
		if len(b) != ackLen {
			return Message{}, malformed("ack of %d bytes, want %d", len(b), ackLen)
		}
		if flags&^FlagNack != 0 {
			return Message{}, malformed("ack flags %#x", flags)
		}
		return Message{Ack: &Ack{
			Incarnation: binary.BigEndian.Uint64(b[4:]),
			Stream:      binary.BigEndian.Uint32(b[12:]),
			Seq:         binary.BigEndian.Uint64(b[16:]),
			Nack:        flags&FlagNack != 0,
		}}, nil
	case TypeData:
		return parseData(b, flags)
	}
	return Message{}, malformed("type %d", b[1])
}

func parseData(b []byte, flags byte) (Message, error) {
	if len(b) < dataHdrLen {
		return Message{}, malformed("data of %d bytes, want at least %d", len(b), dataHdrLen)
	}
	if flags&^(FlagBegin|FlagEnd) != 0 {
		return Message{}, malformed("data flags %#x", flags)
	}
	d := &Data{
		Incarnation: binary.BigEndian.Uint64(b[4:]),
		Stream:      binary.BigEndian.Uint32(b[12:]),
		Seq:         binary.BigEndian.Uint64(b[16:]),
		Begin:       flags&FlagBegin != 0,
		End:         flags&FlagEnd != 0,
	}
	if d.Seq == 0 {
		return Message{}, malformed("data seq 0")
	}
	if d.Begin != (d.Seq == 1) {
		return Message{}, malformed("data seq %d with begin %v: a stream begins at seq 1", d.Seq, d.Begin)
	}
	count := binary.BigEndian.Uint32(b[24:])
	rest := b[dataHdrLen:]
	// Each record takes at least its header plus a 1-byte key: bound the
	// allocation by what the message can hold.
	if uint64(count)*(recordHdrLen+1) > uint64(len(rest)) {
		return Message{}, malformed("%d records cannot fit in %d bytes", count, len(rest))
	}
	d.Records = make([]Record, count)
	for i := range d.Records {
		if len(rest) < recordHdrLen {
			return Message{}, malformed("record %d: header cut at %d bytes", i, len(rest))
		}
		kind := binary.BigEndian.Uint16(rest)
		rf := rest[2]
		kl := int(binary.BigEndian.Uint16(rest[3:]))
		vl := int(binary.BigEndian.Uint32(rest[5:]))
		rest = rest[recordHdrLen:]
		var held time.Duration
		if rf&recordHeld != 0 {
			if len(rest) < heldLen {
				return Message{}, malformed("record %d: hold time cut at %d bytes", i, len(rest))
			}
			ms := binary.BigEndian.Uint32(rest)
			if ms == 0 {
				// One encoding per record: none is sent as no field.
				return Message{}, malformed("record %d: hold time field of 0", i)
			}
			held = time.Duration(ms) * time.Millisecond
			rest = rest[heldLen:]
		}
		switch {
		case rf&^(recordDeleted|recordHeld) != 0:
			return Message{}, malformed("record %d: flags %#x", i, rf)
		case rf&recordDeleted != 0 && rf&recordHeld != 0:
			return Message{}, malformed("record %d: deleted with a hold time", i)
		case kl == 0 || kl > MaxKey:
			return Message{}, malformed("record %d: key of %d bytes, want 1..%d", i, kl, MaxKey)
		case vl > MaxValue:
			return Message{}, malformed("record %d: value of %d bytes, limit %d", i, vl, MaxValue)
		case rf&recordDeleted != 0 && vl != 0:
			return Message{}, malformed("record %d: deleted with a %d-byte value", i, vl)
		case kl+vl > len(rest):
			return Message{}, malformed("record %d: %d+%d bytes, %d left", i, kl, vl, len(rest))
		}
		d.Records[i] = Record{Kind: kind, Key: rest[:kl:kl], Deleted: rf&recordDeleted != 0, Held: held}
		if vl > 0 {
			d.Records[i].Value = rest[kl : kl+vl : kl+vl]
		}
		rest = rest[kl+vl:]
	}
	if len(rest) != 0 {
		return Message{}, malformed("%d bytes after the last record", len(rest))
	}
	return Message{Data: d}, nil
}

func header(b []byte, typ, flags byte) []byte {
	return append(b, Version, typ, flags, 0)
}

// AppendHello encodes h after b.
func AppendHello(b []byte, h Hello) []byte {
	var f byte
	if h.Heard {
		f = FlagHeard
	}
	b = header(b, TypeHello, f)
	if h.Keepalive {
		b[len(b)-1] |= FeatureKeepalive
	}
	if h.Held {
		b[len(b)-1] |= FeatureHeld
	}
	b = binary.BigEndian.AppendUint64(b, h.Incarnation)
	b = binary.BigEndian.AppendUint64(b, h.PeerInc)
	b = binary.BigEndian.AppendUint32(b, h.Stream)
	b = binary.BigEndian.AppendUint64(b, h.Expected)
	b = append(b, byte(len(h.Name)))
	return append(b, h.Name...)
}

// AppendAck encodes a after b.
func AppendAck(b []byte, a Ack) []byte {
	var f byte
	if a.Nack {
		f = FlagNack
	}
	b = header(b, TypeAck, f)
	b = binary.BigEndian.AppendUint64(b, a.Incarnation)
	b = binary.BigEndian.AppendUint32(b, a.Stream)
	return binary.BigEndian.AppendUint64(b, a.Seq)
}

// AppendData encodes d after b.
func AppendData(b []byte, d Data) []byte {
	b = appendDataHeader(b, d, uint32(len(d.Records)))
	for _, r := range d.Records {
		b = appendRecord(b, r)
	}
	return b
}

func appendDataHeader(b []byte, d Data, count uint32) []byte {
	var f byte
	if d.Begin {
		f |= FlagBegin
	}
	if d.End {
		f |= FlagEnd
	}
	b = header(b, TypeData, f)
	b = binary.BigEndian.AppendUint64(b, d.Incarnation)
	b = binary.BigEndian.AppendUint32(b, d.Stream)
	b = binary.BigEndian.AppendUint64(b, d.Seq)
	return binary.BigEndian.AppendUint32(b, count)
}

func recordLen(r Record) int {
	return recordSize(len(r.Key), len(r.Value), heldMillis(r.Held, r.Deleted))
}

// recordSize is the encoded length of a record of these key and value
// lengths and hold time (heldMillis).
func recordSize(key, value int, held uint32) int {
	if held > 0 {
		return recordHdrLen + heldLen + key + value
	}
	return recordHdrLen + key + value
}

// heldMillis is the hold time on the wire: whole milliseconds, saturated
// at the field's largest (49 days); none on a deletion, nor under a
// millisecond (most live changes: the transfer is not counted either).
func heldMillis(d time.Duration, deleted bool) uint32 {
	if deleted || d < time.Millisecond {
		return 0
	}
	return uint32(min(d/time.Millisecond, math.MaxUint32))
}

func appendRecord(b []byte, r Record) []byte {
	return appendRecordOf(b, r.Kind, r.Key, r.Value, r.Deleted, heldMillis(r.Held, r.Deleted))
}

// appendRecordOf encodes one record from its parts, the key as a slice or
// a string (the table's, appendTableRecord), with held (milliseconds)
// when not zero.
func appendRecordOf[K string | []byte](b []byte, kind uint16, key K, value []byte, deleted bool, held uint32) []byte {
	var f byte
	if deleted {
		f = recordDeleted
	}
	if held > 0 {
		f |= recordHeld
	}
	b = binary.BigEndian.AppendUint16(b, kind)
	b = append(b, f)
	b = binary.BigEndian.AppendUint16(b, uint16(len(key)))
	b = binary.BigEndian.AppendUint32(b, uint32(len(value)))
	if held > 0 {
		b = binary.BigEndian.AppendUint32(b, held)
	}
	b = append(b, key...)
	return append(b, value...)
}

// appendTableRecord is appendRecord of the record the table holds under
// tk (KeyOf), with value v: the key goes straight from the string.
func appendTableRecord(b []byte, tk string, v []byte, deleted bool, held uint32) []byte {
	return appendRecordOf(b, uint16(tk[0])<<8|uint16(tk[1]), tk[2:], v, deleted, held)
}

// checkRecord says why a record cannot be sent.
func checkRecord(r Record) error {
	switch {
	case len(r.Key) == 0 || len(r.Key) > MaxKey:
		return fmt.Errorf("sync: record key of %d bytes, want 1..%d", len(r.Key), MaxKey)
	case len(r.Value) > MaxValue:
		return fmt.Errorf("sync: record value of %d bytes, limit %d", len(r.Value), MaxValue)
	case r.ID != "" && !isKeyOf(r.ID, r.Kind, r.Key):
		return fmt.Errorf("sync: record ID %x is not the kind %d and key %x", r.ID, r.Kind, r.Key)
	}
	return nil
}

// isKeyOf says whether id is KeyOf(kind, key), without making it.
func isKeyOf(id string, kind uint16, key []byte) bool {
	return len(id) == 2+len(key) && id[0] == byte(kind>>8) && id[1] == byte(kind) && id[2:] == string(key)
}
