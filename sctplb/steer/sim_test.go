package steer

import (
	"fmt"
	"testing"
	"time"

	"github.com/free5gc/ngap/ngapType"

	ngapl "github.com/telcolb/telcolb/l7parse/ngap"
)

// The simulation wires a Machine to fake gNBs and AMFs that speak real NGAP
// (built and decoded with free5gc/ngap) and answer like a standard AMF/gNB.

var (
	plmn   = [3]byte{0x02, 0xf8, 0x39}
	loc    = ngapl.Location{PLMN: plmn, TAC: 1, CellID: 1}
	amfSet = uint16(1016)
)

func guamiOf(amf int) ngapl.GUAMI {
	return ngapl.GUAMI{PLMN: plmn, Region: 0xca, SetID: amfSet, Pointer: uint8(amf + 1)}
}

type simUE struct {
	ran   uint32
	gnb   AssocID
	msgs  int
	alive bool
}

type fakeAMF struct {
	idx    int
	alive  bool
	nextID uint64
	ues    map[uint64]*simUE // by AMF-UE-NGAP-ID
	assocs map[AssocID]AssocID
	// misrouted counts UE-associated messages naming an ID this AMF never
	// allocated, or pairing it with another UE's RAN ID.
	misrouted int
	resets    int
	relReqs   int
	got       map[int64]int
}

type gnbUE struct {
	amfID uint64
	ok    bool
}

type fakeGNB struct {
	id       AssocID
	setupOK  bool
	failures int
	inbox    map[int64]int
	ues      map[uint32]*gnbUE
	// errInd counts Error Indications from the proxy.
	errInd    int
	badStream int
	autoReply bool
	// retained: the last NG Setup Response said "ues-retained".
	retained bool
}

type sim struct {
	t      testing.TB
	m      *Machine
	now    time.Time
	amfs   []*fakeAMF
	gnbs   map[AssocID]*fakeGNB
	upAMF  map[AssocID]int     // upstream -> AMF index
	upGNB  map[AssocID]AssocID // upstream -> gNB (as the AMF sees it: one NG association per gNB)
	queue  []Event
	fails  map[string]int
	malf   int
	closed map[AssocID]bool
	// sets overrides the AMF Set ID an AMF serves, by index (default amfSet).
	sets map[int]uint16
	// mirror imports m's replication changes (a standby proxy); run checks
	// that it holds what m exports.
	mirror *Machine
	// prev is the sim of a proxy that failed; this one took over.
	prev *sim
	// inherited are the fake AMFs' UE contexts from prev's associations,
	// with their gNB's name (association IDs of two machines overlap).
	inherited map[*simUE]string
	// retain: the fake AMFs keep a gNB's UE contexts over a new NG Setup
	// that asks for UE retention, and answer "ues-retained".
	retain bool
}

func newSim(t testing.TB, n int, policy Policy, weights ...int) *sim {
	t.Helper()
	cfg := Config{Policy: policy, ProxyName: "proxy", Replicate: true}
	for i := 0; i < n; i++ {
		w := 1
		if i < len(weights) {
			w = weights[i]
		}
		cfg.AMFs = append(cfg.AMFs, AMF{Name: fmt.Sprintf("amf%d", i), Weight: w})
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mirror, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{t: t, m: m, mirror: mirror, now: time.Unix(1_700_000_000, 0), gnbs: map[AssocID]*fakeGNB{}, upAMF: map[AssocID]int{}, upGNB: map[AssocID]AssocID{}, fails: map[string]int{}, closed: map[AssocID]bool{}}
	for i := 0; i < n; i++ {
		s.amfs = append(s.amfs, &fakeAMF{idx: i, alive: true, nextID: 1, ues: map[uint64]*simUE{}, assocs: map[AssocID]AssocID{}, got: map[int64]int{}})
	}
	return s
}

func (s *sim) must(b []byte, err error) []byte {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

// run feeds ev and everything it causes until the system is quiet.
func (s *sim) run(ev ...Event) {
	s.t.Helper()
	s.queue = append(s.queue, ev...)
	for steps := 0; len(s.queue) > 0; steps++ {
		if steps > 10_000_000 {
			s.t.Fatal("simulation does not settle")
		}
		e := s.queue[0]
		s.queue = s.queue[1:]
		for _, a := range s.m.Step(s.now, e) {
			s.do(a)
		}
		// After every step; the thousand-UE runs check every 64th step
		// and when they settle (the check walks every record).
		if len(s.m.byRAN)+len(s.m.byAMF) < 512 || steps%64 == 0 || len(s.queue) == 0 {
			if msg := checkInvariants(s.m); msg != "" {
				s.t.Fatalf("after %T: invariants broken: %s", e, msg)
			}
		}
		if len(s.m.byRAN)+len(s.m.byAMF) < 512 || len(s.queue) == 0 {
			if msg := checkReplica(s.m, s.mirror); msg != "" {
				s.t.Fatalf("after %T: replica differs: %s", e, msg)
			}
		}
	}
}

func (s *sim) do(a Action) {
	switch a.Kind {
	case Dial:
		amf := s.amfs[a.AMF]
		if !amf.alive {
			s.queue = append(s.queue, AMFDown{Assoc: a.Assoc})
			return
		}
		s.upAMF[a.Assoc] = a.AMF
		s.queue = append(s.queue, AMFUp{Assoc: a.Assoc, OutStreams: 8})
	case Close:
		if a.Assoc&UpstreamBit != 0 {
			s.closed[a.Assoc] = true
			delete(s.upAMF, a.Assoc)
			s.queue = append(s.queue, AMFDown{Assoc: a.Assoc})
		}
	case Send:
		if a.Assoc&UpstreamBit != 0 {
			s.toAMF(a)
		} else {
			s.toGNB(a)
		}
	case SteeringFailure:
		s.fails[a.Reason]++
	case Malformed:
		s.malf++
	}
}

// decode checks every PDU the proxy emits with the full free5gc decoder
// only where the fakes need the whole PDU (NG Reset); the key comes from the
// fast path, which FuzzKeyMatchesDecode holds to the full decoder.
func (s *sim) decode(b []byte) (ngapl.Key, *ngapType.NGAPPDU) {
	s.t.Helper()
	k, err := ngapl.NewDecoder(ngapl.DecoderConfig{}).Key(b)
	if err != nil {
		s.t.Fatalf("proxy sent undecodable PDU: %v", err)
	}
	if k.Procedure != ngapType.ProcedureCodeNGReset {
		return k, nil
	}
	k, pdu, err := ngapl.Decode(b)
	if err != nil {
		s.t.Fatalf("proxy sent undecodable PDU: %v", err)
	}
	return k, pdu
}

func checkStream(t testing.TB, k ngapl.Key, stream uint16) bool {
	t.Helper()
	return (k.UEAssociated && stream != 0) || (!k.UEAssociated && stream == 0)
}

func (s *sim) toAMF(a Action) {
	idx, ok := s.upAMF[a.Assoc]
	if !ok {
		return // closed
	}
	f := s.amfs[idx]
	k, pdu := s.decode(a.Data)
	if !checkStream(s.t, k, a.Stream) {
		s.t.Errorf("AMF %d got %s on stream %d", idx, ngapl.ProcedureName(k.Procedure), a.Stream)
	}
	f.got[k.Procedure]++
	reply := func(b []byte) { s.queue = append(s.queue, AMFMessage{Assoc: a.Assoc, Stream: 1, Data: b}) }
	switch {
	case k.Procedure == ngapType.ProcedureCodeNGSetup && k.Type == ngapl.Initiating:
		retained := false
		if _, req, err := ngapl.Decode(a.Data); err == nil && s.retain && ngapl.SetupRequestRetainsUEs(req) {
			retained = true
		}
		if retained && s.prev != nil {
			// The AMF knows the gNB by its Global RAN Node ID: the UE
			// contexts it kept from the old proxy's association now
			// belong to this one.
			name := s.m.gnbs[s.gnbOfUp(a.Assoc)].name
			for _, u := range f.ues {
				if og := s.inherited[u]; og != "" && og == name {
					u.gnb = a.Assoc
					delete(s.inherited, u)
				}
			}
		}
		g := guamiOf(idx)
		if set, ok := s.sets[idx]; ok {
			g.SetID = set
		}
		reply(s.must(ngapl.NGSetupResponse(ngapl.SetupResponse{
			AMFName: fmt.Sprintf("amf%d", idx), Served: []ngapType.ServedGUAMIItem{ngapl.ServedGUAMI(g)}, Capacity: 100,
			PLMNSupport: []ngapType.PLMNSupportItem{ngapl.PLMNSupport(plmn, ngapl.SNSSAI{SST: 1}, ngapl.SNSSAI{SST: uint8(idx + 2)})},
			UEsRetained: retained,
		})))
	case k.Procedure == ngapType.ProcedureCodeInitialUEMessage:
		id := f.nextID
		f.nextID++
		f.ues[id] = &simUE{ran: k.RANUEID, gnb: a.Assoc, msgs: 1, alive: true}
		reply(s.must(ngapl.DownlinkNASTransport(id, k.RANUEID, nil)))
	case k.Procedure == ngapType.ProcedureCodeNGReset && k.Type == ngapl.Initiating:
		f.resets++
		full, items, _ := ngapl.ParseNGReset(pdu)
		if full {
			for id, u := range f.ues {
				if u.gnb == a.Assoc {
					delete(f.ues, id)
				}
			}
		}
		for _, it := range items {
			if u := f.ues[it.AMFUEID]; it.HasAMFUEID && u != nil && u.gnb == a.Assoc {
				delete(f.ues, it.AMFUEID)
			} else {
				f.misrouted++
			}
		}
		reply(s.must(ngapl.NGResetAcknowledge(items)))
	case k.UEAssociated:
		u := f.ues[k.AMFUEID]
		if !k.HasAMFUEID || u == nil || u.gnb != a.Assoc || (k.HasRANUEID && u.ran != k.RANUEID) {
			f.misrouted++
			return
		}
		u.msgs++
		switch {
		case k.Procedure == ngapType.ProcedureCodeUplinkNASTransport && u.msgs == 2:
			reply(s.must(ngapl.InitialContextSetupRequest(k.AMFUEID, u.ran, guamiOf(idx), []ngapl.SNSSAI{{SST: 1}}, nil)))
		case k.Procedure == ngapType.ProcedureCodeUEContextReleaseRequest:
			f.relReqs++
			ran := u.ran
			reply(s.must(ngapl.UEContextReleaseCommand(k.AMFUEID, &ran, ngapl.Cause(ngapType.CausePresentNas, 0))))
		case k.Procedure == ngapType.ProcedureCodeUEContextRelease && k.Type == ngapl.Successful:
			delete(f.ues, k.AMFUEID)
		}
	}
}

func (s *sim) toGNB(a Action) {
	g := s.gnbs[a.Assoc]
	if g == nil {
		s.t.Errorf("send to unknown gNB %d", a.Assoc)
		return
	}
	k, pdu := s.decode(a.Data)
	if !checkStream(s.t, k, a.Stream) {
		g.badStream++
	}
	g.inbox[k.Procedure]++
	reply := func(b []byte) {
		s.queue = append(s.queue, GNBMessage{Assoc: g.id, Stream: a.Stream, Data: b})
	}
	switch {
	case k.Procedure == ngapType.ProcedureCodeNGSetup:
		g.setupOK = k.Type == ngapl.Successful
		if g.setupOK {
			_, full, err := ngapl.Decode(a.Data)
			if err != nil {
				s.t.Fatalf("proxy sent undecodable NG Setup Response: %v", err)
			}
			r, err := ngapl.ParseSetupResponse(full)
			g.retained = err == nil && r.UEsRetained
		}
		if !g.setupOK {
			g.failures++
		}
	case k.Procedure == ngapType.ProcedureCodeErrorIndication:
		g.errInd++
	case k.Procedure == ngapType.ProcedureCodeDownlinkNASTransport:
		if u := g.ues[k.RANUEID]; u != nil {
			u.amfID, u.ok = k.AMFUEID, true
		}
	case k.Procedure == ngapType.ProcedureCodeInitialContextSetup && k.Type == ngapl.Initiating:
		reply(s.must(ngapl.InitialContextSetupResponse(k.AMFUEID, k.RANUEID)))
	case k.Procedure == ngapType.ProcedureCodeUEContextRelease && k.Type == ngapl.Initiating:
		delete(g.ues, k.RANUEID)
		reply(s.must(ngapl.UEContextReleaseComplete(k.AMFUEID, k.RANUEID)))
	case k.Procedure == ngapType.ProcedureCodeNGReset && k.Type == ngapl.Initiating:
		full, items, _ := ngapl.ParseNGReset(pdu)
		if full {
			g.ues = map[uint32]*gnbUE{}
		}
		for _, it := range items {
			delete(g.ues, it.RANUEID)
		}
		reply(s.must(ngapl.NGResetAcknowledge(items)))
	}
}

func (s *sim) addGNB(id AssocID) *fakeGNB {
	s.t.Helper()
	g := &fakeGNB{id: id, inbox: map[int64]int{}, ues: map[uint32]*gnbUE{}}
	s.gnbs[id] = g
	s.run(GNBUp{Assoc: id, OutStreams: 4})
	s.run(GNBMessage{Assoc: id, Data: s.must(ngapl.NGSetupRequest(ngapl.NGSetupRequestParams{PLMN: plmn, GNBID: uint32(id), GNBIDBits: 22, TACs: []uint32{1}, Slices: []ngapl.SNSSAI{{SST: 1}}}))})
	return g
}

func (s *sim) initialUE(g AssocID, ran uint32, tmsi *ngapl.STMSI) {
	s.t.Helper()
	s.gnbs[g].ues[ran] = &gnbUE{}
	s.run(GNBMessage{Assoc: g, Stream: 1, Data: s.must(ngapl.InitialUEMessage(ngapl.InitialUE{RANUEID: ran, Location: loc, STMSI: tmsi}))})
}

func (s *sim) uplinkNAS(g AssocID, ran uint32) {
	s.t.Helper()
	u := s.gnbs[g].ues[ran]
	if u == nil || !u.ok {
		s.t.Fatalf("gNB %d UE %d has no AMF UE ID", g, ran)
	}
	s.run(GNBMessage{Assoc: g, Stream: 1, Data: s.must(ngapl.UplinkNASTransport(u.amfID, ran, nil, loc))})
}

func (s *sim) releaseRequest(g AssocID, ran uint32) {
	s.t.Helper()
	u := s.gnbs[g].ues[ran]
	s.run(GNBMessage{Assoc: g, Stream: 1, Data: s.must(ngapl.UEContextReleaseRequest(u.amfID, ran, ngapl.Cause(ngapType.CausePresentRadioNetwork, ngapType.CauseRadioNetworkPresentUserInactivity)))})
}

// owner returns which AMF holds gNB g's UE ran, -1 if none.
func (s *sim) owner(g AssocID, ran uint32) int {
	found := -1
	for i, f := range s.amfs {
		for _, u := range f.ues {
			if u.ran == ran && s.gnbOfUp(u.gnb) == g {
				if found >= 0 {
					s.t.Fatalf("UE %d of gNB %d held by AMFs %d and %d", ran, g, found, i)
				}
				found = i
			}
		}
	}
	return found
}

func (s *sim) gnbOfUp(up AssocID) AssocID {
	if u := s.m.ups[up]; u != nil {
		return u.gnb
	}
	return s.upGNB[up]
}

func (s *sim) kill(amf int) {
	s.amfs[amf].alive = false
	for up, idx := range s.upAMF {
		if idx == amf {
			delete(s.upAMF, up)
			s.queue = append(s.queue, AMFDown{Assoc: up})
		}
	}
	s.amfs[amf].ues = map[uint64]*simUE{}
	s.run()
}

func (s *sim) upstreamOf(g AssocID, amf int) AssocID {
	return s.m.gnbs[g].ups[amf]
}
