package controller

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/go-logr/logr"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/cmd/telcolb/app"
	"github.com/telcolb/telcolb/dataplane"
	"github.com/telcolb/telcolb/k8s/apis/v1alpha1"
	"github.com/telcolb/telcolb/k8s/ipam"
)

// One API server for the package: starting kube-apiserver+etcd costs
// seconds, and each test isolates itself by namespace and loadBalancerClass.
var (
	testCfg    *rest.Config
	testClient client.Client
	envSkip    string
	testSeq    atomic.Int64
)

func TestMain(m *testing.M) {
	logf.SetLogger(logr.Discard())
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if os.Getenv("TELCOLB_REQUIRE_ENVTEST") == "1" {
			fmt.Fprintln(os.Stderr, "TELCOLB_REQUIRE_ENVTEST=1 but KUBEBUILDER_ASSETS is unset: run `make envtest-bins` and point KUBEBUILDER_ASSETS at .cache/envtest/bin")
			os.Exit(1)
		}
		envSkip = "KUBEBUILDER_ASSETS is unset (build the binaries with `make envtest-bins`); set TELCOLB_REQUIRE_ENVTEST=1 to make this a failure"
		os.Exit(m.Run())
	}
	// The telcolb.io CRDs as deployed: the API server applies their
	// OpenAPI and CEL validation.
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "deploy", "crds")}, ErrorIfCRDPathMissing: true}
	if err := v1alpha1.AddToScheme(scheme.Scheme); err != nil {
		fmt.Fprintln(os.Stderr, "scheme:", err)
		os.Exit(1)
	}
	// The default /24 service range holds too few ClusterIPs for the
	// 5,000-Service benchmark.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/16")
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		os.Exit(1)
	}
	cfg.QPS, cfg.Burst = 2000, 4000
	testCfg = cfg
	testClient, err = client.New(cfg, client.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		_ = env.Stop()
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop envtest:", err)
	}
	os.Exit(code)
}

func needEnv(t testing.TB) {
	t.Helper()
	if envSkip != "" {
		t.Skip(envSkip)
	}
}

// fakeDatapath is an in-memory app.Datapath: the real daemon server and rule
// store run on top of it.
type fakeDatapath struct {
	mu       sync.Mutex
	services map[uint32]dataplane.Service
}

func (f *fakeDatapath) UpsertService(s dataplane.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.services[s.ID] = s
	return nil
}
func (f *fakeDatapath) DeleteService(id uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.services, id)
	return nil
}
func (f *fakeDatapath) Conntrack() ([]dataplane.Conn, error) { return nil, nil }
func (f *fakeDatapath) FlushConntrack() error                { return nil }
func (f *fakeDatapath) ServiceStats(uint32, int) (dataplane.ServiceStats, error) {
	return dataplane.ServiceStats{}, nil
}
func (f *fakeDatapath) DropStats() (map[dataplane.DropReason]uint64, error) { return nil, nil }
func (f *fakeDatapath) Interfaces() []string                                { return []string{"eth0"} }
func (f *fakeDatapath) AttachMode() string                                  { return "tcx" }

// daemon is a real telcolb API server (cmd/telcolb/app) over a fake
// datapath, served by httptest.
type testDaemon struct {
	URL    string
	client *api.Client
	srv    *httptest.Server
}

func startDaemon(t *testing.T) *testDaemon {
	t.Helper()
	s, err := app.NewServer(app.Config{
		Datapath: &fakeDatapath{services: map[uint32]dataplane.Service{}},
		StateDir: t.TempDir(),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(func() { hs.Close(); _ = s.Close() })
	c, err := api.NewClient(api.ClientConfig{BaseURL: hs.URL})
	if err != nil {
		t.Fatal(err)
	}
	return &testDaemon{URL: hs.URL, client: c, srv: hs}
}

func (d *testDaemon) rules(t *testing.T) map[string]api.Service {
	t.Helper()
	list, err := d.client.ListServices(context.Background())
	if err != nil {
		t.Fatalf("list daemon rules: %v", err)
	}
	out := map[string]api.Service{}
	for _, s := range list {
		out[s.Service.Name] = s.Service
	}
	return out
}

func dialAPI(u string) (DaemonClient, error) {
	return api.NewClient(api.ClientConfig{BaseURL: u})
}

type testCtrl struct {
	class  string
	r      *Reconciler
	cancel context.CancelFunc
	done   chan error
}

type ctrlOpts struct {
	pools          string
	pools6         string
	daemons        []string
	leaderElection bool
	leaseNS        string
	leaderID       string
	loxilb         bool
	class          string
	dial           DialFunc
	// crds turns on IPPool/BGPPeer/Advertisement handling.
	crds            bool
	secretNamespace string
	daemonNodes     map[string]string
	// reg receives the controller's metrics (a fresh registry when nil).
	reg prometheus.Registerer
}

func newClass() string { return fmt.Sprintf("telcolb.io/test-%d", testSeq.Add(1)) }

// startController runs a manager with the controller until stop or test end.
func startController(t *testing.T, o ctrlOpts) *testCtrl {
	t.Helper()
	p4, err := ipam.ParsePoolFlag(o.pools, ipam.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	p6, err := ipam.ParsePoolFlag(o.pools6, ipam.IPv6)
	if err != nil {
		t.Fatal(err)
	}
	if o.class == "" {
		o.class = newClass()
	}
	mo := manager.Options{
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                o.leaderElection,
		LeaderElectionID:              o.leaderID,
		LeaderElectionNamespace:       o.leaseNS,
		LeaderElectionReleaseOnCancel: true,
	}
	if o.leaderElection {
		mo.LeaseDuration = ptr.To(3 * time.Second)
		mo.RenewDeadline = ptr.To(2 * time.Second)
		mo.RetryPeriod = ptr.To(200 * time.Millisecond)
	}
	mo.Controller.SkipNameValidation = ptr.To(true)
	dial := o.dial
	if dial == nil {
		dial = dialAPI
	}
	reg := o.reg
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	mgr, err := ctrl.NewManager(testCfg, mo)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Setup(mgr, Config{
		Class:                   o.class,
		Pools:                   ipam.MergePools(p4, p6),
		Daemons:                 o.daemons,
		Dial:                    dial,
		HealthInterval:          200 * time.Millisecond,
		AcceptLoxilbAnnotations: o.loxilb,
		Registerer:              reg,
		Logger:                  testLogger(),
		Name:                    fmt.Sprintf("svc-%d", testSeq.Add(1)),
		EnableCRDs:              o.crds,
		SecretNamespace:         o.secretNamespace,
		DaemonNodes:             o.daemonNodes,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tc := &testCtrl{class: o.class, r: r, cancel: cancel, done: make(chan error, 1)}
	go func() { tc.done <- mgr.Start(ctx) }()
	t.Cleanup(tc.stop)
	return tc
}

func (c *testCtrl) stop() {
	c.cancel()
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
	}
}

func makeNamespace(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("t%d-%d", time.Now().UnixNano()%100000, testSeq.Add(1))
	if err := testClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return ns
}

type svcOpt func(*corev1.Service)

func withAnn(kv ...string) svcOpt {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			s.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func withPorts(ports ...corev1.ServicePort) svcOpt {
	return func(s *corev1.Service) { s.Spec.Ports = ports }
}

func withClass(c string) svcOpt {
	return func(s *corev1.Service) {
		if c == "" {
			s.Spec.LoadBalancerClass = nil
		} else {
			s.Spec.LoadBalancerClass = ptr.To(c)
		}
	}
}

func tcpPort(port int32, target int) corev1.ServicePort {
	return corev1.ServicePort{Name: fmt.Sprintf("p%d", port), Port: port, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt(target)}
}

func sctpPort(port int32, target int) corev1.ServicePort {
	return corev1.ServicePort{Name: fmt.Sprintf("s%d", port), Port: port, Protocol: corev1.ProtocolSCTP, TargetPort: intstr.FromInt(target)}
}

func makeService(t testing.TB, ns, name, class string, opts ...svcOpt) *corev1.Service {
	t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: ptr.To(class),
			Selector:          map[string]string{"app": name},
			Ports:             []corev1.ServicePort{tcpPort(80, 8080)},
		},
	}
	for _, o := range opts {
		o(s)
	}
	if err := testClient.Create(context.Background(), s); err != nil {
		t.Fatalf("create service %s: %v", name, err)
	}
	return s
}

// makeSlice publishes pod endpoints for a Service, as the EndpointSlice
// controller (not running under envtest) would.
func makeSlice(t *testing.T, svc *corev1.Service, eps []discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	t.Helper()
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: svc.Namespace, Name: svc.Name + "-x", Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
	}
	for _, p := range svc.Spec.Ports {
		sl.Ports = append(sl.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Protocol: ptr.To(p.Protocol), Port: ptr.To(int32(p.TargetPort.IntValue()))})
	}
	if err := testClient.Create(context.Background(), sl); err != nil {
		t.Fatal(err)
	}
	return sl
}

func podEndpoint(ip, pod string, ready bool) discoveryv1.Endpoint {
	ep := discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}}
	if pod != "" {
		ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: pod}
	}
	return ep
}

func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not reached in %s: %v", what, timeout, err)
}

func getSvc(t testing.TB, ns, name string) *corev1.Service {
	t.Helper()
	var s corev1.Service
	if err := testClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &s); err != nil {
		t.Fatalf("get %s/%s: %v", ns, name, err)
	}
	return &s
}

func ingressIPs(s *corev1.Service) []string {
	var out []string
	for _, i := range s.Status.LoadBalancer.Ingress {
		out = append(out, i.IP)
	}
	return out
}

// waitIngress waits for n ingress IPs and returns them.
func waitIngress(t testing.TB, ns, name string, n int) []string {
	t.Helper()
	var ips []string
	eventually(t, 20*time.Second, "ingress of "+ns+"/"+name, func() error {
		var s corev1.Service
		if err := testClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &s); err != nil {
			return err
		}
		ips = ingressIPs(&s)
		if len(ips) != n {
			return fmt.Errorf("ingress %v, conditions %+v", ips, s.Status.Conditions)
		}
		return nil
	})
	return ips
}

func condition(s *corev1.Service) *metav1.Condition {
	for i := range s.Status.Conditions {
		if s.Status.Conditions[i].Type == ConditionType {
			return &s.Status.Conditions[i]
		}
	}
	return nil
}

func waitCondition(t testing.TB, ns, name, reason string) *metav1.Condition {
	t.Helper()
	var c *metav1.Condition
	eventually(t, 20*time.Second, "condition "+reason+" on "+ns+"/"+name, func() error {
		s := getSvc(t, ns, name)
		c = condition(s)
		if c == nil || c.Reason != reason {
			return fmt.Errorf("condition %+v", c)
		}
		return nil
	})
	return c
}

// events returns the notes of Events about a Service, by reason.
func svcEvents(t testing.TB, ns, name string) map[string][]string {
	t.Helper()
	var list corev1.EventList
	if err := testClient.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name {
			out[e.Reason] = append(out[e.Reason], e.Message)
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

func waitEvent(t testing.TB, ns, name, reason, contains string) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("event %s %q on %s", reason, contains, name), func() error {
		for _, n := range svcEvents(t, ns, name)[reason] {
			if strings.Contains(n, contains) {
				return nil
			}
		}
		return fmt.Errorf("events: %v", svcEvents(t, ns, name))
	})
}

// testLogger discards controller logs unless TELCOLB_TEST_LOG names a file.
func testLogger() *slog.Logger {
	if p := os.Getenv("TELCOLB_TEST_LOG"); p != "" {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err == nil {
			return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// makeServedService creates a Service whose pods (one ready endpoint per
// Service, on the pod network) let the daemons take its rules: only then
// does its status show a VIP.
func makeServedService(t *testing.T, ns, name, class string, opts ...svcOpt) *corev1.Service {
	t.Helper()
	opts = append([]svcOpt{withAnn("telcolb.io/usepodnetwork", "yes")}, opts...)
	s := makeService(t, ns, name, class, opts...)
	n := testSeq.Add(1)
	makeSlice(t, s, []discoveryv1.Endpoint{podEndpoint(fmt.Sprintf("10.%d.%d.%d", 200+n/65536%50, n/256%256, n%256), "", true)})
	return s
}
