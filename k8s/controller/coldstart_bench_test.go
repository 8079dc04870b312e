package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/scenarios/bench/figure"
)

// TestBenchColdStart5000Services measures a cold controller start against
// 5,000 existing Services (TELCOLB_BENCH=1): until every one has its
// ingress IP, each round with fresh Services, a fresh daemon server
// (persisting its rules on every write) and a fresh controller. A run
// costs minutes (creating 10,000 objects, the start, deleting them), so by
// default only that variant runs; TELCOLB_BENCH_COLDSTART_VARIANTS=
// daemon,memdaemon interleaves it with an in-memory daemon, to show where
// the time goes (memdaemon alone: that one only).
// TELCOLB_BENCH_COLDSTART_SERVICES overrides the count (to try it out).
func TestBenchColdStart5000Services(t *testing.T) {
	if os.Getenv("TELCOLB_BENCH") != "1" {
		t.Skip("set TELCOLB_BENCH=1 to run the cold-start benchmark")
	}
	needEnv(t)
	n := 5000
	if v := os.Getenv("TELCOLB_BENCH_COLDSTART_SERVICES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 65000 {
			t.Fatalf("TELCOLB_BENCH_COLDSTART_SERVICES=%q: want 1..65000", v)
		}
	}
	label := fmt.Sprintf("controller_cold_start_%d_services", n)
	all := map[string]figure.Variant{
		// Each cold start is followed, in the same round and against the
		// same Services, by the floor: a bare client doing the writes the
		// controller must do per Service. Their ratio is taken per round.
		"daemon": {Name: "daemon", Measure: func(int) (map[string]float64, error) {
			d := startDaemon(t)
			took, floor, err := coldStart(t, n, d.URL, nil)
			return map[string]float64{"daemon": took, "daemon_floor": floor}, err
		}},
		"memdaemon": {Name: "memdaemon", Measure: func(int) (map[string]float64, error) {
			mem := &memDaemon{rules: map[string]api.Service{}}
			took, floor, err := coldStart(t, n, "http://mem.invalid", func(string) (DaemonClient, error) { return mem, nil })
			return map[string]float64{"memdaemon": took, "memdaemon_floor": floor}, err
		}},
	}
	names := []string{"daemon"}
	if v := os.Getenv("TELCOLB_BENCH_COLDSTART_VARIANTS"); v != "" {
		names = strings.Split(v, ",")
	}
	var variants []figure.Variant
	for _, name := range names {
		v, ok := all[name]
		if !ok {
			t.Fatalf("TELCOLB_BENCH_COLDSTART_VARIANTS=%q: %q is not one of daemon, memdaemon", os.Getenv("TELCOLB_BENCH_COLDSTART_VARIANTS"), name)
		}
		variants = append(variants, v)
	}
	// Each run is minutes: the plan's minimum, no more.
	figs, err := figure.Interleave(figure.Plan{MinRounds: 5, MaxRounds: 5}, variants, func(s *figure.Samples) []figure.Figure {
		var figs []figure.Figure
		for _, name := range names {
			suffix := ""
			if name == "memdaemon" {
				suffix = "_memdaemon"
			}
			figs = append(figs, s.Measured(label+suffix, "s", figure.Below(30), name),
				s.Ratio(label+suffix+"_vs_floor", figure.AtMost(1.5), name, name+"_floor"))
		}
		return figs
	})
	if err != nil {
		t.Fatal(err)
	}
	figure.Report(t, figs...)
}

// memDaemon is an in-memory DaemonClient.
type memDaemon struct {
	mu    sync.Mutex
	rules map[string]api.Service
}

func (m *memDaemon) ApplyService(_ context.Context, s api.Service) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rules[s.Name] = s
	return nil
}
func (m *memDaemon) DeleteService(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.rules, name)
	return nil
}
func (m *memDaemon) ListServices(context.Context) ([]api.ServiceStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []api.ServiceStatus
	for _, s := range m.rules {
		out = append(out, api.ServiceStatus{Service: s})
	}
	return out, nil
}
func (m *memDaemon) Health(context.Context) (api.Health, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return api.Health{Status: "ok", Services: len(m.rules)}, nil
}

// coldStart creates n Services with their EndpointSlices in a fresh
// namespace, starts a controller and returns the seconds until every
// Service has its ingress IP, and the seconds a bare client takes for the
// same writes (benchFloor); it then stops the controller and deletes
// what it created, so the next run starts from the same API server
// contents.
func coldStart(t *testing.T, n int, daemonURL string, dial DialFunc) (took, floor float64, err error) {
	class := newClass()
	ns := makeNamespace(t)
	ctx := context.Background()
	created := time.Now()
	err = parallel(16, n, func(i int) error {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("b%d", i), Annotations: map[string]string{"telcolb.io/usepodnetwork": "yes"}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To(class),
				Ports: []corev1.ServicePort{tcpPort(80, 8080)}, AllocateLoadBalancerNodePorts: ptr.To(false)},
		}
		if err := testClient.Create(ctx, s); err != nil {
			return err
		}
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: s.Name, Labels: map[string]string{discoveryv1.LabelServiceName: s.Name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{podEndpoint(fmt.Sprintf("10.%d.%d.%d", 100+i/65536, (i/256)%256, i%256), "", true)},
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("p80"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(8080))}},
		}
		return testClient.Create(ctx, sl)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("create %d Services: %w", n, err)
	}
	start := time.Now()
	c := startController(t, ctrlOpts{class: class, pools: "defaultPool=10.128.0.0/16", daemons: []string{daemonURL}, dial: dial})
	for {
		var list corev1.ServiceList
		if err := testClient.List(ctx, &list, client.InNamespace(ns)); err != nil {
			c.stop()
			return 0, 0, err
		}
		done := 0
		for _, s := range list.Items {
			if len(s.Status.LoadBalancer.Ingress) == 1 {
				done++
			}
		}
		if done == n {
			break
		}
		if time.Since(start) > 10*time.Minute {
			c.stop()
			return 0, 0, fmt.Errorf("only %d/%d statuses after %s", done, n, time.Since(start))
		}
		// Listing 5,000 Services is itself work for the API server.
		time.Sleep(time.Second)
	}
	took = time.Since(start).Seconds()
	stopping := time.Now()
	c.stop()
	if floor, err = benchFloor(ns, n); err != nil {
		return 0, 0, err
	}
	deleting := time.Now()
	if err := deleteRound(ctx, ns, n); err != nil {
		return 0, 0, err
	}
	t.Logf("%d Services: created in %s, cold start %.1fs (floor %.1fs), controller stopped in %s, deleted in %s", n,
		start.Sub(created).Round(time.Millisecond), took, floor, deleting.Sub(stopping).Round(time.Millisecond), time.Since(deleting).Round(time.Millisecond))
	return took, floor, nil
}

// parallel runs fn(0..n-1) on w workers and returns the first error.
func parallel(w, n int, fn func(i int) error) error {
	errs := make(chan error, w)
	var wg sync.WaitGroup
	for k := 0; k < w; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; i < n; i += w {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// benchFloor times a bare client doing what the controller must do per
// Service at a cold start (record the allocation and finalizer, write the
// status, send the Programmed Event) against the same API server, with the
// controller's concurrency: the floor the cold start is compared with.
func benchFloor(ns string, n int) (float64, error) {
	ctx := context.Background()
	// Read once up front: the controller reads from its informer cache.
	var list corev1.ServiceList
	if err := testClient.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return 0, err
	}
	if len(list.Items) != n {
		return 0, fmt.Errorf("%d Services, want %d", len(list.Items), n)
	}
	start := time.Now()
	err := parallel(32, n, func(i int) error {
		s := list.Items[i]
		upd := s.DeepCopy()
		if upd.Annotations == nil {
			upd.Annotations = map[string]string{}
		}
		upd.Annotations["telcolb.io/bench-floor"] = "1"
		if err := testClient.Patch(ctx, upd, client.MergeFrom(&s)); err != nil {
			return err
		}
		st := upd.DeepCopy()
		st.Status.Conditions = append(st.Status.Conditions, metav1.Condition{Type: "telcolb.io/BenchFloor", Status: metav1.ConditionTrue, Reason: "Floor", LastTransitionTime: metav1.Now()})
		if err := testClient.Status().Patch(ctx, st, client.MergeFrom(upd)); err != nil {
			return err
		}
		ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "floor-"},
			InvolvedObject: corev1.ObjectReference{Kind: "Service", Namespace: ns, Name: s.Name, UID: s.UID},
			Reason:         "Floor", Message: "floor", Type: corev1.EventTypeNormal, Source: corev1.EventSource{Component: "bench"}}
		return testClient.Create(ctx, ev)
	})
	return time.Since(start).Seconds(), err
}

// deleteRound removes a round's objects so the next round starts from the
// same API server state. envtest runs no namespace controller, so the
// objects are deleted one by one; the Services carry the controller's
// finalizer and the controller is stopped, so it is removed here (left,
// every round kept 5,000 Terminating Services with their cluster IPs, and
// creating the next round's took longer each time: 38 s, 2m10s, 3m6s,
// 5m21s in one run, while the controller's informers listed them all).
// The floor's Events go too.
func deleteRound(ctx context.Context, ns string, n int) error {
	unfinalize := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`))
	err := parallel(16, n, func(i int) error {
		name := fmt.Sprintf("b%d", i)
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		return errors.Join(
			client.IgnoreNotFound(testClient.Patch(ctx, svc, unfinalize)),
			client.IgnoreNotFound(testClient.Delete(ctx, svc)),
			client.IgnoreNotFound(testClient.Delete(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})))
	})
	if err != nil {
		return fmt.Errorf("delete the Services: %w", err)
	}
	if err := testClient.DeleteAllOf(ctx, &corev1.Event{}, client.InNamespace(ns)); err != nil {
		return fmt.Errorf("delete the Events: %w", err)
	}
	var left corev1.ServiceList
	if err := testClient.List(ctx, &left, client.InNamespace(ns)); err != nil {
		return err
	}
	if len(left.Items) != 0 {
		return fmt.Errorf("%d Services of the round still exist after deletion (first: %s, finalizers %v)", len(left.Items), left.Items[0].Name, left.Items[0].Finalizers)
	}
	return nil
}
