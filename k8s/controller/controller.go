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
	"net/netip"
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
}

// Reconciler reconciles Services of the configured class.
type Reconciler struct {
	cfg      Config
	client   client.Client
	recorder record.EventRecorder
	alloc    *ipam.Allocator
	daemons  *Daemons
	metrics  *Metrics
	log      *slog.Logger

	primeMu sync.Mutex
	primed  bool

	waitMu  sync.Mutex
	waiting map[types.NamespacedName]bool
	wake    chan event.TypedGenericEvent[reconcile.Request]
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
		metrics:  m,
		log:      cfg.Logger,
		waiting:  map[types.NamespacedName]bool{},
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
	}
	if err := mgr.Add(r.daemons); err != nil {
		return nil, fmt.Errorf("controller: add daemon sync: %w", err)
	}
	if err := r.setupWatches(mgr); err != nil {
		return nil, err
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
			// Our own status writes need no reconcile.
			return o.Generation != n.Generation || !equality.Semantic.DeepEqual(o.Annotations, n.Annotations) ||
				!equality.Semantic.DeepEqual(o.Finalizers, n.Finalizers) || !n.DeletionTimestamp.IsZero() ||
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
		primary, secondary, err := recordedAllocation(svc)
		if err != nil {
			r.log.Warn("unreadable recorded allocation", "service", key(svc), "error", err)
			continue
		}
		o := r.owner(svc, rawSharingKey(svc, r.cfg.AcceptLoxilbAnnotations))
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

func (r *Reconciler) event(svc *corev1.Service, typ, reason, action, note string, args ...any) {
	_ = action
	r.recorder.Eventf(svc, typ, reason, note, args...)
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

// failure reports a problem on the Service: a Warning Event, the condition
// and a metric. The controller keeps running whatever the cause.
func (r *Reconciler) failure(ctx context.Context, svc *corev1.Service, reason, msg string, ingress []corev1.LoadBalancerIngress) {
	r.metrics.reconcileErrors.WithLabelValues(reason).Inc()
	r.event(svc, corev1.EventTypeWarning, reason, "Reconcile", "%s", msg)
	if err := r.writeStatus(ctx, svc, ingress, metav1.ConditionFalse, reason, msg); err != nil {
		r.log.Error("write status", "service", key(svc), "error", err)
	}
	r.log.Warn("service not ready", "service", key(svc), "reason", reason, "message", msg)
}

func (r *Reconciler) writeStatus(ctx context.Context, svc *corev1.Service, ingress []corev1.LoadBalancerIngress, status metav1.ConditionStatus, reason, msg string) error {
	st := svc.DeepCopy()
	if ingress != nil || status == metav1.ConditionTrue {
		st.Status.LoadBalancer.Ingress = ingress
	}
	if len(msg) > 32000 {
		msg = msg[:32000]
	}
	meta.SetStatusCondition(&st.Status.Conditions, metav1.Condition{
		Type: ConditionType, Status: status, Reason: reason, Message: msg, ObservedGeneration: svc.Generation,
	})
	if equality.Semantic.DeepEqual(st.Status, svc.Status) {
		return nil
	}
	if err := r.client.Status().Patch(ctx, st, client.MergeFrom(svc)); err != nil {
		return fmt.Errorf("patch status of %s: %w", key(svc), err)
	}
	*svc = *st
	return nil
}

func ingressOf(primary, secondary []netip.Addr) []corev1.LoadBalancerIngress {
	out := []corev1.LoadBalancerIngress{}
	for _, a := range append(append([]netip.Addr(nil), primary...), secondary...) {
		out = append(out, corev1.LoadBalancerIngress{IP: a.String()})
	}
	return out
}

func (r *Reconciler) reconcileOurs(ctx context.Context, svc *corev1.Service) (reconcile.Result, error) {
	res, err := annotations.Parse(svc.Annotations, annotations.Options{
		AcceptLoxilb: r.cfg.AcceptLoxilbAnnotations,
		DefaultPool:  r.cfg.DefaultPool,
		PoolExists:   r.alloc.HasPool,
		Ignore:       []string{strings.TrimPrefix(AllocationAnnotation, annotations.Prefix)},
	})
	if err != nil {
		var msgs []string
		for _, e := range annotations.Errors(err) {
			msgs = append(msgs, e.Error())
		}
		r.failure(ctx, svc, ReasonInvalidAnnotation, strings.Join(msgs, "; "), nil)
		return reconcile.Result{}, nil
	}
	for _, w := range res.Warnings {
		r.event(svc, corev1.EventTypeNormal, ReasonAnnotationNote, "Reconcile", "%s", w)
	}
	spec := res.Spec
	primary, secondary, release, reason, err := r.allocate(svc, spec)
	r.metrics.observePools(r.alloc)
	if err != nil {
		r.setWaiting(svc, true)
		r.failure(ctx, svc, reason, err.Error(), nil)
		// Woken at once when an address frees; the requeue is a safety net.
		return reconcile.Result{RequeueAfter: 30 * time.Second}, nil
	}
	r.setWaiting(svc, false)
	// Record before use: a crash after this point keeps the same VIPs.
	rec := encodeAllocation(primary, secondary)
	if svc.Annotations[AllocationAnnotation] != rec || !controllerutil.ContainsFinalizer(svc, Finalizer) {
		upd := svc.DeepCopy()
		if upd.Annotations == nil {
			upd.Annotations = map[string]string{}
		}
		upd.Annotations[AllocationAnnotation] = rec
		controllerutil.AddFinalizer(upd, Finalizer)
		if err := r.client.Patch(ctx, upd, client.MergeFromWithOptions(svc, client.MergeFromWithOptimisticLock{})); err != nil {
			return reconcile.Result{}, fmt.Errorf("record allocation on %s: %w", key(svc), err)
		}
		*svc = *upd
	}
	release()
	ingress := ingressOf(primary, secondary)
	rules, notes, err := r.rules(ctx, svc, spec, primary, secondary)
	for _, n := range notes {
		r.event(svc, corev1.EventTypeWarning, ReasonEndpointSkipped, "Reconcile", "%s", n)
	}
	if err != nil {
		r.failure(ctx, svc, ReasonInvalidService, err.Error(), ingress)
		return reconcile.Result{}, nil
	}
	if err := r.daemons.Program(ctx, key(svc), rules); err != nil {
		r.failure(ctx, svc, ReasonDaemonError, err.Error(), ingress)
		return reconcile.Result{RequeueAfter: 10 * time.Second}, nil
	}
	if len(rules) == 0 {
		if err := r.writeStatus(ctx, svc, ingress, metav1.ConditionFalse, ReasonNoEndpoints, "VIPs allocated; no ready endpoint yet, so no rule is programmed"); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, nil
	}
	msg := fmt.Sprintf("%d rules programmed on %d daemons", len(rules), len(r.daemons.URLs()))
	if err := r.writeStatus(ctx, svc, ingress, metav1.ConditionTrue, ReasonProgrammed, msg); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, nil
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

// allocate works out the Service's VIPs. Addresses it keeps come from the
// record on the Service or, first, from what this process already holds for
// it: the informer cache can lag behind our own annotation patch, and a
// stale read must not make the Service swap VIPs. Only addresses taken by
// this attempt are given back on failure; addresses no longer wanted are
// released by the returned func once the new record is persisted.
func (r *Reconciler) allocate(svc *corev1.Service, spec annotations.Spec) ([]netip.Addr, []netip.Addr, func(), string, error) {
	recP, recS, err := recordedAllocation(svc)
	if err != nil {
		r.log.Warn("ignoring unreadable allocation record", "service", key(svc), "error", err)
		recP, recS = nil, nil
	}
	o := r.owner(svc, spec.SharingKey)
	heldList := r.alloc.IPs(o.Service)
	held := map[netip.Addr]bool{}
	for _, a := range heldList {
		held[a] = true
	}
	fresh := map[netip.Addr]bool{}
	chosen := map[netip.Addr]bool{}
	var primary, secondary []netip.Addr
	fail := func(reason string, err error) ([]netip.Addr, []netip.Addr, func(), string, error) {
		for a := range fresh {
			r.alloc.Release(o.Service, a)
		}
		return nil, nil, nil, reason, err
	}
	classify := func(pool string, err error) (string, error) {
		var ex *ipam.ExhaustedError
		var ce *ipam.ConflictError
		switch {
		case errors.As(err, &ex):
			r.metrics.allocationFailures.WithLabelValues(pool, "exhausted").Inc()
			return ReasonPoolExhausted, err
		case errors.As(err, &ce):
			r.metrics.allocationFailures.WithLabelValues(pool, "conflict").Inc()
			return ReasonIPConflict, err
		default:
			r.metrics.allocationFailures.WithLabelValues(pool, "other").Inc()
			return ReasonAllocationFailed, err
		}
	}
	// take assigns a specific address (kept or static).
	take := func(a netip.Addr) error {
		if err := r.alloc.Assign(o, a); err != nil {
			return err
		}
		if !held[a] {
			fresh[a] = true
		}
		chosen[a] = true
		return nil
	}
	// reuse finds an address to keep from pool for family fam.
	reuse := func(pool string, fam ipam.Family, rec []netip.Addr) netip.Addr {
		for _, list := range [][]netip.Addr{rec, heldList} {
			for _, a := range list {
				if chosen[a] || ipam.FamilyOf(a) != fam {
					continue
				}
				if p, ok := r.alloc.PoolOf(a); ok && p == pool {
					return a
				}
			}
		}
		return netip.Addr{}
	}
	var lbIP netip.Addr
	if svc.Spec.LoadBalancerIP != "" {
		lbIP, err = netip.ParseAddr(svc.Spec.LoadBalancerIP)
		if err != nil {
			return fail(ReasonInvalidService, fmt.Errorf("spec.loadBalancerIP %q: %w", svc.Spec.LoadBalancerIP, err))
		}
		lbIP = lbIP.Unmap()
	}
	for _, fam := range families(svc, spec) {
		var static netip.Addr
		for _, s := range spec.StaticIPs {
			if ipam.FamilyOf(s) == fam {
				static = s
			}
		}
		if !static.IsValid() && lbIP.IsValid() && ipam.FamilyOf(lbIP) == fam {
			static = lbIP
		}
		if static.IsValid() {
			if err := take(static); err != nil {
				reason, err := classify("static", err)
				return fail(reason, fmt.Errorf("static IP: %w", err))
			}
			primary = append(primary, static)
			continue
		}
		if keep := reuse(spec.Pool, fam, recP); keep.IsValid() {
			if err := take(keep); err != nil {
				reason, err := classify(spec.Pool, err)
				return fail(reason, err)
			}
			primary = append(primary, keep)
			continue
		}
		if !r.alloc.HasFamily(spec.Pool, fam) {
			reason, err := classify(spec.Pool, fmt.Errorf("pool %q has no %s range for this Service's IP family", spec.Pool, fam))
			return fail(reason, err)
		}
		a, err := r.alloc.Allocate(o, spec.Pool, fam)
		if err != nil {
			reason, err := classify(spec.Pool, err)
			return fail(reason, err)
		}
		fresh[a], chosen[a] = true, true
		primary = append(primary, a)
	}
	if (len(spec.SecondaryIPs) > 0 || len(spec.SecondaryPools) > 0) && hasSCTP(svc) {
		fam := ipam.FamilyOf(primary[0])
		if len(spec.SecondaryIPs) > 0 {
			for _, a := range spec.SecondaryIPs {
				if ipam.FamilyOf(a) != fam {
					return fail(ReasonInvalidService, fmt.Errorf("secondary IP %s is %s but the primary VIP %s is %s", a, ipam.FamilyOf(a), primary[0], fam))
				}
				if err := take(a); err != nil {
					reason, err := classify("static", err)
					return fail(reason, fmt.Errorf("secondary IP: %w", err))
				}
				secondary = append(secondary, a)
			}
		} else {
			for _, pool := range spec.SecondaryPools {
				keep := reuse(pool, fam, recS)
				if keep.IsValid() {
					if err := take(keep); err != nil {
						reason, err := classify(pool, err)
						return fail(reason, err)
					}
				} else {
					a, err := r.alloc.Allocate(o, pool, fam)
					if err != nil {
						reason, err := classify(pool, fmt.Errorf("secondary: %w", err))
						return fail(reason, err)
					}
					fresh[a], chosen[a] = true, true
					keep = a
				}
				secondary = append(secondary, keep)
			}
		}
	} else if len(spec.SecondaryIPs) > 0 || len(spec.SecondaryPools) > 0 {
		r.event(svc, corev1.EventTypeNormal, ReasonAnnotationNote, "Reconcile", "secondary VIPs are only used by SCTP ports; this Service has none, so none were allocated")
	}
	release := func() {
		released := false
		for _, a := range heldList {
			if !chosen[a] {
				r.alloc.Release(o.Service, a)
				released = true
			}
		}
		if released {
			r.metrics.observePools(r.alloc)
			r.wakeWaiting()
		}
	}
	return primary, secondary, release, "", nil
}
