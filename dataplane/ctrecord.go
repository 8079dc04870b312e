package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/telcolb/telcolb/bpf"
)

// Record is one piece of conntrack state as HA peers replicate it (the
// contract with the sync layer in ha/, which treats Key and Value as
// opaque). Deleted records carry only the key.
type Record struct {
	Kind    uint16
	Key     []byte
	Value   []byte
	Deleted bool
	// Expired says a deletion is the ageing's: the entry's timeout passed
	// since its flow's last packet. Every node expires its copies by the
	// same rule (the timeouts are in the entries), and a copy's last
	// packet is never later than its owner's, so the HA sync does not
	// send these: the peers' copies are gone by then, or go at their
	// next ageing round.
	Expired bool
	// idle and idleAge are RecordIdle's answer for a record this node
	// encoded (idleUnknown: parse the value): the HA sync asks it of
	// every record it sends or dumps, and parsing it back cost as much
	// as encoding the record.
	idle    idleState
	idleAge time.Duration
}

type idleState uint8

const (
	idleUnknown idleState = iota
	idleKnown
	idleNone
)

// Record kinds.
const (
	// RecordConntrack is one direction of a connection (struct ct_key,
	// struct ct_val). The reply entry of a fullnat or onearm flow holds
	// its SNAT address and port: importing it is the port's reservation,
	// since the datapath takes only ports whose reply tuple is free
	// (snat_pick in bpf/lib/nat.h).
	RecordConntrack uint16 = 1
	// RecordAssoc is an SCTP association record (struct assoc_key, struct
	// assoc): addresses of every path, both verification tags.
	RecordAssoc uint16 = 2
)

// recordVersion is the encoding's version, the first byte of every Key and
// Value. A node refuses a version it does not know, naming it.
const recordVersion = 1

// The encoding does not depend on the C struct layout: after the version
// byte, every field of the struct as a (name, bytes) pair, named by its BTF
// path like the map migration does (layout.go):
//
//	u8 name length, name, u16 (big endian) data length, data
//
// Integers are little endian (the bpfel objects'). A reader maps fields by
// name onto its own layout: a field it lacks is refused unless it is zero
// (nothing is lost silently), a value field the record lacks starts at zero
// (as an upgrade does), a key field the record lacks refuses the record (a
// zero there would change the entry's identity). An integer may change
// width when its value fits.
//
// Fields that only mean something on the node that wrote them are left
// out: the cached FIB result (fib_*). Times (CLOCK_MONOTONIC of the
// writer) travel as ages under name+"@age", each 8-byte element encoded as
// 0 (unset) or age+1 ns, and become times of the reader's clock.
var nodeLocalFields = map[string]bool{"fib_ifindex": true, "fib_macs": true, "fib_ns": true}

var clockFields = map[string]bool{
	"created": true, "last_seen": true, // ct_val
	"cseen": true, "eask": true, "noroute": true, "steer_since": true, // assoc
}

const ageSuffix = "@age"

// layout is one struct's leaves and size, with the plan of its encoding.
type layout struct {
	name   string
	leaves []leaf
	size   int
	// fields are the leaves a record carries, in encode's order, each
	// with its encoded header: worked out once here because encoding
	// and decoding run for every record the HA sync sends or imports
	// (a refresh encodes the whole table), and the per-field name
	// checks and map lookups were most of their cost.
	fields []recField
	// encSize is the length of an encoded record of this layout;
	// template is one with every header written and the data zero.
	encSize  int
	template []byte
	// idle is the field RecordIdle reads (last_seen, cseen), if the
	// layout has it: the records the node writes carry the idle time
	// worked out from the struct, not parsed back from the encoding.
	idle *recField
}

// recField is one leaf as a record carries it.
type recField struct {
	leaf
	// head is the field's header: name length, name (with ageSuffix for
	// a clock), data length (big endian).
	head []byte
	// clock: the data are times, sent as ages.
	clock bool
	// at is where the data begin in an encoded record.
	at int
}

// recordCodec encodes and decodes records for one datapath object.
type recordCodec struct {
	ctKey, ctVal, assocKey, assoc layout
}

func newLayout(name string, t btf.Type) (layout, error) {
	ls, err := leaves(t)
	if err != nil {
		return layout{}, fmt.Errorf("%s: %w", name, err)
	}
	n, err := btf.Sizeof(t)
	if err != nil {
		return layout{}, fmt.Errorf("%s: %w", name, err)
	}
	return planLayout(name, ls, n)
}

// planLayout is the layout of a struct of size bytes with these leaves.
func planLayout(name string, ls []leaf, size int) (layout, error) {
	l := layout{name: name, leaves: ls, size: size, template: []byte{recordVersion}}
	for _, f := range ls {
		if isPadding(f.path) || nodeLocalFields[f.path] {
			continue
		}
		rf := recField{leaf: f, clock: clockFields[f.path] && f.size%8 == 0}
		name := f.path
		if rf.clock {
			name += ageSuffix
		}
		if len(name) > math.MaxUint8 || f.size > math.MaxUint16 {
			return layout{}, fmt.Errorf("%s: field %q: name or size too long for a record", l.name, name)
		}
		rf.head = append([]byte{byte(len(name))}, name...)
		rf.head = binary.BigEndian.AppendUint16(rf.head, uint16(f.size))
		l.template = append(l.template, rf.head...)
		rf.at = len(l.template)
		l.template = append(l.template, make([]byte, f.size)...)
		l.fields = append(l.fields, rf)
	}
	l.encSize = len(l.template)
	for i, f := range l.fields {
		if f.clock && (f.path == "last_seen" || f.path == "cseen") {
			l.idle = &l.fields[i]
		}
	}
	return l, nil
}

// newRecordCodec reads the layouts from the object's BTF.
func newRecordCodec(spec *ebpf.CollectionSpec) (*recordCodec, error) {
	ct, as := spec.Maps[bpf.LbMapConntrack], spec.Maps[bpf.LbMapAssocs]
	if ct == nil || as == nil || ct.Key == nil || ct.Value == nil || as.Key == nil || as.Value == nil {
		return nil, errors.New("record codec: conntrack or assocs map without BTF")
	}
	if err := errors.Join(viewable[bpf.LbCtKey](), viewable[bpf.LbCtVal](), viewable[bpf.LbAssocKey](), viewable[bpf.LbAssoc](), viewable[bpf.LbCtEvent](), viewable[bpf.LbCtEntryEvent]()); err != nil {
		return nil, fmt.Errorf("record codec: %w", err)
	}
	c := &recordCodec{}
	var err error
	if c.ctKey, err = newLayout("ct_key", ct.Key); err != nil {
		return nil, err
	}
	if c.ctVal, err = newLayout("ct_val", ct.Value); err != nil {
		return nil, err
	}
	if c.assocKey, err = newLayout("assoc_key", as.Key); err != nil {
		return nil, err
	}
	if c.assoc, err = newLayout("assoc", as.Value); err != nil {
		return nil, err
	}
	return c, nil
}

// record encodes one entry of kind (key and value structs as raw bytes,
// now the clock of their times), with its idle time.
func (c *recordCodec) record(kind uint16, kl, vl *layout, key, val []byte, now uint64) Record {
	// Key and value in one allocation (a record's two halves live and
	// die together): half the allocations of the sync's records. Each
	// half's capacity ends at its own end (an encoding is at most
	// encSize, a short raw's less), so neither grows into the other.
	b := make([]byte, kl.encSize+vl.encSize)
	r := Record{Kind: kind, Key: kl.encodeInto(b[:0:kl.encSize], key, now), Value: vl.encodeInto(b[kl.encSize:kl.encSize], val, now), idle: idleNone}
	if age, ok := vl.idleOf(val, now); ok {
		r.idle, r.idleAge = idleKnown, age
	}
	return r
}

func (c *recordCodec) layouts(kind uint16) (key, val *layout, err error) {
	switch kind {
	case RecordConntrack:
		return &c.ctKey, &c.ctVal, nil
	case RecordAssoc:
		return &c.assocKey, &c.assoc, nil
	}
	return nil, nil, fmt.Errorf("record kind %d unknown to this node", kind)
}

// encode writes raw (one struct of layout l) as a record field list; now is
// the writer's clock for ages. A raw shorter than the layout (a test's
// older struct) leaves out the fields past its end.
func (l *layout) encode(raw []byte, now uint64) []byte {
	if len(raw) < l.size {
		return l.encodeShort(raw, now)
	}
	out := bytes.Clone(l.template)
	for _, f := range l.fields {
		f.put(out[f.at:f.at+int(f.size)], raw, now)
	}
	return out
}

// encodeInto is encode into dst (its contents replaced, its array reused
// when large enough): a walk encodes every key without allocating one.
func (l *layout) encodeInto(dst, raw []byte, now uint64) []byte {
	if len(raw) < l.size {
		return append(dst[:0], l.encodeShort(raw, now)...)
	}
	out := append(dst[:0], l.template...)
	for _, f := range l.fields {
		f.put(out[f.at:f.at+int(f.size)], raw, now)
	}
	return out
}

// encodeShort is encode for a raw that ends before the layout does.
func (l *layout) encodeShort(raw []byte, now uint64) []byte {
	out := []byte{recordVersion}
	for _, f := range l.fields {
		if int(f.off+f.size) > len(raw) {
			continue
		}
		out = append(out, f.head...)
		out = append(out, make([]byte, f.size)...)
		f.put(out[len(out)-int(f.size):], raw, now)
	}
	return out
}

// put writes the field's data from raw (the struct) into dst, times as
// ages at now.
func (f *recField) put(dst, raw []byte, now uint64) {
	data := raw[f.off : f.off+f.size]
	if !f.clock {
		copy(dst, data)
		return
	}
	timesToAges(dst, data, now)
}

// timesToAges writes into dst the ages at now of the times (this node's
// clock) in data, 8-byte little-endian words: 0 for a time never set,
// otherwise age+1 ns (agesToTimes reads them).
func timesToAges(dst, data []byte, now uint64) {
	for i := 0; i < len(data); i += 8 {
		t := binary.LittleEndian.Uint64(data[i:])
		var age uint64
		if t != 0 {
			if now > t {
				age = now - t
			}
			age++
		}
		binary.LittleEndian.PutUint64(dst[i:], age)
	}
}

// idleOf is RecordIdle of the record encode(raw, now) writes, from raw.
func (l *layout) idleOf(raw []byte, now uint64) (time.Duration, bool) {
	f := l.idle
	if f == nil || len(raw) < l.size {
		return 0, false
	}
	var best uint64 // the most recent time
	data := raw[f.off : f.off+f.size]
	for i := 0; i+8 <= len(data); i += 8 {
		best = max(best, binary.LittleEndian.Uint64(data[i:]))
	}
	if best == 0 {
		return 0, false
	}
	return time.Duration(now - min(now, best)), true
}

// parseFields splits an encoded record into its fields.
func parseFields(enc []byte) (map[string][]byte, error) {
	if len(enc) == 0 {
		return nil, errors.New("empty record")
	}
	if enc[0] != recordVersion {
		return nil, fmt.Errorf("record encoding version %d, this node reads version %d", enc[0], recordVersion)
	}
	fields := map[string][]byte{}
	err := walkFields(enc, func(name string, data []byte) error {
		if _, dup := fields[name]; dup {
			return fmt.Errorf("record field %q repeated", name)
		}
		fields[name] = data
		return nil
	})
	if err != nil {
		return nil, err
	}
	return fields, nil
}

// walkFields calls fn with each field of an encoded record (after its
// version byte, which the caller checked), in order; a malformed field or
// fn's error ends the walk.
func walkFields(enc []byte, fn func(name string, data []byte) error) error {
	b := enc[1:]
	for len(b) > 0 {
		n := int(b[0])
		if n == 0 || len(b) < 1+n+2 {
			return fmt.Errorf("record truncated or malformed at byte %d", len(enc)-len(b))
		}
		name := string(b[1 : 1+n])
		dl := int(binary.BigEndian.Uint16(b[1+n:]))
		b = b[1+n+2:]
		if len(b) < dl {
			return fmt.Errorf("record field %q truncated: %d of %d bytes", name, len(b), dl)
		}
		if err := fn(name, b[:dl]); err != nil {
			return err
		}
		b = b[dl:]
	}
	return nil
}

// recordField is parseFields(enc)[name] (nil when absent, the same errors)
// without the map: the HA sync reads a record's idle time up to three
// times per record, and the map of every field name was most of that.
func recordField(enc []byte, name string) ([]byte, error) {
	var names [64][]byte // seen so far, for parseFields' repeated-field check
	if len(enc) == 0 {
		return nil, errors.New("empty record")
	}
	if enc[0] != recordVersion {
		return nil, fmt.Errorf("record encoding version %d, this node reads version %d", enc[0], recordVersion)
	}
	var found []byte
	b := enc[1:]
	for i := 0; len(b) > 0; i++ {
		if i == len(names) {
			fields, err := parseFields(enc) // more fields than any layout here
			return fields[name], err
		}
		n := int(b[0])
		if n == 0 || len(b) < 1+n+2 {
			return nil, fmt.Errorf("record truncated or malformed at byte %d", len(enc)-len(b))
		}
		fn := b[1 : 1+n]
		dl := int(binary.BigEndian.Uint16(b[1+n:]))
		b = b[1+n+2:]
		if len(b) < dl {
			return nil, fmt.Errorf("record field %q truncated: %d of %d bytes", fn, len(b), dl)
		}
		for _, seen := range names[:i] {
			if bytes.Equal(seen, fn) {
				return nil, fmt.Errorf("record field %q repeated", fn)
			}
		}
		names[i] = fn
		if string(fn) == name {
			found = b[:dl]
		}
		b = b[dl:]
	}
	return found, nil
}

// decode builds one struct of layout l from an encoded record; now is the
// reader's clock. complete: every field must be present (a key).
func (l *layout) decode(enc []byte, now uint64, complete bool) ([]byte, error) {
	if out, ok := l.decodeOwn(enc, now); ok {
		return out, nil
	}
	return l.decodeFields(enc, now, complete)
}

// decodeFields is decode for any record: fields by name, in any order,
// of other sizes, missing or unknown.
func (l *layout) decodeFields(enc []byte, now uint64, complete bool) ([]byte, error) {
	fields, err := parseFields(enc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.name, err)
	}
	out := make([]byte, l.size)
	used := map[string]bool{}
	for _, f := range l.fields {
		dst := out[f.off : f.off+f.size]
		if f.clock {
			data, ok := fields[f.path+ageSuffix]
			if !ok {
				continue // a time the writer did not have: unset
			}
			used[f.path+ageSuffix] = true
			if len(data) != len(dst) {
				return nil, fmt.Errorf("%s: field %q has %d bytes, this node's has %d", l.name, f.path, len(data), len(dst))
			}
			agesToTimes(dst, data, now)
			continue
		}
		data, ok := fields[f.path]
		if !ok {
			if complete {
				return nil, fmt.Errorf("%s: field %q missing from the record", l.name, f.path)
			}
			continue
		}
		used[f.path] = true
		switch {
		case len(data) == len(dst):
			copy(dst, data)
		case f.isInt && len(data) <= 8:
			// Little endian: the low bytes come first.
			n := min(len(data), len(dst))
			if !allZero(data[n:]) {
				return nil, fmt.Errorf("%s: field %q: value does not fit %d bytes", l.name, f.path, len(dst))
			}
			copy(dst, data[:n])
		default:
			return nil, fmt.Errorf("%s: field %q has %d bytes, this node's has %d", l.name, f.path, len(data), len(dst))
		}
	}
	for name, data := range fields {
		base := strings.TrimSuffix(name, ageSuffix)
		if used[name] || nodeLocalFields[base] || isPadding(base) {
			continue
		}
		if !allZero(data) {
			return nil, fmt.Errorf("%s: field %q unknown to this node's datapath", l.name, name)
		}
	}
	return out, nil
}

// decodeOwn is decode for a record written with this node's own layout
// (every field, in encode's order, each of its size), the HA sync's
// steady state; false sends any other record through the general decode,
// which also gives the errors. It allocates only the struct: the general
// path's field map and name strings made decoding most of an import's
// CPU, and a standby on a loaded machine fell seconds behind its peer.
func (l *layout) decodeOwn(enc []byte, now uint64) ([]byte, bool) {
	if len(enc) != l.encSize || enc[0] != recordVersion {
		return nil, false
	}
	out := make([]byte, l.size)
	b := enc[1:]
	for _, f := range l.fields {
		if !bytes.HasPrefix(b, f.head) {
			return nil, false
		}
		b = b[len(f.head):]
		data, dst := b[:f.size], out[f.off:f.off+f.size]
		b = b[f.size:]
		if !f.clock {
			copy(dst, data)
			continue
		}
		agesToTimes(dst, data, now)
	}
	return out, len(b) == 0
}

// agesToTimes writes into dst this node's clock readings for the ages in
// data (8-byte little-endian words, age+1; 0: never set), taken at now.
func agesToTimes(dst, data []byte, now uint64) {
	for i := 0; i < len(data); i += 8 {
		age := binary.LittleEndian.Uint64(data[i:])
		var t uint64
		if age != 0 {
			t = 1 // before the node's boot: expired at once
			if age-1 < now {
				t = now - (age - 1)
			}
		}
		binary.LittleEndian.PutUint64(dst[i:], t)
	}
}

// RecordIdle is how long before it was encoded the record's flow last saw
// a packet: a conntrack entry's last_seen, an association's most recent
// client address (cseen). The HA sync compares it between two copies of
// one flow to tell which node carries its traffic. false: a deletion, or
// no such time in the record (never seen, or an unreadable record).
func RecordIdle(r Record) (time.Duration, bool) {
	if r.Deleted {
		return 0, false
	}
	if r.idle != idleUnknown {
		return r.idleAge, r.idle == idleKnown
	}
	name := "last_seen"
	if r.Kind == RecordAssoc {
		name = "cseen"
	}
	data, err := recordField(r.Value, name+ageSuffix)
	if err != nil {
		return 0, false
	}
	var best uint64 // age+1 of the most recent, 0: none
	for i := 0; i+8 <= len(data); i += 8 {
		if a := binary.LittleEndian.Uint64(data[i:]); a != 0 && (best == 0 || a < best) {
			best = a
		}
	}
	if best == 0 {
		return 0, false
	}
	return time.Duration(best - 1), true
}

// AgeRecord is r with every time in it d older: a record encoded at a
// dump's start and sent once the dump ended (a few hundred milliseconds
// later with thousands of entries on a loaded node) must say how idle its
// flow is when it leaves, or the peer dates the flow's last packet that
// much too late and takes it for more recent than its own. Deletions and
// unreadable records are returned as they are (the peer refuses the
// latter with its reason).
func AgeRecord(r Record, d time.Duration) Record {
	if r.Deleted || d <= 0 || len(r.Value) == 0 || r.Value[0] != recordVersion {
		return r
	}
	v := bytes.Clone(r.Value)
	b := v[1:]
	for len(b) > 0 {
		n := int(b[0])
		if n == 0 || len(b) < 1+n+2 {
			return r
		}
		aged := bytes.HasSuffix(b[1:1+n], []byte(ageSuffix))
		dl := int(binary.BigEndian.Uint16(b[1+n:]))
		b = b[1+n+2:]
		if len(b) < dl {
			return r
		}
		if aged {
			for i := 0; i+8 <= dl; i += 8 {
				// 0 is "never set"; otherwise age+1 ns.
				// Saturating: an age past what a Duration holds means the
				// same as the largest one (expired).
				if a := binary.LittleEndian.Uint64(b[i:]); a != 0 {
					binary.LittleEndian.PutUint64(b[i:], max(a, min(a+uint64(d), math.MaxInt64)))
				}
			}
		}
		b = b[dl:]
	}
	r.Value = v
	if r.idle == idleKnown {
		r.idleAge = time.Duration(min(uint64(r.idleAge)+uint64(d), math.MaxInt64-1))
	}
	return r
}

// DescribeKey names a record's key for logs: its fields as name=hex, in
// the record's order (the encoding's field names are the C struct's).
func DescribeKey(r Record) string {
	if len(r.Key) == 0 || r.Key[0] != recordVersion {
		return fmt.Sprintf("kind %d, undecodable key %x", r.Kind, r.Key)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "kind %d:", r.Kind)
	// A malformed field ends the description where it begins.
	_ = walkFields(r.Key, func(name string, data []byte) error {
		fmt.Fprintf(&sb, " %s=%x", name, data)
		return nil
	})
	return sb.String()
}
