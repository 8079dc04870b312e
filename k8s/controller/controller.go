// Package controller is the telcolb Kubernetes controller: it gives
// LoadBalancer Services of its loadBalancerClass VIPs from ipam pools,
// programs every telcolb daemon through the REST API, and reports the result
// in status, conditions and Events.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/telcolb/telcolb/k8s/annotations"
	"github.com/telcolb/telcolb/k8s/apis/v1alpha1"
	"github.com/telcolb/telcolb/k8s/ipam"
)

const (
	// DefaultClass is the loadBalancerClass handled unless configured.
	DefaultClass = "telcolb.io/lb"
	// Finalizer keeps a Service until its VIPs are released and its rules
	// removed from every daemon.
	Finalizer = "telcolb.io/finalizer"
	// AllocationAnnotation records the Service's VIPs (JSON Allocation).
	AllocationAnnotation = annotations.Prefix + "allocations"
	// ConditionType is the Service condition the controller maintains.
	ConditionType = "telcolb.io/Ready"
	// DefaultPool is used when a Service selects no pool.
	DefaultPool = "defaultPool"
)

// Condition reasons (also Event reasons).
const (
	ReasonProgrammed        = "Programmed"
	ReasonInvalidAnnotation = "InvalidAnnotation"
	ReasonPoolExhausted     = "PoolExhausted"
	ReasonIPConflict        = "IPConflict"
	ReasonAllocationFailed  = "AllocationFailed"
	ReasonInvalidService    = "InvalidService"
	ReasonNoEndpoints       = "NoReadyEndpoints"
	ReasonDaemonError       = "DaemonError"
	ReasonAnnotationNote    = "AnnotationNote"
	ReasonEndpointSkipped   = "EndpointSkipped"
	ReasonReleased          = "Released"
	// ReasonNotProgrammed: rules are wanted but no daemon holds them yet
	// (none synced).
	ReasonNotProgrammed = "NotProgrammed"
	// ReasonAllocationKept: a VIP the configuration no longer allows is
	// kept because only the controller's configuration changed.
	ReasonAllocationKept = "AllocationKept"
	// ReasonVIPChanged: the Service's VIPs moved after the user changed it.
	ReasonVIPChanged = "VIPChanged"
	// ReasonLoxilbIgnored: loxilb.io/ annotations on a Service while the
	// controller does not read them.
	ReasonLoxilbIgnored = "LoxilbAnnotationsIgnored"
)

// Config configures the controller.
type Config struct {
	// Class is the loadBalancerClass to handle (default DefaultClass).
	Class string
	// Pools are the VIP pools.
	Pools []ipam.PoolConfig
	// DefaultPool is used without a poolSelect annotation (default DefaultPool).
	DefaultPool string
	// AcceptLoxilbAnnotations also reads loxilb.io/ annotation names.
	AcceptLoxilbAnnotations bool
	// ReallocateDisallowed lets every Service's VIPs that the configuration
	// no longer allows move at once; by default they are kept until the
	// user changes the Service or sets telcolb.io/reallocate.
	ReallocateDisallowed bool
	// Daemons are fixed daemon base URLs; DaemonService discovers them instead.
	Daemons []string
	// DaemonService ("namespace/name") is the daemons' headless Service
	// whose EndpointSlices list the daemons; DaemonPort/DaemonScheme build
	// the URLs.
	DaemonService string
	DaemonPort    int
	DaemonScheme  string
	Dial          DialFunc
	// MaxConcurrentReconciles (default 32): reconciles mostly wait on the
	// API server and daemons, so more than the CPU count pays off (cold
	// start of 5,000 Services on 2 CPUs: 8 workers 38-56 s, 32 workers
	// 32-35 s).
	MaxConcurrentReconciles int
	// HealthInterval and ResyncInterval: see DaemonsConfig.
	HealthInterval time.Duration
	ResyncInterval time.Duration
	Registerer     prometheus.Registerer
	Logger         *slog.Logger
	// Name makes controller names unique when several run in one process
	// (tests); default "telcolb-service".
	Name string
	// EnableCRDs reads the telcolb.io IPPool, BGPPeer and Advertisement
	// objects (the CRDs must be installed): IPPools become pools next to
	// Pools, and every daemon gets its advertisement configuration.
	EnableCRDs bool
	// SecretNamespace holds the Secrets BGPPeer passwords come from (the
	// controller's namespace).
	SecretNamespace string
	// DaemonNodes maps a fixed daemon URL to its node's name; discovered
	// daemons are mapped by their endpoint's nodeName, and any other by
	// matching the URL's host to a node's InternalIP.
	DaemonNodes map[string]string
	// L2HeartbeatPort is the UDP port L2 members send heartbeats to
	// (default DefaultL2HeartbeatPort).
	L2HeartbeatPort int
}

// DefaultL2HeartbeatPort is where the daemons of an L2 group exchange
// liveness heartbeats unless configured.
const DefaultL2HeartbeatPort = 7947

// Reconciler reconciles Services of the configured class.
type Reconciler struct {
	cfg      Config
	client   client.Client
	recorder record.EventRecorder
	alloc    *ipam.Allocator
	pools    *poolState
	adv      *advertiser
	daemons  *Daemons
	metrics  *Metrics
	log      *slog.Logger

	primeMu sync.Mutex
	primed  bool

	waitMu  sync.Mutex
	waiting map[types.NamespacedName]bool
	wake    chan event.TypedGenericEvent[reconcile.Request]

	notes noteLog
}

// Setup builds the controller on mgr: the Service reconciler, its watches,
// the daemon sync loop and, with DaemonService, daemon discovery.
func Setup(mgr manager.Manager, cfg Config) (*Reconciler, error) {
	if cfg.Class == "" {
		cfg.Class = DefaultClass
	}
	if cfg.DefaultPool == "" {
		cfg.DefaultPool = DefaultPool
	}
	if cfg.MaxConcurrentReconciles <= 0 {
		cfg.MaxConcurrentReconciles = 32
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		cfg.Name = "telcolb-service"
	}
	if cfg.DaemonScheme == "" {
		cfg.DaemonScheme = "http"
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.L2HeartbeatPort == 0 {
		cfg.L2HeartbeatPort = DefaultL2HeartbeatPort
	}
	if cfg.EnableCRDs {
		if err := v1alpha1.AddToScheme(mgr.GetScheme()); err != nil {
			return nil, fmt.Errorf("controller: register telcolb.io types: %w", err)
		}
	}
	if cfg.Dial == nil {
		return nil, errors.New("controller: Dial is required")
	}
	if len(cfg.Daemons) == 0 && cfg.DaemonService == "" {
		return nil, errors.New("controller: set Daemons or DaemonService")
	}
	alloc, err := ipam.New(ipam.Config{Pools: cfg.Pools})
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	m, err := NewMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	r := &Reconciler{
		cfg:    cfg,
		client: mgr.GetClient(),
		// The core/v1 recorder: its aggregation keys on the message, so
		// distinct problems of one Service each get their own Event (the
		// events.k8s.io series would fold them into the first note).
		recorder: mgr.GetEventRecorderFor("telcolb-controller"), //nolint:staticcheck
		alloc:    alloc,
		pools:    &poolState{policies: flagPolicies(cfg.Pools), loaded: !cfg.EnableCRDs},
		metrics:  m,
		log:      cfg.Logger,
		waiting:  map[types.NamespacedName]bool{},
		notes:    noteLog{byService: map[string]*serviceNotes{}},
		wake:     make(chan event.TypedGenericEvent[reconcile.Request], 1024),
	}
	m.observePools(alloc)
	r.daemons, err = NewDaemons(DaemonsConfig{
		Dial: cfg.Dial, Owned: r.owned, HealthInterval: cfg.HealthInterval, ResyncInterval: cfg.ResyncInterval,
		Logger: cfg.Logger, Metrics: m,
	})
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	if len(cfg.Daemons) > 0 {
		if err := r.daemons.SetDaemons(cfg.Daemons); err != nil {
			return nil, fmt.Errorf("controller: %w", err)
		}
		r.daemons.SetNodes(cfg.DaemonNodes)
	}
	if err := mgr.Add(r.daemons); err != nil {
		return nil, fmt.Errorf("controller: add daemon sync: %w", err)
	}
	if err := r.setupWatches(mgr); err != nil {
		return nil, err
	}
	if cfg.EnableCRDs {
		if err := r.setupCRDs(mgr); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Allocator exposes the allocator (tests, metrics).
func (r *Reconciler) Allocator() *ipam.Allocator { return r.alloc }

// Daemons exposes the daemon set.
func (r *Reconciler) Daemons() *Daemons { return r.daemons }

func (r *Reconciler) ours(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeLoadBalancer && svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass == r.cfg.Class
}

func (r *Reconciler) relevant(svc *corev1.Service) bool {
	return r.ours(svc) || controllerutil.ContainsFinalizer(svc, Finalizer)
}

func (r *Reconciler) owned(ctx context.Context, key string) bool {
	ns, name, _ := strings.Cut(key, "/")
	var svc corev1.Service
	if err := r.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &svc); err != nil {
		// Unknown while the cache is unreadable: keep the rules.
		return !apierrors.IsNotFound(err)
	}
	return r.ours(&svc) && svc.DeletionTimestamp.IsZero()
}

// sliceServiceIndex indexes EndpointSlices by the Service they belong to.
// slicesFor looks slices up through it: a label selector scans every slice
// of the namespace, so a cold start of N Services in one namespace cost
// O(N^2) in the reconcilers.
const sliceServiceIndex = "telcolb.io/service-name"

func (r *Reconciler) setupWatches(mgr manager.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &discoveryv1.EndpointSlice{}, sliceServiceIndex, func(o client.Object) []string {
		if name := o.GetLabels()[discoveryv1.LabelServiceName]; name != "" {
			return []string{name}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("controller: index EndpointSlices by Service: %w", err)
	}
	svcPred := predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return r.relevant(e.Object.(*corev1.Service)) },
		DeleteFunc:  func(e event.DeleteEvent) bool { return r.relevant(e.Object.(*corev1.Service)) },
		GenericFunc: func(e event.GenericEvent) bool { return r.relevant(e.Object.(*corev1.Service)) },
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld.(*corev1.Service), e.ObjectNew.(*corev1.Service)
			if !r.relevant(o) && !r.relevant(n) {
				return false
			}
			// Our own writes need no reconcile: the status, and the
			// allocation record and finalizer, which are written by the
			// reconcile that already programmed what they record (at a cold
			// start this halves the reconciles).
			return o.Generation != n.Generation || !sameUserAnnotations(o.Annotations, n.Annotations) ||
				!sameFinalizersBesidesOurs(o.Finalizers, n.Finalizers) || !n.DeletionTimestamp.IsZero() ||
				!equality.Semantic.DeepEqual(o.Spec, n.Spec)
		},
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named(r.cfg.Name).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: r.cfg.MaxConcurrentReconciles,
			// Per-item backoff only: the default adds a 10/s bucket shared by
			// all Services, which turns the optimistic-lock retries of a
			// cold start (cache lagging our own patches) into minutes.
			RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, 30*time.Second),
		}).
		For(&corev1.Service{}, builder.WithPredicates(svcPred)).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(r.sliceToService)).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.nodeToServices), builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				o, n := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
				return !equality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses) || nodeReady(o) != nodeReady(n) ||
					o.Labels[excludeLabel] != n.Labels[excludeLabel]
			},
		})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.podToServices), builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				return e.ObjectOld.GetAnnotations()[networkStatusKey] != e.ObjectNew.GetAnnotations()[networkStatusKey]
			},
		})).
		WatchesRawSource(source.TypedChannel[reconcile.Request, reconcile.Request](r.wake, handler.TypedFuncs[reconcile.Request, reconcile.Request]{
			GenericFunc: func(_ context.Context, e event.TypedGenericEvent[reconcile.Request], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				q.Add(e.Object)
			},
		}))
	if r.cfg.DaemonService != "" {
		ns, name, ok := strings.Cut(r.cfg.DaemonService, "/")
		if !ok || ns == "" || name == "" {
			return fmt.Errorf("controller: DaemonService %q: want namespace/name", r.cfg.DaemonService)
		}
		if err := mgr.Add(&discovery{r: r, namespace: ns, name: name}); err != nil {
			return fmt.Errorf("controller: add daemon discovery: %w", err)
		}
	}
	if err := b.Complete(r); err != nil {
		return fmt.Errorf("controller: build: %w", err)
	}
	return nil
}

// sameUserAnnotations compares annotations without our allocation record.
func sameUserAnnotations(a, b map[string]string) bool {
	n := 0
	for k, v := range a {
		if k == AllocationAnnotation {
			continue
		}
		if w, ok := b[k]; !ok || w != v {
			return false
		}
		n++
	}
	for k := range b {
		if k != AllocationAnnotation {
			n--
		}
	}
	return n == 0
}

// sameFinalizersBesidesOurs: equal, or only our finalizer was added.
func sameFinalizersBesidesOurs(a, b []string) bool {
	if equality.Semantic.DeepEqual(a, b) {
		return true
	}
	return !slices.Contains(a, Finalizer) && slices.Contains(b, Finalizer) && len(b) == len(a)+1 &&
		equality.Semantic.DeepEqual(slices.DeleteFunc(slices.Clone(b), func(f string) bool { return f == Finalizer }), a)
}

func (r *Reconciler) sliceToService(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[discoveryv1.LabelServiceName]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// ourServices lists Services of our class (in namespace ns, or all).
func (r *Reconciler) ourServices(ctx context.Context, opts ...client.ListOption) []corev1.Service {
	var list corev1.ServiceList
	if err := r.client.List(ctx, &list, opts...); err != nil {
		r.log.Error("list services", "error", err)
		return nil
	}
	var out []corev1.Service
	for i := range list.Items {
		if r.ours(&list.Items[i]) {
			out = append(out, list.Items[i])
		}
	}
	return out
}

func (r *Reconciler) nodeToServices(ctx context.Context, _ client.Object) []reconcile.Request {
	var out []reconcile.Request
	for _, s := range r.ourServices(ctx) {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: s.Name}})
	}
	return out
}

func (r *Reconciler) podToServices(ctx context.Context, o client.Object) []reconcile.Request {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return nil
	}
	var out []reconcile.Request
	for _, s := range r.ourServices(ctx, client.InNamespace(pod.Namespace)) {
		if len(s.Spec.Selector) == 0 || !selects(s.Spec.Selector, pod.Labels) {
			continue
		}
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: s.Name}})
	}
	return out
}

func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func key(svc *corev1.Service) string { return svc.Namespace + "/" + svc.Name }

// prime reserves every recorded allocation before the first allocation of
// this process, so a restart never hands a recorded VIP to another Service.
func (r *Reconciler) prime(ctx context.Context) error {
	r.primeMu.Lock()
	defer r.primeMu.Unlock()
	if r.primed {
		return nil
	}
	var list corev1.ServiceList
	if err := r.client.List(ctx, &list); err != nil {
		return fmt.Errorf("prime: list services: %w", err)
	}
	n := 0
	for i := range list.Items {
		svc := &list.Items[i]
		if !r.relevant(svc) {
			continue
		}
		rec, ok, err := readAllocation(svc)
		if err != nil {
			r.log.Warn("unreadable recorded allocation", "service", key(svc), "error", err)
			continue
		}
		if !ok {
			continue
		}
		primary, secondary, _ := rec.addrs()
		sk := rec.SharingKey
		if rec.Generation == 0 && rec.Inputs == "" {
			// Recorded before the sharing key was.
			sk = rawSharingKey(svc, r.cfg.AcceptLoxilbAnnotations)
		}
		o := r.owner(svc, sk)
		for _, ip := range append(primary, secondary...) {
			if err := r.alloc.Assign(o, ip); err != nil {
				r.log.Error("recorded VIP conflicts with another recorded VIP", "service", key(svc), "ip", ip, "error", err)
				continue
			}
			n++
		}
	}
	r.primed = true
	r.metrics.observePools(r.alloc)
	r.log.Info("recorded allocations reserved", "addresses", n, "services", len(list.Items))
	return nil
}

func rawSharingKey(svc *corev1.Service, loxilb bool) string {
	if v, ok := svc.Annotations[annotations.Prefix+annotations.SharingKey]; ok {
		return strings.TrimSpace(v)
	}
	if loxilb {
		return strings.TrimSpace(svc.Annotations[annotations.LoxilbPrefix+annotations.SharingKey])
	}
	return ""
}

func (r *Reconciler) owner(svc *corev1.Service, sharingKey string) ipam.Owner {
	o := ipam.Owner{Service: key(svc), SharingKey: sharingKey}
	for _, p := range svc.Spec.Ports {
		o.Ports = append(o.Ports, ipam.Port{Protocol: string(p.Protocol), Port: uint16(p.Port)})
	}
	if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		keys := make([]string, 0, len(svc.Spec.Selector))
		for k, v := range svc.Spec.Selector {
			keys = append(keys, k+"="+v)
		}
		sort.Strings(keys)
		o.BackendKey = strings.Join(keys, ",")
	}
	return o
}

// Reconcile brings one Service to its desired state.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if err := r.prime(ctx); err != nil {
		return reconcile.Result{}, err
	}
	if !r.pools.isLoaded() {
		// Until the IPPools are read, a Service asking for one would be told
		// it does not exist, and one without a poolSelect annotation could
		// get an address from a pool it would not have chosen.
		return reconcile.Result{RequeueAfter: 200 * time.Millisecond}, nil
	}
	var svc corev1.Service
	if err := r.client.Get(ctx, req.NamespacedName, &svc); err != nil {
		if apierrors.IsNotFound(err) {
			// Gone without our finalizer (removed by hand): still clean up.
			return reconcile.Result{}, r.forget(ctx, req.Namespace+"/"+req.Name)
		}
		return reconcile.Result{}, err
	}
	if !svc.DeletionTimestamp.IsZero() || !r.ours(&svc) {
		if !controllerutil.ContainsFinalizer(&svc, Finalizer) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, r.cleanup(ctx, &svc)
	}
	return r.reconcileOurs(ctx, &svc)
}

func (r *Reconciler) forget(ctx context.Context, k string) error {
	if err := r.daemons.Forget(ctx, k); err != nil {
		return fmt.Errorf("remove rules of %s: %w", k, err)
	}
	r.notes.forget(k)
	if len(r.alloc.ReleaseService(k)) > 0 {
		r.metrics.observePools(r.alloc)
		r.wakeWaiting()
	}
	return nil
}

// cleanup removes rules and VIPs of a Service being deleted or no longer of
// our class/type, then drops the finalizer (and, if the Service lives on,
// our allocation record, condition and ingress).
func (r *Reconciler) cleanup(ctx context.Context, svc *corev1.Service) error {
	k := key(svc)
	if err := r.forget(ctx, k); err != nil {
		r.event(svc, corev1.EventTypeWarning, ReasonDaemonError, "Cleanup", "removing rules: %v", err)
		return err
	}
	if svc.DeletionTimestamp.IsZero() {
		st := svc.DeepCopy()
		st.Status.LoadBalancer.Ingress = nil
		meta.RemoveStatusCondition(&st.Status.Conditions, ConditionType)
		meta.RemoveStatusCondition(&st.Status.Conditions, AnnouncedConditionType)
		if !equality.Semantic.DeepEqual(st.Status, svc.Status) {
			if err := r.client.Status().Patch(ctx, st, client.MergeFrom(svc)); err != nil {
				return fmt.Errorf("clear status of %s: %w", k, err)
			}
		}
		svc = st
	}
	upd := svc.DeepCopy()
	controllerutil.RemoveFinalizer(upd, Finalizer)
	delete(upd.Annotations, AllocationAnnotation)
	if err := r.client.Patch(ctx, upd, client.MergeFrom(svc)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove finalizer of %s: %w", k, err)
	}
	r.event(svc, corev1.EventTypeNormal, ReasonReleased, "Cleanup", "VIPs released and rules removed")
	r.log.Info("service released", "service", k)
	return nil
}

func (r *Reconciler) wakeWaiting() {
	r.waitMu.Lock()
	list := make([]types.NamespacedName, 0, len(r.waiting))
	for k := range r.waiting {
		list = append(list, k)
	}
	r.waiting = map[types.NamespacedName]bool{}
	r.waitMu.Unlock()
	for _, k := range list {
		select {
		case r.wake <- event.TypedGenericEvent[reconcile.Request]{Object: reconcile.Request{NamespacedName: k}}:
		default:
			// Full: the periodic requeue of waiting Services catches up.
		}
	}
}

func (r *Reconciler) setWaiting(svc *corev1.Service, on bool) {
	k := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	if on {
		r.waiting[k] = true
	} else {
		delete(r.waiting, k)
	}
}

// families returns the VIP families a Service wants, in order.
func families(svc *corev1.Service, spec annotations.Spec) []ipam.Family {
	switch spec.IPAM {
	case annotations.IPAMIPv4:
		return []ipam.Family{ipam.IPv4}
	case annotations.IPAMIPv6, annotations.IPAMIPv6to4:
		return []ipam.Family{ipam.IPv6}
	}
	var out []ipam.Family
	for _, f := range svc.Spec.IPFamilies {
		switch f {
		case corev1.IPv4Protocol:
			out = append(out, ipam.IPv4)
		case corev1.IPv6Protocol:
			out = append(out, ipam.IPv6)
		}
	}
	if len(out) == 0 {
		out = []ipam.Family{ipam.IPv4}
	}
	return out
}

func hasSCTP(svc *corev1.Service) bool {
	for _, p := range svc.Spec.Ports {
		if p.Protocol == corev1.ProtocolSCTP {
			return true
		}
	}
	return false
}
