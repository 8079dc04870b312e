// Command telcolb-controller runs the telcolb Kubernetes controller: it
// serves LoadBalancer Services of one loadBalancerClass from VIP pools and
// programs every telcolb daemon through its REST API. Logic lives in k8s/.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/k8s/controller"
	"github.com/telcolb/telcolb/k8s/ipam"
)

type flags struct {
	class, cidrPools, cidr6Pools, poolFile, defaultPool string
	daemons, daemonService, daemonScheme, tokenFile     string
	daemonCAFile, daemonServerName                      string
	daemonInsecureSkipVerify                            bool
	daemonPort                                          int
	loxilb, leaderElect, reallocate, crds               bool
	secretNamespace                                     string
	l2HeartbeatPort                                     int
	leaderNamespace, metricsAddr, probeAddr             string
	qps                                                 float64
	burst, workers                                      int
	resync                                              time.Duration
}

func parseFlags(args []string) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("telcolb-controller", flag.ContinueOnError)
	fs.StringVar(&f.class, "lb-class", controller.DefaultClass, "spec.loadBalancerClass handled; Services of other classes are never touched")
	fs.StringVar(&f.cidrPools, "cidr-pools", "", "IPv4 pools: name=CIDR|start-end,... (a name may repeat)")
	fs.StringVar(&f.cidr6Pools, "cidr6-pools", "", "IPv6 pools, same syntax; a name shared with --cidr-pools makes a dual-stack pool")
	fs.StringVar(&f.poolFile, "pool-file", "", "YAML pool file (pools: [{name, addresses: [...]}]), merged with the flags")
	fs.StringVar(&f.defaultPool, "default-pool", controller.DefaultPool, "pool used without a poolSelect annotation")
	fs.StringVar(&f.daemons, "daemons", "", "comma-separated daemon base URLs (http://10.0.0.1:8091,...); node=URL names the daemon's node for its advertisement configuration (otherwise the node whose InternalIP is the URL's host)")
	fs.BoolVar(&f.crds, "enable-crds", true, "read telcolb.io IPPool, BGPPeer and Advertisement objects (CRDs in k8s/deploy/crds must be installed)")
	fs.StringVar(&f.secretNamespace, "secret-namespace", envOr("POD_NAMESPACE", "telcolb-system"), "namespace of the Secrets BGPPeer passwords are read from")
	fs.IntVar(&f.l2HeartbeatPort, "l2-heartbeat-port", controller.DefaultL2HeartbeatPort, "UDP port the daemons of an L2 group exchange heartbeats on")
	fs.StringVar(&f.daemonService, "daemon-service", "", "namespace/name of the daemons' headless Service (discovery instead of --daemons)")
	fs.IntVar(&f.daemonPort, "daemon-port", 8091, "daemon API port for discovered daemons")
	fs.StringVar(&f.daemonScheme, "daemon-scheme", "http", "daemon API scheme for discovered daemons")
	fs.StringVar(&f.tokenFile, "daemon-token-file", "", "file holding the daemons' API bearer token")
	fs.StringVar(&f.daemonCAFile, "daemon-ca-file", "", "PEM CA the daemons' API certificates must chain to (https daemons; default: the system roots)")
	fs.StringVar(&f.daemonServerName, "daemon-tls-server-name", "", "name the daemons' API certificate must carry (default: the host of each daemon URL, a node address)")
	fs.BoolVar(&f.daemonInsecureSkipVerify, "daemon-insecure-skip-verify", false, "accept any daemon certificate (encrypted but unauthenticated: the token goes to whoever answers; labs only)")
	fs.BoolVar(&f.loxilb, "accept-loxilb-annotations", false, "also read loxilb.io/ annotation names (migration from kube-loxilb)")
	fs.BoolVar(&f.reallocate, "reallocate-disallowed-vips", false, "move VIPs the configuration no longer allows (pool removed, annotation no longer read) at once; by default they are kept, with an Event, until the Service changes or sets telcolb.io/reallocate")
	fs.BoolVar(&f.leaderElect, "leader-elect", true, "elect a leader through a Lease so several replicas are safe")
	fs.StringVar(&f.leaderNamespace, "leader-election-namespace", "", "namespace of the Lease (default: the pod's namespace)")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "metrics address (0 disables)")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "healthz/readyz address")
	fs.Float64Var(&f.qps, "kube-api-qps", 1000, "API server request rate (status writes at cold start)")
	fs.IntVar(&f.burst, "kube-api-burst", 2000, "API server burst")
	fs.IntVar(&f.workers, "workers", 32, "concurrent Service reconciles")
	fs.DurationVar(&f.resync, "daemon-resync", 5*time.Minute, "full comparison of every daemon's rules at least this often")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if f.daemons == "" && f.daemonService == "" {
		return nil, errors.New("set --daemons or --daemon-service")
	}
	return f, nil
}

func pools(f *flags) ([]ipam.PoolConfig, error) {
	p4, err := ipam.ParsePoolFlag(f.cidrPools, ipam.IPv4)
	if err != nil {
		return nil, fmt.Errorf("--cidr-pools: %w", err)
	}
	p6, err := ipam.ParsePoolFlag(f.cidr6Pools, ipam.IPv6)
	if err != nil {
		return nil, fmt.Errorf("--cidr6-pools: %w", err)
	}
	var pf []ipam.PoolConfig
	if f.poolFile != "" {
		b, err := os.ReadFile(f.poolFile)
		if err != nil {
			return nil, fmt.Errorf("--pool-file: %w", err)
		}
		if pf, err = ipam.ParsePoolYAML(b); err != nil {
			return nil, fmt.Errorf("--pool-file %s: %w", f.poolFile, err)
		}
	}
	all := ipam.MergePools(p4, p6, pf)
	if len(all) == 0 && !f.crds {
		return nil, errors.New("no pools: set --cidr-pools, --cidr6-pools or --pool-file")
	}
	return all, nil
}

func run(args []string) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	slog.SetDefault(log)
	ctrl.SetLogger(logr.FromSlogHandler(log.Handler()))
	f, err := parseFlags(args)
	if err != nil {
		return err
	}
	ps, err := pools(f)
	if err != nil {
		return err
	}
	token := ""
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return fmt.Errorf("--daemon-token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	hc, err := f.daemonHTTPClient()
	if err != nil {
		return err
	}
	dial := func(u string) (controller.DaemonClient, error) {
		return api.NewClient(api.ClientConfig{BaseURL: u, Token: token, HTTPClient: hc})
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(f.qps), f.burst
	mo := manager.Options{
		Metrics:                       metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress:        f.probeAddr,
		LeaderElection:                f.leaderElect,
		LeaderElectionID:              "telcolb-controller",
		LeaderElectionNamespace:       f.leaderNamespace,
		LeaderElectionReleaseOnCancel: true,
	}
	if f.crds {
		// Secrets are read (and cached) in one namespace only: that is all
		// the RBAC grants.
		mo.Cache.ByObject = map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Namespaces: map[string]cache.Config{f.secretNamespace: {}}},
		}
	}
	mgr, err := ctrl.NewManager(cfg, mo)
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	daemons, daemonNodes := splitDaemons(f.daemons)
	if _, err := controller.Setup(mgr, controller.Config{
		Class: f.class, Pools: ps, DefaultPool: f.defaultPool, AcceptLoxilbAnnotations: f.loxilb, ReallocateDisallowed: f.reallocate,
		Daemons: daemons, DaemonService: f.daemonService, DaemonPort: f.daemonPort, DaemonScheme: f.daemonScheme,
		Dial: dial, MaxConcurrentReconciles: f.workers, ResyncInterval: f.resync,
		EnableCRDs: f.crds, SecretNamespace: f.secretNamespace, DaemonNodes: daemonNodes, L2HeartbeatPort: f.l2HeartbeatPort,
		Registerer: metrics.Registry, Logger: log,
	}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("healthz: %w", err)
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("readyz: %w", err)
	}
	log.Info("starting", "class", f.class, "pools", len(ps), "daemons", daemons, "daemonService", f.daemonService)
	return mgr.Start(ctrl.SetupSignalHandler())
}

// daemonHTTPClient verifies https daemons' certificates as the flags say.
func (f *flags) daemonHTTPClient() (*http.Client, error) {
	hc, err := api.ClientTLSConfig{CAFile: f.daemonCAFile, ServerName: f.daemonServerName, InsecureSkipVerify: f.daemonInsecureSkipVerify}.HTTPClient(30 * time.Second)
	if err != nil {
		return nil, fmt.Errorf("--daemon-ca-file / --daemon-insecure-skip-verify: %w", err)
	}
	return hc, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// splitDaemons parses --daemons: "URL" or "node=URL" items.
func splitDaemons(v string) ([]string, map[string]string) {
	var urls []string
	nodes := map[string]string{}
	for _, d := range strings.Split(v, ",") {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		if node, u, ok := strings.Cut(d, "="); ok && !strings.Contains(node, "/") {
			d = strings.TrimSpace(u)
			nodes[d] = strings.TrimSpace(node)
		}
		urls = append(urls, d)
	}
	return urls, nodes
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "telcolb-controller:", err)
		os.Exit(1)
	}
}
