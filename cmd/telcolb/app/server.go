package app

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/dataplane"
)

// DefaultStateDir holds the rule store when Config.StateDir is empty.
const DefaultStateDir = "/var/lib/telcolb"

// MaxBodyBytes is the largest request body the API accepts.
const MaxBodyBytes = 1 << 20

// Config configures a Server.
type Config struct {
	Datapath Datapath
	// StateDir holds the rule store (services/<name>.json). Default DefaultStateDir.
	StateDir string
	// Prober runs endpoint health checks. Default NetProber.
	Prober Prober
	// Token, when set, is required as "Authorization: Bearer <Token>".
	Token  string
	Logger *slog.Logger
	// Registry receives the daemon's metrics; /metrics serves it, so it
	// must also be a prometheus.Gatherer. Default: a new registry.
	Registry prometheus.Registerer
	// ProbeTimeUnit is what one of a probe's IntervalSeconds and
	// TimeoutSeconds lasts. Default time.Second; tests shrink it so probe
	// behaviour runs in milliseconds with the same specs.
	ProbeTimeUnit time.Duration
	// N2 configures the N2 proxies of services with N2 set (n2.go).
	N2 N2Config
	// PFCP configures the N4 proxies of services with PFCP set (pfcp.go).
	PFCP PFCPConfig
	// LocalVIPs, when set, makes the VIPs of N2 and PFCP services local
	// addresses of the node while served (localvip.go); nil leaves the
	// node's addresses alone (tests running in the host namespace).
	LocalVIPs *LocalVIPConfig
	// EndpointTrafficMetrics exports per-endpoint packet and byte counters
	// (two series per endpoint; off by default, docs/metrics.md).
	EndpointTrafficMetrics bool
	// Diameter configures the agents of services with Diameter set
	// (diameter.go).
	Diameter DiameterConfig
	// MaxServiceID is the highest service ID handed out. Default: what
	// the datapath reports (MaxServiceID method), else the compiled
	// datapath's limit.
	MaxServiceID uint32
	// Advertise configures VIP advertisement (advertise.go).
	Advertise AdvertiseConfig
	// Ready, when set, holds back every VIP announcement and reports the
	// node not ready (/v1/health status "syncing") while it gives a
	// reason (the HA bulk resync, ha.go).
	Ready ReadyGate
}

// idLimiter is implemented by a datapath that knows how many services its
// maps hold (*dataplane.Datapath does).
type idLimiter interface {
	MaxServiceID() uint32
}

// xdpReporter is implemented by a datapath with an XDP hook
// (*dataplane.Datapath): where it is attached and what it carried.
type xdpReporter interface {
	XDPInterfaces() []string
	XDPStats() (packets, bytes uint64, err error)
}

// migrationReporter is implemented by a datapath that migrated pinned
// maps at load (*dataplane.Datapath does).
type migrationReporter interface {
	ConntrackNotMigrated() uint64
}

// Server is the daemon's REST API over the datapath.
type Server struct {
	dp     Datapath
	store  store
	token  []byte
	log    *slog.Logger
	probes *probeManager
	n2     *n2Manager
	pfcp   *pfcpManager
	local  *localVIPs
	diam   *diameterManager
	adv    *advertiser
	ready  ReadyGate
	gather prometheus.Gatherer
	// reg is cfg.Registry: announcers built later (l2) register on it.
	reg    prometheus.Registerer
	mux    *http.ServeMux
	routes []Route

	// bootID is random per start so clients can tell a restarted daemon
	// (which may have lost rules a client applied) from a reachable one.
	bootID string

	// maxID bounds the service IDs: one ID space, the datapath's.
	maxID uint32
	// damagedFiles counts state files set aside at start (metric).
	damagedFiles int

	mu       sync.Mutex
	services map[string]*storedService
	ids      *idAllocator
	byVIP    vipIndex
	// fullLogged: the "every ID in use" warning was logged since the last
	// time an ID was freed (once, not per refused request).
	fullLogged bool
}

// Route is one method and path the server answers.
type Route struct {
	Method, Path string
}

// NewServer loads the rule store, re-applies every rule to the datapath
// (idempotent, so a restart over pinned maps changes nothing) and starts the
// probes.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Datapath == nil {
		return nil, errors.New("server: Datapath is required")
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.Prober == nil {
		cfg.Prober = NetProber{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ProbeTimeUnit <= 0 {
		cfg.ProbeTimeUnit = time.Second
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	gather, ok := cfg.Registry.(prometheus.Gatherer)
	if !ok {
		return nil, errors.New("server: Registry must also be a prometheus.Gatherer (it is served at /metrics)")
	}
	maxID := cfg.MaxServiceID
	if maxID == 0 {
		maxID = dataplane.MaxServices - 1
		if l, ok := cfg.Datapath.(idLimiter); ok {
			maxID = l.MaxServiceID()
		}
	}
	s := &Server{
		dp:       cfg.Datapath,
		store:    store{stateDir: cfg.StateDir, maxID: maxID},
		log:      cfg.Logger,
		gather:   gather,
		services: map[string]*storedService{},
		ids:      newIDAllocator(maxID),
		byVIP:    vipIndex{},
		maxID:    maxID,
		bootID:   rand.Text(),
		ready:    cfg.Ready,
	}
	if cfg.Token != "" {
		s.token = []byte(cfg.Token)
	}
	s.reg = cfg.Registry
	s.n2 = newN2Manager(cfg.N2, cfg.Registry, cfg.Logger)
	s.pfcp = newPFCPManager(cfg.PFCP, cfg.StateDir, cfg.Registry, cfg.Logger)
	local, err := newLocalVIPs(cfg.LocalVIPs, cfg.StateDir, cfg.Logger)
	if err != nil {
		return nil, err
	}
	s.local = local
	s.diam = newDiameterManager(cfg.Diameter, s.n2.sctpTransport, cfg.Registry, cfg.Logger)
	s.probes = newProbeManager(cfg.Prober, cfg.ProbeTimeUnit, cfg.Logger, s.pushHealth)
	loaded, damaged, ignored, err := s.store.load()
	if err != nil {
		s.pfcp.close()
		s.diam.close()
		_ = s.n2.close()
		return nil, fmt.Errorf("server: %w", err)
	}
	for _, p := range ignored {
		s.log.Info("ignoring a file that is not a service file in the rule store", "path", p)
	}
	// Probe verdicts before anything is programmed: a restart must not
	// put a dead endpoint back into rotation.
	down, badHealth, err := s.store.loadHealth()
	if err != nil {
		s.pfcp.close()
		s.diam.close()
		_ = s.n2.close()
		return nil, fmt.Errorf("server: %w", err)
	}
	if badHealth != nil {
		damaged = append(damaged, *badHealth)
	}
	for _, d := range damaged {
		s.log.Error("state file damaged, moved aside; the rest of the state loads", "file", d.path, "movedTo", d.movedTo, "reason", d.reason)
	}
	s.damagedFiles = len(damaged)
	s.probes.seed(down)
	if err := s.restoreServices(loaded); err != nil {
		s.probes.close()
		s.pfcp.close()
		s.diam.close()
		_ = s.n2.close()
		return nil, err
	}
	// Local VIPs of services deleted while the daemon was down go now; the
	// restored ones were kept throughout (no flap).
	s.local.reconcile()
	if err := cfg.Registry.Register(&collector{s: s, endpointTraffic: cfg.EndpointTrafficMetrics}); err != nil {
		s.probes.close()
		s.pfcp.close()
		s.diam.close()
		_ = s.n2.close()
		return nil, fmt.Errorf("server: register metrics: %w", err)
	}
	if c, ok := cfg.Ready.(interface{ Collector() prometheus.Collector }); ok {
		if err := cfg.Registry.Register(c.Collector()); err != nil {
			s.probes.close()
			s.pfcp.close()
			s.diam.close()
			_ = s.n2.close()
			return nil, fmt.Errorf("server: register HA metrics: %w", err)
		}
	}
	if s.adv, err = s.newAdvertiser(cfg.Advertise, cfg.StateDir); err != nil {
		s.probes.close()
		s.pfcp.close()
		_ = s.n2.close()
		return nil, fmt.Errorf("server: %w", err)
	}
	if err := cfg.Registry.Register(&advCollector{a: s.adv}); err != nil {
		s.adv.close()
		s.probes.close()
		s.pfcp.close()
		_ = s.n2.close()
		return nil, fmt.Errorf("server: register metrics: %w", err)
	}
	if cfg.N2.Replica != nil {
		// The N2 takeover ABORTs only the VIPs this node owns.
		cfg.N2.Replica.setOwner(s.adv.vipOwner)
		// ... and none while the L2 election hears the peer long after
		// the sync last did (n2alive.go).
		cfg.N2.Replica.setL2Heard(s.adv.l2HeardAt)
	}
	s.log.Info("rule store loaded", "services", len(loaded), "damaged", len(damaged), "path", s.store.dir(), "maxServices", maxID, "bootID", s.bootID)
	s.buildMux()
	return s, nil
}

// restoreServices programs the stored services. The lock is held so that a
// probe flipping meanwhile waits for its service to be known.
func (s *Server) restoreServices(loaded []storedService) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range loaded {
		ss := loaded[i]
		if len(ss.IDs) > 1 {
			// Written by a daemon that made one rule per VIP: one rule now
			// carries them all.
			legacy := ss
			ss.IDs = ss.IDs[:1]
			s.dropExtraIDs(&legacy, &ss)
		}
		// Probes first: program reads their (restored) verdicts.
		s.probes.sync(ss.Service)
		if err := s.program(&ss); err != nil {
			return fmt.Errorf("server: re-apply service %s: %w", ss.Service.Name, err)
		}
		if len(loaded[i].IDs) > 1 {
			// Persist the released IDs: otherwise the next start would see
			// them both here and in whichever service reuses them.
			if err := s.store.save(ss); err != nil {
				return fmt.Errorf("server: %w", err)
			}
		}
		s.services[ss.Service.Name] = &ss
		s.index(nil, &ss)
	}
	return nil
}

// index moves a service's IDs and VIPs from old to next in the allocator
// and the VIP index (either may be nil).
func (s *Server) index(old, next *storedService) {
	if old != nil {
		for _, id := range old.IDs {
			s.ids.release(id)
		}
		s.byVIP.remove(old.Service)
		s.fullLogged = false
	}
	if next != nil {
		for _, id := range next.IDs {
			s.ids.take(id)
		}
		s.byVIP.add(next.Service)
	}
}

// Close withdraws the announced VIPs first (the routers move traffic away
// while this node still forwards), then stops the probes. The datapath is
// left as it is: rules and connections survive a daemon restart.
func (s *Server) Close() error {
	s.adv.close()
	s.probes.close()
	s.pfcp.close()
	s.diam.close()
	return s.n2.close()
}

// Routes lists every method and path the server registers.
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

func (s *Server) buildMux() {
	type handlers map[string]http.HandlerFunc
	table := []struct {
		path string
		h    handlers
	}{
		{"/v1/services", handlers{http.MethodGet: s.listServices, http.MethodPost: s.createService}},
		{"/v1/services/{name}", handlers{http.MethodGet: s.getService, http.MethodPut: s.putService, http.MethodDelete: s.deleteService}},
		{"/v1/conntrack", handlers{http.MethodGet: s.listConntrack, http.MethodDelete: s.flushConntrack}},
		{"/v1/health", handlers{http.MethodGet: s.health}},
		{"/v1/advertisement", handlers{http.MethodGet: s.getAdvertisement, http.MethodPut: s.putAdvertisement}},
		{"/v1/vips", handlers{http.MethodGet: s.listVIPs}},
		{"/v1/ha", handlers{http.MethodGet: s.getHA}},
		{"/metrics", handlers{http.MethodGet: promhttp.HandlerFor(s.gather, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError)}).ServeHTTP}},
		{"/openapi.yaml", handlers{http.MethodGet: serveOpenAPI}},
	}
	s.mux = http.NewServeMux()
	for _, e := range table {
		methods := make([]string, 0, len(e.h))
		for m := range e.h {
			methods = append(methods, m)
			s.routes = append(s.routes, Route{Method: m, Path: e.path})
		}
		sort.Strings(methods)
		allow := strings.Join(methods, ", ")
		h := e.h
		// One pattern per path with our own method dispatch, so a wrong
		// method gets a JSON 405 like every other error.
		s.mux.HandleFunc(e.path, func(w http.ResponseWriter, r *http.Request) {
			fn, ok := h[r.Method]
			if !ok {
				w.Header().Set("Allow", allow)
				writeError(w, http.StatusMethodNotAllowed, "", fmt.Sprintf("method %s not allowed; use %s", r.Method, allow))
				return
			}
			fn(w, r)
		})
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "", fmt.Sprintf("no such resource %s", r.URL.Path))
	})
	sort.Slice(s.routes, func(i, j int) bool {
		if s.routes[i].Path != s.routes[j].Path {
			return s.routes[i].Path < s.routes[j].Path
		}
		return s.routes[i].Method < s.routes[j].Method
	})
}

// ServeHTTP authenticates the request and dispatches it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.token != nil && !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="telcolb"`)
		writeError(w, http.StatusUnauthorized, "", "missing or wrong bearer token")
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) authorized(r *http.Request) bool {
	// The scheme is case-insensitive (RFC 7235 section 2.1).
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got = strings.TrimLeft(got, " ")
	// Hashing first makes the comparison constant-time in the length too.
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256(s.token)
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(api.OpenAPI)
}

// httpError is an API failure with its status code.
type httpError struct {
	code  int
	field string
	msg   string
}

func (e *httpError) Error() string { return e.msg }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, field, msg string) {
	writeJSON(w, code, api.Error{Field: field, Message: msg})
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	if errors.As(err, &he) {
		writeError(w, he.code, he.field, he.msg)
		return
	}
	var fe *api.FieldError
	if errors.As(err, &fe) {
		writeError(w, http.StatusBadRequest, fe.Field, fe.Message)
		return
	}
	if errors.Is(err, dataplane.ErrCapacity) {
		// A full datapath table (endpoint counter slots, maglev tables):
		// the request is fine, there is no room for it.
		s.log.Warn("request refused: datapath full", "method", r.Method, "path", r.URL.Path, "error", err)
		field := "endpoints"
		if errors.Is(err, dataplane.ErrMaglevCapacity) {
			field = "select"
		}
		writeError(w, http.StatusInsufficientStorage, field, err.Error())
		return
	}
	s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	writeError(w, http.StatusInternalServerError, "", err.Error())
}

// decodeService reads a JSON Service strictly: unknown fields, trailing
// data, wrong types and oversized bodies are all rejected with the reason.
func decodeService(w http.ResponseWriter, r *http.Request) (api.Service, error) {
	var svc api.Service
	err := decodeStrict(w, r, &svc)
	return svc, err
}

// decodeStrict reads one JSON document into v strictly.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return &httpError{code: http.StatusUnsupportedMediaType, msg: fmt.Sprintf("content type %q: send application/json", ct)}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	var extra json.RawMessage
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return nil
	case err == nil:
		return &httpError{code: http.StatusBadRequest, msg: "trailing data after the JSON document"}
	default:
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return jsonError(err)
		}
		return &httpError{code: http.StatusBadRequest, msg: "trailing data after the JSON document"}
	}
}

func jsonError(err error) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return &httpError{code: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("body larger than %d bytes", mbe.Limit)}
	case errors.As(err, &se):
		return &httpError{code: http.StatusBadRequest, msg: fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, se)}
	case errors.As(err, &te):
		return &httpError{code: http.StatusBadRequest, field: te.Field, msg: fmt.Sprintf("expected %s, got JSON %s", te.Type, te.Value)}
	case errors.Is(err, io.EOF):
		return &httpError{code: http.StatusBadRequest, msg: "empty body: send a JSON document"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &httpError{code: http.StatusBadRequest, msg: "truncated JSON document"}
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		f = strings.Trim(f, `"`)
		return &httpError{code: http.StatusBadRequest, field: f, msg: fmt.Sprintf("unknown field %q", f)}
	}
	return &httpError{code: http.StatusBadRequest, msg: fmt.Sprintf("invalid JSON: %v", err)}
}

func (s *Server) listServices(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	names := make([]string, 0, len(s.services))
	for n := range s.services {
		names = append(names, n)
	}
	sort.Strings(names)
	list := make([]storedService, 0, len(names))
	for _, n := range names {
		list = append(list, cloneStored(s.services[n]))
	}
	s.mu.Unlock()
	out := make([]api.ServiceStatus, 0, len(list))
	for _, ss := range list {
		st, err := s.status(ss)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out = append(out, st)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getService(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.mu.Lock()
	cur, ok := s.services[name]
	var ss storedService
	if ok {
		ss = cloneStored(cur)
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "", fmt.Sprintf("service %q not found", name))
		return
	}
	st, err := s.status(ss)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) createService(w http.ResponseWriter, r *http.Request) {
	svc, err := decodeService(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.apply(w, r, svc, false)
}

func (s *Server) putService(w http.ResponseWriter, r *http.Request) {
	svc, err := decodeService(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	name := r.PathValue("name")
	if svc.Name == "" {
		svc.Name = name
	}
	if svc.Name != name {
		writeError(w, http.StatusBadRequest, "name", fmt.Sprintf("%q does not match the URL's service name %q", svc.Name, name))
		return
	}
	s.apply(w, r, svc, true)
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request, svc api.Service, replace bool) {
	if err := api.Validate(&svc); err != nil {
		s.fail(w, r, err)
		return
	}
	api.SetDefaults(&svc)
	ss, code, err := s.store1(svc, replace)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.adv.trigger()
	st, err := s.status(ss)
	if err != nil {
		// The rule is in place; only the counters are missing.
		s.log.Warn("read service counters", "service", svc.Name, "error", err)
		st = s.statusWithoutCounters(ss)
	}
	writeJSON(w, code, st)
}

// store1 creates or replaces one service under the lock: datapath first,
// then the store, undoing the datapath change if the store cannot be written.
func (s *Server) store1(svc api.Service, replace bool) (storedService, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, exists := s.services[svc.Name]
	if exists && !replace {
		return storedService{}, 0, &httpError{code: http.StatusConflict, field: "name", msg: fmt.Sprintf("service %q already exists", svc.Name)}
	}
	if exists && reflect.DeepEqual(old.Service, svc) {
		return cloneStored(old), http.StatusOK, nil
	}
	if err := s.checkOverlap(svc); err != nil {
		return storedService{}, 0, err
	}
	next := &storedService{Service: svc}
	var err error
	if next.IDs, err = s.allocateIDs(old, 1); err != nil {
		return storedService{}, 0, err
	}
	// Rules of an older daemon (one per VIP) hold the secondary VIPs' keys.
	s.dropExtraIDs(old, next)
	if err := s.program(next); err != nil {
		s.restore(old, next)
		return storedService{}, 0, err
	}
	if err := s.store.save(*next); err != nil {
		s.restore(old, next)
		return storedService{}, 0, err
	}
	s.services[svc.Name] = next
	s.index(old, next)
	s.dropExtraIDs(old, next)
	s.probes.sync(svc)
	code := http.StatusOK
	if !exists {
		code = http.StatusCreated
	}
	s.log.Info("service applied", "service", svc.Name, "ids", next.IDs, "created", !exists)
	return cloneStored(next), code, nil
}

// restore puts the previous version of a service back in the datapath after
// a failed change (or removes the new one).
func (s *Server) restore(old, failed *storedService) {
	if old != nil {
		if err := s.program(old); err != nil {
			s.log.Error("restore service after failed change", "service", old.Service.Name, "error", err)
		}
	}
	s.dropExtraIDs(failed, old)
}

// dropExtraIDs deletes the datapath rules of from that to does not use
// (fewer secondary VIPs, or a failed create).
func (s *Server) dropExtraIDs(from, to *storedService) {
	if from == nil {
		return
	}
	keep := map[uint32]bool{}
	if to != nil {
		for _, id := range to.IDs {
			keep[id] = true
		}
	}
	for _, id := range from.IDs {
		if !keep[id] {
			if err := s.dp.DeleteService(id); err != nil {
				s.log.Error("delete datapath rule", "service", from.Service.Name, "id", id, "error", err)
			}
		}
	}
}

// allocateIDs keeps the ID a service already has, or picks the lowest free
// one (taken for good once the service is stored).
func (s *Server) allocateIDs(old *storedService, n int) ([]uint32, error) {
	ids := make([]uint32, 0, n)
	if old != nil {
		ids = append(ids, old.IDs[:min(n, len(old.IDs))]...)
	}
	if len(ids) < n {
		id, ok := s.ids.lowestFree()
		if !ok {
			msg := fmt.Sprintf("service limit reached: the datapath holds %d services and all are in use", s.maxID)
			if !s.fullLogged {
				s.log.Warn("service refused: every datapath service ID is in use", "maxServices", s.maxID)
				s.fullLogged = true
			}
			return nil, &httpError{code: http.StatusInsufficientStorage, msg: msg}
		}
		ids = append(ids, id)
	}
	return ids, nil
}

type portRange struct{ lo, hi uint16 }

func rangeOf(s api.Service) portRange {
	if s.PortEnd == 0 {
		return portRange{s.Port, s.Port}
	}
	return portRange{s.Port, s.PortEnd}
}

// program writes every datapath rule of a service with the current probe
// verdicts.
func (s *Server) program(ss *storedService) error {
	if ss.Service.Diameter != nil {
		s.n2.remove(ss.Service.Name)
		s.pfcp.remove(ss.Service.Name)
		return s.local.served(ss.Service, s.diam.apply(ss.Service, func() error {
			for _, id := range ss.IDs {
				if err := s.dp.DeleteService(id); err != nil {
					return fmt.Errorf("datapath delete service %s (id %d) before its Diameter agent: %w", ss.Service.Name, id, err)
				}
			}
			return s.local.hold(ss.Service)
		}))
	}
	s.diam.remove(ss.Service.Name)
	if ss.Service.PFCP {
		s.n2.remove(ss.Service.Name)
		return s.local.served(ss.Service, s.pfcp.apply(ss.Service, func() error {
			for _, id := range ss.IDs {
				if err := s.dp.DeleteService(id); err != nil {
					return fmt.Errorf("datapath delete service %s (id %d) before its PFCP proxy: %w", ss.Service.Name, id, err)
				}
			}
			return s.local.hold(ss.Service)
		}))
	}
	s.pfcp.remove(ss.Service.Name)
	if ss.Service.N2 {
		// A service that was L4 before must lose its rule, or the datapath
		// would keep forwarding the VIP away from the local proxy.
		return s.local.served(ss.Service, s.n2.apply(ss.Service, func() error {
			for _, id := range ss.IDs {
				if err := s.dp.DeleteService(id); err != nil {
					return fmt.Errorf("datapath delete service %s (id %d) before its N2 proxy: %w", ss.Service.Name, id, err)
				}
			}
			return s.local.hold(ss.Service)
		}))
	}
	s.n2.remove(ss.Service.Name)
	s.local.release(ss.Service.Name)
	down := make([]bool, len(ss.Service.Endpoints))
	for i, ep := range ss.Service.Endpoints {
		addr, err := netip.ParseAddr(ep.Address)
		if err != nil {
			return fmt.Errorf("endpoint %d: %w", i, err)
		}
		healthy, _ := s.probes.health(ss.Service.Name, netip.AddrPortFrom(addr, ep.Port))
		down[i] = !healthy
	}
	rules, err := toDatapath(ss.Service, ss.IDs, down)
	if err != nil {
		return err
	}
	for _, rule := range rules {
		if err := s.dp.UpsertService(rule); err != nil {
			return fmt.Errorf("datapath upsert service %s (id %d): %w", ss.Service.Name, rule.ID, err)
		}
	}
	return nil
}

// pushHealth reprograms a service after a probe flipped one of its
// endpoints.
func (s *Server) pushHealth(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.services[name]
	if !ok {
		return
	}
	if err := s.program(ss); err != nil {
		s.log.Error("push endpoint health to the datapath", "service", name, "error", err)
	}
	s.adv.trigger()
	// Persisted so that a restart keeps the verdict.
	if err := s.store.saveHealth(s.probes.down()); err != nil {
		s.log.Error("persist endpoint health", "service", name, "error", err)
	}
}

func (s *Server) deleteService(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.services[name]
	if !ok {
		writeError(w, http.StatusNotFound, "", fmt.Sprintf("service %q not found", name))
		return
	}
	if err := s.store.remove(name); err != nil {
		s.fail(w, r, err)
		return
	}
	delete(s.services, name)
	s.index(ss, nil)
	s.probes.remove(name)
	s.n2.remove(name)
	s.pfcp.remove(name)
	s.local.release(name)
	s.diam.remove(name)
	for _, id := range ss.IDs {
		if err := s.dp.DeleteService(id); err != nil {
			// The store no longer has it; the next start re-applies only
			// what is stored, and the ID is free for reuse which
			// overwrites the stale rule.
			s.log.Error("datapath delete service", "service", name, "id", id, "error", err)
		}
	}
	s.adv.trigger()
	s.log.Info("service deleted", "service", name, "ids", ss.IDs)
	w.WriteHeader(http.StatusNoContent)
}

func cloneStored(ss *storedService) storedService {
	out := storedService{IDs: append([]uint32(nil), ss.IDs...), Service: ss.Service}
	out.Service.SecondaryVIPs = append([]string(nil), ss.Service.SecondaryVIPs...)
	out.Service.Endpoints = append([]api.Endpoint(nil), ss.Service.Endpoints...)
	if ss.Service.Probe != nil {
		p := *ss.Service.Probe
		out.Service.Probe = &p
	}
	if ss.Service.Diameter != nil {
		d := *ss.Service.Diameter
		d.Applications = append([]uint32(nil), d.Applications...)
		out.Service.Diameter = &d
	}
	return out
}

func (s *Server) statusWithoutCounters(ss storedService) api.ServiceStatus {
	st := api.ServiceStatus{Service: ss.Service, Endpoints: make([]api.EndpointStatus, len(ss.Service.Endpoints))}
	for i, ep := range ss.Service.Endpoints {
		healthy, lastErr := true, ""
		if addr, err := netip.ParseAddr(ep.Address); err == nil {
			healthy, lastErr = s.probes.health(ss.Service.Name, netip.AddrPortFrom(addr, ep.Port))
		}
		st.Endpoints[i] = api.EndpointStatus{Address: ep.Address, Port: ep.Port, Weight: ep.Weight, Healthy: healthy, LastProbeError: lastErr}
	}
	return st
}

// status adds health and the counters of every datapath rule of a service.
func (s *Server) status(ss storedService) (api.ServiceStatus, error) {
	st := s.statusWithoutCounters(ss)
	if ss.Service.N2 {
		s.n2.fill(&st)
		return st, nil
	}
	if ss.Service.PFCP {
		s.pfcp.fill(&st)
		return st, nil
	}
	if ss.Service.Diameter != nil {
		s.diam.fill(&st)
		return st, nil
	}
	n := len(ss.Service.Endpoints)
	for _, id := range ss.IDs {
		stats, err := s.dp.ServiceStats(id, n)
		if err != nil {
			return st, fmt.Errorf("datapath stats of service %s (id %d): %w", ss.Service.Name, id, err)
		}
		st.Packets += stats.Packets
		st.Bytes += stats.Bytes
		st.ActiveConnections += stats.Active
		st.SCTPPathSteerings += stats.PathSteerings
		st.SlowPathPackets += stats.SlowPathPackets
		for i := 0; i < n && i < len(stats.Endpoints); i++ {
			e := stats.Endpoints[i]
			st.Endpoints[i].Packets += e.Packets
			st.Endpoints[i].Bytes += e.Bytes
			st.Endpoints[i].Sessions += e.Sessions
			st.Endpoints[i].ActiveConnections += e.Active
		}
	}
	return st, nil
}

func (s *Server) idNames() map[uint32]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := map[uint32]string{}
	for n, ss := range s.services {
		for _, id := range ss.IDs {
			names[id] = n
		}
	}
	return names
}

func (s *Server) listConntrack(w http.ResponseWriter, r *http.Request) {
	conns, err := s.dp.Conntrack()
	if err != nil {
		s.fail(w, r, fmt.Errorf("datapath conntrack dump: %w", err))
		return
	}
	names := s.idNames()
	out := make([]api.Conn, 0, len(conns))
	for _, c := range conns {
		out = append(out, toAPIConn(c, names))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) flushConntrack(w http.ResponseWriter, r *http.Request) {
	if err := s.dp.FlushConntrack(); err != nil {
		s.fail(w, r, fmt.Errorf("datapath conntrack flush: %w", err))
		return
	}
	s.log.Info("conntrack flushed")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	n := len(s.services)
	s.mu.Unlock()
	ifaces := s.dp.Interfaces()
	if ifaces == nil {
		ifaces = []string{}
	}
	h := api.Health{Status: "ok", Interfaces: ifaces, Services: n, MaxServices: int(s.maxID), AttachMode: s.dp.AttachMode(), BootID: s.bootID}
	if x, ok := s.dp.(xdpReporter); ok {
		h.XDPInterfaces = x.XDPInterfaces()
	}
	if m, ok := s.dp.(migrationReporter); ok {
		h.ConntrackNotMigrated = m.ConntrackNotMigrated()
	}
	code := http.StatusOK
	if s.ready != nil {
		if why := s.ready.Waiting(); why != "" {
			// 503 so that a readiness check (telcolbctl ready, a load balancer's
			// health check) fails while the node is not ready; the body is
			// the same Health, clients read it either way.
			h.Status, h.NotReady = "syncing", why
			code = http.StatusServiceUnavailable
		}
	}
	writeJSON(w, code, h)
}

// ensure the datapath types stay what the conversion expects.
var _ = dataplane.MaxEndpoints
