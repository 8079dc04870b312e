package steer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
	"github.com/telcolb/telcolb/sctplb/abort"
)

// Replication of the machine's state to a standby proxy (Config.Replicate).
//
// What is replicated, as opaque keyed Records (the HA sync carries them):
//   - one gNB record per gNB that completed NG Setup, keyed by its Global
//     RAN Node ID (association IDs are local to a process and mean nothing
//     on another node): its NG Setup Request and, per AMF that answered,
//     the AMF's setup result; and, when the transport tells it
//     (GNBUp.Abort), what an ABORT of the gNB's association from another
//     node needs: the gNB's verification tag, one of its addresses and its
//     port, the VIP and port it connected to (record version 2; without
//     it the record stays version 1, byte for byte what a node before
//     version 2 sends and decodes);
//   - one UE record per established UE-associated logical NG connection,
//     keyed by (gNB name, RAN-UE-NGAP-ID): its AMF (by name, since AMF
//     indexes are local too) and AMF-UE-NGAP-ID. Its stream is not carried:
//     streamFor derives it from the RAN-UE-NGAP-ID and the association's
//     stream count, which a new association negotiates afresh.
//
// UEs still waiting for their AMF's first answer, orphaned or draining are
// not replicated: a standby could not resume them (their Initial UE
// Message is not carried; the gNB retries).
//
// Change tracking is state based: the places that touch a UE or a gNB mark
// its key dirty, and TakeChanges compares what each dirty key holds now
// with what was last reported for it. A missed mark could delay a change
// but never report a wrong value; the table tests compare Export with the
// sum of the reported changes after every step.
//
// On the standby, imported records are parked, apart from the live tables
// and never acted upon, until a gNB with the same Global RAN Node ID sends
// this machine an NG Setup Request with UE Retention Information
// "ues-retained" (it kept its UE contexts over the loss of the old node):
// its parked UEs are then adopted onto the new association and the
// upstreams dialled for it, which forward the gNB's request (with the
// retention IE) to the AMFs. An AMF whose NG Setup Response does not say
// "ues-retained" dropped its contexts of that gNB: its adopted UEs are
// dropped here too. The gNB's response says "ues-retained" when the gNB
// asked, UEs were adopted and at least one AMF retained them. A gNB that
// does not ask for retention (or a peer proxy without replication) gets
// the TS 38.413 default: the NG Setup re-initialises its UE contexts, and
// its parked UEs are discarded.

// Record is one replicable piece of a Machine's state. Value is nil when
// Deleted.
type Record struct {
	Key     []byte
	Value   []byte
	Deleted bool
}

const (
	recGNB byte = 'g'
	recUE  byte = 'u'

	// recVersion is the UE records' version and the gNB records' without
	// an abort target; recVersionAbort the gNB records' with one (its
	// fields follow the AMF results). A node that only knows version 1
	// refuses version 2 gNB records (the error names the version): during
	// a rolling upgrade, such a node cannot resume the UEs of a newer
	// node whose transport gives targets: usrsctp always, the kernel
	// transport where sctp_diag answers (sctplb/kdiag).
	recVersion      byte = 1
	recVersionAbort byte = 2
)

// replication is the bookkeeping of Config.Replicate; nil when off, so a
// proxy without HA pays nothing per UE.
type replication struct {
	dirtyUE  map[ranKey]struct{}
	dirtyGNB map[AssocID]struct{}
	// sentUE and sentGNB hold, per reported key, the gNB name it was
	// reported under: the association may be gone when it is deleted.
	sentUE  map[ranKey]string
	sentGNB map[AssocID]string
	// owner is the association whose records carry a gNB name: the last
	// one whose NG Setup completed under that name.
	owner  map[string]AssocID
	parked map[string]*parkedGNB
}

type parkedGNB struct {
	hasSetup bool
	setupReq []byte
	amfs     map[string][]byte // AMF name -> its setup result
	target   abort.Target      // zero: none in the record
	ues      map[uint32]parkedUE
}

type parkedUE struct {
	amf   string
	amfID uint64
}

func newReplication() *replication {
	return &replication{
		dirtyUE: map[ranKey]struct{}{}, dirtyGNB: map[AssocID]struct{}{},
		sentUE: map[ranKey]string{}, sentGNB: map[AssocID]string{},
		owner: map[string]AssocID{}, parked: map[string]*parkedGNB{},
	}
}

func (m *Machine) touchUE(u *ue) {
	if m.rep != nil && u.flags&ueHasRAN != 0 {
		m.rep.dirtyUE[ranKey{u.gnb, u.ran}] = struct{}{}
	}
}

func (m *Machine) touchGNB(id AssocID) {
	if m.rep != nil {
		m.rep.dirtyGNB[id] = struct{}{}
	}
}

// claimName makes g the owner of its gNB name once its NG Setup completed;
// the previous owner's records are re-examined (they stop being reported).
func (m *Machine) claimName(g *gnb) {
	if m.rep == nil || g.name == "" {
		return
	}
	if old, ok := m.rep.owner[g.name]; ok && old != g.id {
		m.touchGNB(old)
		for _, u := range m.uesOf(old, 0) {
			m.touchUE(u)
		}
	}
	m.rep.owner[g.name] = g.id
	m.touchGNB(g.id)
	// UEs settled before the gNB was ready (adopted ones) become
	// reportable now.
	for _, u := range m.uesOf(g.id, 0) {
		m.touchUE(u)
	}
}

// gnbRecord is the current record of gNB association id; ok false when
// it has none (not ready, unnamed, not the owner of its name).
func (m *Machine) gnbRecord(id AssocID) (name string, value []byte, ok bool) {
	name, ok = m.exportedName(id)
	if !ok {
		return "", nil, false
	}
	g := m.gnbs[id]
	res := map[string][]byte{}
	for _, u := range m.readyUps(g) {
		r := u.resp
		r.UEsRetained = false
		enc, err := ngapl.NGSetupResponse(r)
		if err != nil {
			continue // an unencodable result is left out, not guessed
		}
		res[m.cfg.AMFs[u.amf].Name] = enc
	}
	return name, encodeGNBValue(g.setupReq, res, g.abortT), true
}

// encodeGNBValue is a gNB record's value: version 2 with target's fields
// when it is valid, else version 1.
func encodeGNBValue(req []byte, amfs map[string][]byte, target abort.Target) []byte {
	v := recVersion
	if target.Valid() {
		v = recVersionAbort
	}
	b := []byte{v}
	b = appendBytes(b, req)
	names := make([]string, 0, len(amfs))
	for n := range amfs {
		names = append(names, n)
	}
	sort.Strings(names)
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, n := range names {
		b = appendBytes(b, []byte(n))
		b = appendBytes(b, amfs[n])
	}
	if v == recVersionAbort {
		b = binary.BigEndian.AppendUint32(b, target.Tag)
		b = appendAddrPort(b, target.Src)
		b = appendAddrPort(b, target.Dst)
	}
	return b
}

func appendAddrPort(b []byte, a netip.AddrPort) []byte {
	b = appendBytes(b, a.Addr().AsSlice())
	return binary.BigEndian.AppendUint16(b, a.Port())
}

// exportedName is the name gNB association id's records carry; ok false
// when it has none.
func (m *Machine) exportedName(id AssocID) (string, bool) {
	g := m.gnbs[id]
	if g == nil || g.state != gnbReady || g.name == "" || m.rep.owner[g.name] != id {
		return "", false
	}
	return g.name, true
}

// ueRecord is the current record under k; ok false when none.
func (m *Machine) ueRecord(k ranKey) (name string, value []byte, ok bool) {
	u := m.byRAN[k]
	if u == nil || u.flags&(ueHasRAN|ueHasAMF) != ueHasRAN|ueHasAMF || u.flags&(ueOrphan|ueDraining|ueAdopted) != 0 {
		return "", nil, false
	}
	if m.initial[u] != nil {
		return "", nil, false // the AMF has not answered yet
	}
	name, ok = m.exportedName(u.gnb)
	if !ok {
		return "", nil, false
	}
	b := []byte{recVersion}
	b = appendBytes(b, []byte(m.cfg.AMFs[u.amf].Name))
	b = binary.BigEndian.AppendUint64(b, u.amfID)
	return name, b, true
}

func gnbKey(name string) []byte { return append([]byte{recGNB}, name...) }

func ueKey(name string, ran uint32) []byte {
	b := []byte{recUE}
	b = appendBytes(b, []byte(name))
	return binary.BigEndian.AppendUint32(b, ran)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// TakeChanges returns the records changed since the previous call, gNB
// records before UE records (an importer sees a gNB before its UEs). Nil
// when replication is off.
func (m *Machine) TakeChanges() []Record {
	if m.rep == nil {
		return nil
	}
	// Deletes go first: a key another association now holds (a gNB that
	// reconnected under its name, a RAN-UE-NGAP-ID reused) must end with
	// the new value.
	var ueDel, gnbDel, gnbPut, uePut []Record
	for id := range m.rep.dirtyGNB {
		name, v, ok := m.gnbRecord(id)
		if prev, sent := m.rep.sentGNB[id]; sent && (!ok || prev != name) {
			delete(m.rep.sentGNB, id)
			// The name's new owner, if any, reports it; only a name
			// nobody holds any more is deleted (with its UEs, on import).
			if o, has := m.rep.owner[prev]; !has || o == id {
				delete(m.rep.owner, prev)
				gnbDel = append(gnbDel, Record{Key: gnbKey(prev), Deleted: true})
			}
		}
		if ok {
			gnbPut = append(gnbPut, Record{Key: gnbKey(name), Value: v})
			m.rep.sentGNB[id] = name
		}
	}
	clear(m.rep.dirtyGNB)
	for k := range m.rep.dirtyUE {
		name, v, ok := m.ueRecord(k)
		if prev, sent := m.rep.sentUE[k]; sent && (!ok || prev != name) {
			ueDel = append(ueDel, Record{Key: ueKey(prev, k.ran), Deleted: true})
			delete(m.rep.sentUE, k)
		}
		if ok {
			uePut = append(uePut, Record{Key: ueKey(name, k.ran), Value: v})
			m.rep.sentUE[k] = name
		}
	}
	clear(m.rep.dirtyUE)
	out := append(ueDel, gnbDel...)
	out = append(out, gnbPut...)
	return append(out, uePut...)
}

// Export returns every record the machine holds now (a bulk resync), gNB
// records first, sorted by key. It does not affect TakeChanges.
func (m *Machine) Export() []Record {
	if m.rep == nil {
		return nil
	}
	var gs, us []Record
	for id := range m.gnbs {
		if name, v, ok := m.gnbRecord(id); ok {
			gs = append(gs, Record{Key: gnbKey(name), Value: v})
		}
	}
	for k := range m.byRAN {
		if name, v, ok := m.ueRecord(k); ok {
			us = append(us, Record{Key: ueKey(name, k.ran), Value: v})
		}
	}
	sortRecords(gs)
	sortRecords(us)
	return append(gs, us...)
}

func sortRecords(r []Record) {
	sort.Slice(r, func(i, j int) bool { return bytes.Compare(r[i].Key, r[j].Key) < 0 })
}

// ErrReplicationOff is returned by Import on a machine without
// Config.Replicate.
var ErrReplicationOff = errors.New("steer: replication is off (Config.Replicate)")

// Import parks a peer's records (changes or a bulk export, in the order
// they were produced). A record that does not decode is refused with an
// error naming it; the others are applied.
func (m *Machine) Import(recs []Record) error {
	if m.rep == nil {
		return ErrReplicationOff
	}
	var errs []error
	for i, r := range recs {
		if err := m.importOne(r); err != nil {
			errs = append(errs, fmt.Errorf("record %d: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

func (m *Machine) parkedOf(name string) *parkedGNB {
	p := m.rep.parked[name]
	if p == nil {
		p = &parkedGNB{amfs: map[string][]byte{}, ues: map[uint32]parkedUE{}}
		m.rep.parked[name] = p
	}
	return p
}

func (m *Machine) importOne(r Record) error {
	if len(r.Key) == 0 {
		return errors.New("empty key")
	}
	switch r.Key[0] {
	case recGNB:
		name := string(r.Key[1:])
		if name == "" {
			return errors.New("gNB record without a name")
		}
		if r.Deleted {
			// The gNB left the peer: its UEs went with it.
			delete(m.rep.parked, name)
			return nil
		}
		req, amfs, target, err := decodeGNBValue(r.Value)
		if err != nil {
			return fmt.Errorf("gNB %q: %w", name, err)
		}
		p := m.parkedOf(name)
		p.hasSetup, p.setupReq, p.amfs, p.target = true, req, amfs, target
		return nil
	case recUE:
		name, ran, err := decodeUEKey(r.Key[1:])
		if err != nil {
			return err
		}
		if r.Deleted {
			if p := m.rep.parked[name]; p != nil {
				delete(p.ues, ran)
			}
			return nil
		}
		amf, id, err := decodeUEValue(r.Value)
		if err != nil {
			return fmt.Errorf("UE %s/%d: %w", name, ran, err)
		}
		m.parkedOf(name).ues[ran] = parkedUE{amf: amf, amfID: id}
		return nil
	}
	return fmt.Errorf("unknown record type %q", r.Key[0])
}

// Imported returns the parked records in Export's form and order: what a
// standby would resume.
func (m *Machine) Imported() []Record {
	if m.rep == nil {
		return nil
	}
	var gs, us []Record
	for name, p := range m.rep.parked {
		if p.hasSetup {
			gs = append(gs, Record{Key: gnbKey(name), Value: encodeGNBValue(p.setupReq, p.amfs, p.target)})
		}
		for ran, u := range p.ues {
			v := []byte{recVersion}
			v = appendBytes(v, []byte(u.amf))
			v = binary.BigEndian.AppendUint64(v, u.amfID)
			us = append(us, Record{Key: ueKey(name, ran), Value: v})
		}
	}
	sortRecords(gs)
	sortRecords(us)
	return append(gs, us...)
}

// ParkedUEs is the number of imported UE records waiting for their gNB.
func (m *Machine) ParkedUEs() int {
	if m.rep == nil {
		return 0
	}
	n := 0
	for _, p := range m.rep.parked {
		n += len(p.ues)
	}
	return n
}

// --- decoding (every field length-checked: records come off the network) ---

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("truncated length")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("field of %d bytes, %d left", n, len(r.b))
		return nil
	}
	v := append([]byte(nil), r.b[:n]...)
	r.b = r.b[n:]
	return v
}

func (r *reader) fixed(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = fmt.Errorf("want %d bytes, %d left", n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// version reads the record's version, one of known.
func (r *reader) version(known ...byte) byte {
	v := r.fixed(1)
	if r.err != nil {
		return 0
	}
	for _, k := range known {
		if v[0] == k {
			return k
		}
	}
	r.err = fmt.Errorf("record version %d, want one of %v", v[0], known)
	return 0
}

func (r *reader) addrPort() netip.AddrPort {
	raw := r.bytes()
	port := r.fixed(2)
	if r.err != nil {
		return netip.AddrPort{}
	}
	a, ok := netip.AddrFromSlice(raw)
	if !ok {
		r.err = fmt.Errorf("address of %d bytes", len(raw))
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, binary.BigEndian.Uint16(port))
}

func (r *reader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	return r.err
}

func decodeUEKey(b []byte) (string, uint32, error) {
	r := reader{b: b}
	name := string(r.bytes())
	ran := r.fixed(4)
	if err := r.end(); err != nil {
		return "", 0, fmt.Errorf("UE key: %w", err)
	}
	if name == "" {
		return "", 0, errors.New("UE key without a gNB name")
	}
	return name, binary.BigEndian.Uint32(ran), nil
}

func decodeUEValue(b []byte) (string, uint64, error) {
	r := reader{b: b}
	r.version(recVersion)
	amf := string(r.bytes())
	id := r.fixed(8)
	if err := r.end(); err != nil {
		return "", 0, err
	}
	if amf == "" {
		return "", 0, errors.New("no AMF name")
	}
	v := binary.BigEndian.Uint64(id)
	if v >= 1<<40 {
		return "", 0, fmt.Errorf("AMF-UE-NGAP-ID %d out of range (40 bits)", v)
	}
	return amf, v, nil
}

func decodeGNBValue(b []byte) ([]byte, map[string][]byte, abort.Target, error) {
	r := reader{b: b}
	v := r.version(recVersion, recVersionAbort)
	req := r.bytes()
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%d AMF results in %d bytes", n, len(r.b))
	}
	amfs := map[string][]byte{}
	for i := uint64(0); i < n && r.err == nil; i++ {
		name := string(r.bytes())
		resp := r.bytes()
		if r.err == nil && name == "" {
			r.err = errors.New("AMF result without a name")
		}
		amfs[name] = resp
	}
	var t abort.Target
	if v == recVersionAbort {
		tag := r.fixed(4)
		t.Src = r.addrPort()
		t.Dst = r.addrPort()
		if r.err == nil {
			t.Tag = binary.BigEndian.Uint32(tag)
			if !t.Valid() {
				r.err = fmt.Errorf("abort target %v: incomplete or of two address families", t)
			}
		}
	}
	if err := r.end(); err != nil {
		return nil, nil, abort.Target{}, err
	}
	if len(req) == 0 {
		return nil, nil, abort.Target{}, errors.New("no NG Setup Request")
	}
	return req, amfs, t, nil
}

// GNBAbortTarget reads the abort target of a gNB record (a peer's, as
// Import takes it): ok false when r is no gNB record, a deletion, or a
// version 1 record (no target); an error when it does not decode.
func GNBAbortTarget(r Record) (abort.Target, bool, error) {
	if r.Deleted || len(r.Key) < 2 || r.Key[0] != recGNB {
		return abort.Target{}, false, nil
	}
	_, _, t, err := decodeGNBValue(r.Value)
	if err != nil {
		return abort.Target{}, false, fmt.Errorf("gNB %q: %w", r.Key[1:], err)
	}
	return t, t.Valid(), nil
}
