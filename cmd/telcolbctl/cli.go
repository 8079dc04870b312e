package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/telcolb/telcolb/api"
)

// env is the process surroundings, injectable for tests.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// defaultTokenFile is read for the token when neither a token nor a
	// token file is given (api.DefaultTokenFile on a node; empty: none).
	defaultTokenFile string
}

// Exit codes: 1 for failures talking to the daemon, 2 for anything the user
// must fix (usage, or a 4xx the daemon explained).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const usageText = `Usage: telcolbctl [--server URL] [--token T | --token-file F] [--ca-file F] [-o table|wide|json] <verb> <resource> [args]

  create lb NAME --vip IP --port P [--port-end P] [--protocol tcp|udp|sctp]
                 [--mode default|onearm|fullnat|dsr] [--select rr|hash|persist|leastconn|maglev]
                 [--timeout 30s] --endpoints ADDR[:PORT[:WEIGHT]],... [--secondary-vips IP,...]
                 [--probe TYPE --probe-port P --probe-req R --probe-resp R
                  --probe-interval 5s --probe-timeout 2s --probe-retries N] [--n2] [--pfcp]
                 [--diameter --origin-host H --origin-realm R [--diameter-mode relay|proxy]
                  [--applications ID,...]]
                 [--sctp-path-failover on|off] [--sctp-path-hold-down 1s]
  apply -f FILE        create or replace services from YAML/JSON (one, a list, or --- documents; - is stdin)
  get lb [NAME]        services (-o wide: one row per endpoint with health and counters)
  get ct               connections
  get ep               endpoints with health
  get bgp              BGP peers: state, prefixes sent, BFD (-o wide: last down reason)
  get bfd              BFD sessions: state, timers, remote diagnostic
  get vip              VIPs this node serves: how each is announced, owner, why not
  get ha               HA conntrack sync: readiness, peers up and synced, records, lag
  delete lb NAME       delete a service
  delete ct            flush all connections
  health               daemon health
  ready                exit 0 only when the daemon is ready (not syncing with its HA peers): for readiness probes

The server defaults to $TELCOLB_SERVER (else http://127.0.0.1:8091); the token to $TELCOLB_TOKEN, else the
file $TELCOLB_TOKEN_FILE, else the daemon's own token file /var/lib/telcolb/api-token (readable by root).
An https daemon's certificate is verified against --ca-file ($TELCOLB_CA_FILE) with the name --tls-server-name
($TELCOLB_TLS_SERVER_NAME); --insecure-skip-verify accepts any certificate.
`

// usageError is a command-line mistake: print it with the usage hint.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

type globals struct {
	server, token, tokenFile, output string
	// How an https daemon's certificate is verified (api.ClientTLSConfig).
	caFile, tlsServerName string
	insecureSkipVerify    bool
}

func (g *globals) register(fs *pflag.FlagSet, e env) {
	server := e.getenv("TELCOLB_SERVER")
	if server == "" {
		server = "http://127.0.0.1:8091"
	}
	fs.StringVar(&g.server, "server", server, "daemon URL")
	fs.StringVar(&g.token, "token", e.getenv("TELCOLB_TOKEN"), "API bearer token")
	fs.StringVar(&g.tokenFile, "token-file", e.getenv("TELCOLB_TOKEN_FILE"), "file holding the API bearer token")
	fs.StringVarP(&g.output, "output", "o", "table", "table, wide or json")
	fs.StringVar(&g.caFile, "ca-file", e.getenv("TELCOLB_CA_FILE"), "PEM CA the daemon's certificate must chain to (https; default: the system roots)")
	fs.StringVar(&g.tlsServerName, "tls-server-name", e.getenv("TELCOLB_TLS_SERVER_NAME"), "name the daemon's certificate must carry (default: the --server host)")
	fs.BoolVar(&g.insecureSkipVerify, "insecure-skip-verify", false, "accept any daemon certificate (the token goes to whoever answers)")
}

func run(args []string, e env) int {
	err := dispatch(args, e)
	if err == nil {
		return exitOK
	}
	var ue *usageError
	var fe *api.FieldError
	switch {
	case errors.Is(err, pflag.ErrHelp):
		fmt.Fprint(e.stdout, usageText)
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "error: %s\nRun 'telcolbctl --help' for usage.\n", ue.msg)
		return exitUsage
	case api.IsClientError(err):
		var se *api.StatusError
		errors.As(err, &se)
		fmt.Fprintf(e.stderr, "error: %s\n", se.Error())
		if se.Code == http.StatusUnauthorized {
			fmt.Fprintf(e.stderr, "The daemon needs its API token: run telcolbctl as root on the node (it reads %s), or pass --token or --token-file.\n", api.DefaultTokenFile)
		}
		return exitUsage
	case errors.As(err, &fe):
		fmt.Fprintf(e.stderr, "error: %s\n", fe.Error())
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "error: %v\n", err)
		return exitFailure
	}
}

func newFlagSet(name string, g *globals, e env) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	g.register(fs, e)
	return fs
}

func dispatch(args []string, e env) error {
	var g globals
	// Global flags may come before the verb; they are registered again on
	// each command so they may also come after it.
	pre := newFlagSet("telcolbctl", &g, e)
	pre.SetInterspersed(false)
	if err := pre.Parse(args); err != nil {
		return flagErr(err)
	}
	rest := pre.Args()
	if len(rest) == 0 {
		return usagef("missing verb")
	}
	verb, rest := rest[0], rest[1:]
	// Registering the globals again resets them to their defaults, so the
	// values given before the verb are saved and set again.
	given := map[string]string{}
	pre.Visit(func(f *pflag.Flag) { given[f.Name] = f.Value.String() })
	fs := newFlagSet(verb, &g, e)
	for name, v := range given {
		if err := fs.Set(name, v); err != nil {
			return usagef("--%s: %v", name, err)
		}
	}
	var cmd func(context.Context, *api.Client, []string) error
	c := &commands{g: &g, e: e, fs: fs}
	switch verb {
	case "create":
		cmd = c.create
	case "apply":
		cmd = c.apply
	case "get":
		cmd = c.get
	case "delete":
		cmd = c.delete
	case "health":
		cmd = c.health
	case "ready":
		cmd = c.ready
	case "help":
		return pflag.ErrHelp
	default:
		return usagef("unknown verb %q (create, apply, get, delete, health, ready)", verb)
	}
	c.registerFlags(verb)
	if err := fs.Parse(rest); err != nil {
		return flagErr(err)
	}
	switch g.output {
	case "table", "wide", "json":
	default:
		return usagef("-o %q: use table, wide or json", g.output)
	}
	token, err := g.resolveToken(e)
	if err != nil {
		return err
	}
	hc, err := api.ClientTLSConfig{CAFile: g.caFile, ServerName: g.tlsServerName, InsecureSkipVerify: g.insecureSkipVerify}.HTTPClient(30 * time.Second)
	if err != nil {
		return usagef("%v", err)
	}
	client, err := api.NewClient(api.ClientConfig{BaseURL: g.server, Token: token, HTTPClient: hc})
	if err != nil {
		return usagef("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return cmd(ctx, client, fs.Args())
}

func flagErr(err error) error {
	if errors.Is(err, pflag.ErrHelp) {
		return err
	}
	return usagef("%v", err)
}

type commands struct {
	g  *globals
	e  env
	fs *pflag.FlagSet

	// create lb
	vip, protocol, mode, sel, timeout, endpoints string
	secondary                                    []string
	port, portEnd                                uint16
	n2                                           bool
	pfcp                                         bool
	diameter                                     bool
	diamHost, diamRealm, diamMode                string
	diamApps                                     []uint
	probe, probeReq, probeResp                   string
	probeInterval, probeTimeout                  string
	probePort                                    uint16
	probeRetries                                 uint32
	pathFailover                                 string
	pathHoldDown                                 time.Duration
	// apply
	file string
}

func (c *commands) registerFlags(verb string) {
	fs := c.fs
	switch verb {
	case "create":
		fs.StringVar(&c.vip, "vip", "", "virtual IP")
		fs.StringSliceVar(&c.secondary, "secondary-vips", nil, "extra VIPs (SCTP multi-homing)")
		fs.Uint16Var(&c.port, "port", 0, "service port (first of a range with --port-end)")
		fs.Uint16Var(&c.portEnd, "port-end", 0, "last port of a range")
		fs.StringVar(&c.protocol, "protocol", api.ProtocolTCP, "tcp, udp or sctp")
		fs.StringVar(&c.mode, "mode", "", "default, onearm, fullnat or dsr")
		fs.StringVar(&c.sel, "select", "", "rr, hash, persist, leastconn or maglev")
		fs.StringVar(&c.timeout, "timeout", "", "idle timeout (30s, 5m or seconds)")
		fs.StringVar(&c.endpoints, "endpoints", "", "ADDR[:PORT[:WEIGHT]],...")
		fs.BoolVar(&c.n2, "n2", false, "NGAP-aware N2 proxy (sctp)")
		fs.BoolVar(&c.pfcp, "pfcp", false, "PFCP-aware N4 proxy (udp, port 8805; the endpoints are UPFs)")
		fs.BoolVar(&c.diameter, "diameter", false, "Diameter relay/proxy agent (tcp or sctp; the endpoints are Diameter servers)")
		fs.StringVar(&c.diamHost, "origin-host", "", "Diameter agent's Origin-Host (with --diameter)")
		fs.StringVar(&c.diamRealm, "origin-realm", "", "Diameter agent's Origin-Realm (with --diameter)")
		fs.StringVar(&c.diamMode, "diameter-mode", "", "relay (default) or proxy (with --diameter)")
		fs.UintSliceVar(&c.diamApps, "applications", nil, "application IDs a Diameter proxy serves, e.g. 4,16777238")
		fs.StringVar(&c.probe, "probe", "", "probe type: tcp, udp, http, https, ping, sctp, none")
		fs.Uint16Var(&c.probePort, "probe-port", 0, "probed port (default: the endpoint's)")
		fs.StringVar(&c.probeReq, "probe-req", "", "HTTP path or UDP payload")
		fs.StringVar(&c.probeResp, "probe-resp", "", "text the reply must contain")
		fs.StringVar(&c.probeInterval, "probe-interval", "", "time between probes (5s)")
		fs.StringVar(&c.probeTimeout, "probe-timeout", "", "probe timeout (2s)")
		fs.Uint32Var(&c.probeRetries, "probe-retries", 0, "consecutive results that flip an endpoint (2)")
		fs.StringVar(&c.pathFailover, "sctp-path-failover", "", "on or off: steer the endpoint onto the client's live path (default: on with secondary VIPs)")
		fs.DurationVar(&c.pathHoldDown, "sctp-path-hold-down", 0, "how long a client address goes unanswered before steering (1s)")
	case "apply":
		fs.StringVarP(&c.file, "filename", "f", "", "YAML or JSON file, - for stdin")
	}
}

// resource maps the accepted spellings to a canonical resource name.
func resource(args []string, verb string) (string, []string, error) {
	if len(args) == 0 {
		return "", nil, usagef("%s: missing resource (lb, ct, ep, bgp, bfd, vip, ha)", verb)
	}
	switch strings.ToLower(args[0]) {
	case "lb", "lbs", "svc", "service", "services":
		return "lb", args[1:], nil
	case "ct", "conntrack", "conn", "conns", "connections":
		return "ct", args[1:], nil
	case "ep", "eps", "endpoint", "endpoints":
		return "ep", args[1:], nil
	case "bgp", "peer", "peers":
		return "bgp", args[1:], nil
	case "bfd":
		return "bfd", args[1:], nil
	case "vip", "vips":
		return "vip", args[1:], nil
	case "ha":
		return "ha", args[1:], nil
	}
	return "", nil, usagef("%s: unknown resource %q (lb, ct, ep, bgp, bfd, vip, ha)", verb, args[0])
}

// parseSeconds accepts "30s"/"5m" or a plain number of seconds.
func parseSeconds(flag, s string) (uint32, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d%time.Second != 0 || d/time.Second > 1<<32-1 {
		return 0, usagef("--%s %q: use whole seconds like 30s, 5m or 30", flag, s)
	}
	return uint32(d / time.Second), nil
}

func (c *commands) create(ctx context.Context, cl *api.Client, args []string) error {
	res, args, err := resource(args, "create")
	if err != nil {
		return err
	}
	if res != "lb" {
		return usagef("create: only lb can be created")
	}
	if len(args) != 1 {
		return usagef("create lb: exactly one NAME expected, got %d", len(args))
	}
	if c.vip == "" || c.port == 0 || c.endpoints == "" {
		return usagef("create lb: --vip, --port and --endpoints are required")
	}
	eps, err := parseEndpoints(c.endpoints)
	if err != nil {
		return usagef("--endpoints: %v", err)
	}
	svc := api.Service{
		Name: args[0], VIP: c.vip, SecondaryVIPs: c.secondary, Port: c.port, PortEnd: c.portEnd,
		Protocol: c.protocol, Mode: c.mode, Select: c.sel, Endpoints: eps, N2: c.n2, PFCP: c.pfcp,
		SCTPPathFailover: c.pathFailover, SCTPPathHoldDownMillis: uint32(c.pathHoldDown.Milliseconds()),
	}
	if c.pathHoldDown < 0 || (c.pathHoldDown > 0 && c.pathHoldDown < time.Millisecond) {
		return usagef("--sctp-path-hold-down: %s: want at least 1ms", c.pathHoldDown)
	}
	diamSet := c.diamHost != "" || c.diamRealm != "" || c.diamMode != "" || len(c.diamApps) > 0
	if diamSet && !c.diameter {
		return usagef("create lb: --origin-host, --origin-realm, --diameter-mode and --applications need --diameter")
	}
	if c.diameter {
		svc.Diameter = &api.DiameterSpec{OriginHost: c.diamHost, OriginRealm: c.diamRealm, Mode: c.diamMode}
		for _, a := range c.diamApps {
			if a > 1<<32-1 {
				return usagef("--applications: %d is not a 32-bit application ID", a)
			}
			svc.Diameter.Applications = append(svc.Diameter.Applications, uint32(a))
		}
	}
	if svc.IdleTimeoutSeconds, err = parseSeconds("timeout", c.timeout); err != nil {
		return err
	}
	probeSet := c.fs.Changed("probe-port") || c.probeReq != "" || c.probeResp != "" ||
		c.probeInterval != "" || c.probeTimeout != "" || c.probeRetries != 0
	if c.probe == "" && probeSet {
		return usagef("create lb: --probe-* options need --probe TYPE")
	}
	if c.probe != "" {
		p := &api.Probe{Type: c.probe, Port: c.probePort, Request: c.probeReq, Response: c.probeResp, Retries: c.probeRetries}
		if p.IntervalSeconds, err = parseSeconds("probe-interval", c.probeInterval); err != nil {
			return err
		}
		if p.TimeoutSeconds, err = parseSeconds("probe-timeout", c.probeTimeout); err != nil {
			return err
		}
		svc.Probe = p
	}
	if err := cl.CreateService(ctx, svc); err != nil {
		return err
	}
	fmt.Fprintf(c.e.stdout, "service %q created\n", svc.Name)
	return nil
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// readServices parses one service, a list, or several YAML documents,
// rejecting unknown fields like the daemon does.
func readServices(raw []byte) ([]api.Service, error) {
	var out []api.Service
	for i, doc := range docSeparator.Split(string(raw), -1) {
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		js = bytes.TrimSpace(js)
		if len(js) == 0 || string(js) == "null" {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if js[0] == '[' {
			var list []api.Service
			if err := dec.Decode(&list); err != nil {
				return nil, fmt.Errorf("document %d: %w", i+1, err)
			}
			out = append(out, list...)
			continue
		}
		var s api.Service
		if err := dec.Decode(&s); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, errors.New("no services in the input")
	}
	return out, nil
}

func (c *commands) apply(ctx context.Context, cl *api.Client, args []string) error {
	if len(args) != 0 {
		return usagef("apply: unexpected arguments %q (use -f FILE)", args)
	}
	if c.file == "" {
		return usagef("apply: -f FILE is required")
	}
	var raw []byte
	var err error
	if c.file == "-" {
		raw, err = io.ReadAll(io.LimitReader(c.e.stdin, 16<<20))
	} else {
		raw, err = os.ReadFile(c.file)
	}
	if err != nil {
		return usagef("apply: read %s: %v", c.file, err)
	}
	services, err := readServices(raw)
	if err != nil {
		return usagef("apply: %s: %v", c.file, err)
	}
	for _, s := range services {
		if err := cl.ApplyService(ctx, s); err != nil {
			return fmt.Errorf("service %q: %w", s.Name, err)
		}
		fmt.Fprintf(c.e.stdout, "service %q applied\n", s.Name)
	}
	return nil
}

func (c *commands) get(ctx context.Context, cl *api.Client, args []string) error {
	res, args, err := resource(args, "get")
	if err != nil {
		return err
	}
	switch res {
	case "bgp", "bfd", "vip":
		return c.getAdvertise(ctx, cl, res, args)
	case "ha":
		return c.getHA(ctx, cl, args)
	case "lb":
		if len(args) > 1 {
			return usagef("get lb: at most one NAME")
		}
		var list []api.ServiceStatus
		if len(args) == 1 {
			st, err := cl.GetService(ctx, args[0])
			if err != nil {
				return err
			}
			if c.g.output == "json" {
				return writeJSON(c.e.stdout, st)
			}
			list = []api.ServiceStatus{st}
		} else if list, err = cl.ListServices(ctx); err != nil {
			return err
		}
		if c.g.output == "json" {
			return writeJSON(c.e.stdout, list)
		}
		return printServices(c.e.stdout, list, c.g.output == "wide")
	case "ct":
		if len(args) != 0 {
			return usagef("get ct: unexpected arguments %q", args)
		}
		conns, err := cl.Conntrack(ctx)
		if err != nil {
			return err
		}
		// Connections a restart could not carry over are gone from the
		// table: say so, or the table alone would look complete.
		if h, err := cl.Health(ctx); err == nil && h.ConntrackNotMigrated > 0 {
			fmt.Fprintf(c.e.stderr, "warning: %d conntrack entries (connection directions) could not be migrated when the daemon last started with a new conntrack layout or size; those connections were dropped\n", h.ConntrackNotMigrated)
		}
		if c.g.output == "json" {
			return writeJSON(c.e.stdout, conns)
		}
		return printConns(c.e.stdout, conns, c.g.output == "wide")
	default: // ep
		if len(args) > 1 {
			return usagef("get ep: at most one service NAME")
		}
		list, err := cl.ListServices(ctx)
		if err != nil {
			return err
		}
		if len(args) == 1 {
			var only []api.ServiceStatus
			for _, s := range list {
				if s.Service.Name == args[0] {
					only = append(only, s)
				}
			}
			if len(only) == 0 {
				return &api.StatusError{Code: 404, Body: api.Error{Message: fmt.Sprintf("service %q not found", args[0])}}
			}
			list = only
		}
		if c.g.output == "json" {
			return writeJSON(c.e.stdout, endpointRows(list))
		}
		return printEndpoints(c.e.stdout, list)
	}
}

func (c *commands) delete(ctx context.Context, cl *api.Client, args []string) error {
	res, args, err := resource(args, "delete")
	if err != nil {
		return err
	}
	switch res {
	case "lb":
		if len(args) != 1 {
			return usagef("delete lb: exactly one NAME expected")
		}
		if err := cl.DeleteService(ctx, args[0]); err != nil {
			return err
		}
		fmt.Fprintf(c.e.stdout, "service %q deleted\n", args[0])
	case "ct":
		if len(args) != 0 {
			return usagef("delete ct: unexpected arguments %q", args)
		}
		if err := cl.FlushConntrack(ctx); err != nil {
			return err
		}
		fmt.Fprintln(c.e.stdout, "conntrack flushed")
	case "bgp", "bfd", "vip", "ha":
		return usagef("delete %s: peers, sessions and announcements follow the advertisement configuration (PUT /v1/advertisement or --advertisement-config)", res)
	default:
		return usagef("delete: endpoints are deleted by applying the service without them")
	}
	return nil
}

func (c *commands) health(ctx context.Context, cl *api.Client, args []string) error {
	if len(args) != 0 {
		return usagef("health: unexpected arguments %q", args)
	}
	h, err := cl.Health(ctx)
	if err != nil {
		return err
	}
	if c.g.output == "json" {
		return writeJSON(c.e.stdout, h)
	}
	return printHealth(c.e.stdout, h)
}

// errNotReady is the answer of a reachable daemon that is not ready.
var errNotReady = errors.New("daemon not ready")

// ready is for readiness probes: success only when the daemon answers and
// is ready (not waiting for its HA peers' bulk resync).
func (c *commands) ready(ctx context.Context, cl *api.Client, args []string) error {
	if len(args) != 0 {
		return usagef("ready: unexpected arguments %q", args)
	}
	h, err := cl.Health(ctx)
	if err != nil {
		return err
	}
	if h.Status != "ok" {
		return fmt.Errorf("%w: %s (%s)", errNotReady, h.Status, orDefault(h.NotReady, "no reason given"))
	}
	fmt.Fprintln(c.e.stdout, "ready")
	return nil
}

// resolveToken finds the bearer token: --token, else --token-file, else the
// daemon's token file on this node when it is readable (root), else none
// (the daemon then answers 401 and run explains what to do).
func (g *globals) resolveToken(e env) (string, error) {
	if g.token != "" {
		return g.token, nil
	}
	path := g.tokenFile
	if path == "" {
		if e.defaultTokenFile == "" {
			return "", nil
		}
		raw, err := os.ReadFile(e.defaultTokenFile)
		if err != nil {
			return "", nil
		}
		return strings.TrimSpace(string(raw)), nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	tok := strings.TrimSpace(string(raw))
	if tok == "" {
		return "", fmt.Errorf("--token-file %s is empty", path)
	}
	return tok, nil
}
