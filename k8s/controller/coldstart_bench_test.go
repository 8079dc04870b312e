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
		"daemon": figure.One("daemon", func(int) (float64, error) {
			d := startDaemon(t)
			return coldStart(t, n, d.URL, nil)
		}),
		"memdaemon": figure.One("memdaemon", func(int) (float64, error) {
			mem := &memDaemon{rules: map[string]api.Service{}}
			return coldStart(t, n, "http://mem.invalid", func(string) (DaemonClient, error) { return mem, nil })
		}),
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
			figs = append(figs, s.Measured(label+suffix, "s", figure.Below(30), name))
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
// Service has its ingress IP; it then stops the controller and deletes
// what it created, so the next run starts from the same API server
// contents.
func coldStart(t *testing.T, n int, daemonURL string, dial DialFunc) (float64, error) {
	class := newClass()
	ns := makeNamespace(t)
	ctx := context.Background()
	created := time.Now()
	err := parallel(16, n, func(i int) error {
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
		return 0, fmt.Errorf("create %d Services: %w", n, err)
	}
	start := time.Now()
	c := startController(t, ctrlOpts{class: class, pools: "defaultPool=10.128.0.0/16", daemons: []string{daemonURL}, dial: dial})
	for {
		var list corev1.ServiceList
		if err := testClient.List(ctx, &list, client.InNamespace(ns)); err != nil {
			c.stop()
			return 0, err
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
			return 0, fmt.Errorf("only %d/%d statuses after %s", done, n, time.Since(start))
		}
		// Listing 5,000 Services is itself work for the API server.
		time.Sleep(time.Second)
	}
	took := time.Since(start).Seconds()
	stopping := time.Now()
	c.stop()
	deleting := time.Now()
	// envtest runs no namespace controller: delete the objects themselves.
	err = parallel(16, n, func(i int) error {
		name := fmt.Sprintf("b%d", i)
		return errors.Join(
			client.IgnoreNotFound(testClient.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})),
			client.IgnoreNotFound(testClient.Delete(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})))
	})
	if err != nil {
		return 0, fmt.Errorf("delete the Services: %w", err)
	}
	t.Logf("%d Services: created in %s, cold start %.1fs, controller stopped in %s, deleted in %s", n,
		start.Sub(created).Round(time.Millisecond), took, deleting.Sub(stopping).Round(time.Millisecond), time.Since(deleting).Round(time.Millisecond))
	return took, nil
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
