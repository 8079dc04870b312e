// Package annotations turns a Service's telcolb.io/ annotations (and, for
// users migrating from kube-loxilb, the same names under loxilb.io/) into a
// validated Spec. Every problem is reported as an *Error naming the
// annotation, so the controller can put it in an Event verbatim.
package annotations

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Prefixes of the annotations this package reads.
const (
	Prefix       = "telcolb.io/"
	LoxilbPrefix = "loxilb.io/"
)

// Annotation names (without prefix).
const (
	PoolSelect          = "poolSelect"
	PoolSelectSecondary = "poolSelectSecondary"
	SecondaryIPs        = "secondaryIPs"
	StaticIP            = "staticIP"
	LBMode              = "lbmode"
	EPSelect            = "epselect"
	Liveness            = "liveness"
	ProbeType           = "probetype"
	ProbePort           = "probeport"
	ProbeReq            = "probereq"
	ProbeResp           = "proberesp"
	ProbeTimeout        = "probetimeout"
	ProbeRetries        = "proberetries"
	Timeout             = "timeout"
	IPAM                = "ipam"
	UsePodNetwork       = "usepodnetwork"
	MultusNets          = "multus-nets"
	SharingKey          = "sharing-key"
	// N2 ("true"/"false") makes the SCTP ports of the Service NGAP-aware N2
	// proxies (per-UE steering to AMFs) instead of per-association L4 rules.
	N2 = "n2"
)

// Known lists every annotation name Parse understands.
var Known = []string{PoolSelect, PoolSelectSecondary, SecondaryIPs, StaticIP, LBMode, EPSelect, Liveness,
	ProbeType, ProbePort, ProbeReq, ProbeResp, ProbeTimeout, ProbeRetries, Timeout, IPAM, UsePodNetwork,
	MultusNets, SharingKey, N2}

// MaxSecondary is the SCTP multi-homing limit on secondary VIPs.
const MaxSecondary = 3

// IPAM modes.
const (
	IPAMIPv4    = "ipv4"
	IPAMIPv6    = "ipv6"
	IPAMIPv6to4 = "ipv6to4"
)

// Probe types (the daemon API's names).
const (
	ProbeNone  = "none"
	ProbeTCP   = "tcp"
	ProbeUDP   = "udp"
	ProbeHTTP  = "http"
	ProbeHTTPS = "https"
	ProbePing  = "ping"
	ProbeSCTP  = "sctp"
)

// Error is one invalid annotation.
type Error struct {
	// Annotation is the full key as the user wrote it, e.g. "telcolb.io/lbmode".
	Annotation string
	Value      string
	Reason     string
}

func (e *Error) Error() string {
	return fmt.Sprintf("annotation %s=%q: %s", e.Annotation, e.Value, e.Reason)
}

// Options tunes Parse.
type Options struct {
	// AcceptLoxilb also reads the names under loxilb.io/; telcolb.io/ wins
	// when both are set.
	AcceptLoxilb bool
	// DefaultPool is used when poolSelect is absent.
	DefaultPool string
	// PoolExists, when set, validates pool names so an unknown pool is
	// reported against the annotation that names it.
	PoolExists func(string) bool
	// Ignore lists annotation names under telcolb.io/ that are not user
	// input (the controller's own bookkeeping) and must not be reported as
	// unknown.
	Ignore []string
}

// ProbeSpec is the endpoint health check asked for. An empty Type means "the
// Service port's protocol" (tcp, udp or sctp), resolved per port by ProbeFor.
type ProbeSpec struct {
	Type           string
	Port           uint16
	Request        string
	Response       string
	TimeoutSeconds uint32
	Retries        uint32
}

// Spec is the validated per-Service configuration.
type Spec struct {
	Pool string
	// SecondaryPools (at most 3) give one secondary VIP each; ignored when
	// SecondaryIPs is set.
	SecondaryPools []string
	SecondaryIPs   []netip.Addr
	// StaticIPs has at most one address per family.
	StaticIPs          []netip.Addr
	Mode               string
	Select             string
	Probe              *ProbeSpec
	IdleTimeoutSeconds uint32
	IPAM               string
	UsePodNetwork      bool
	MultusNets         []string
	SharingKey         string
	N2                 bool
}

// Result is what Parse returns besides errors: the spec and notes worth an
// Event even though nothing is wrong (e.g. which annotation won).
type Result struct {
	Spec     Spec
	Warnings []string
}

var (
	poolNameRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
	sharingKeyRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
	// A network-attachment-definition reference: name or namespace/name.
	netRE = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
)

// Parse validates every annotation of a Service. It returns all problems at
// once (errors.Join of *Error, sorted by annotation) so a user fixes them in
// one go; the returned Result is only meaningful when err is nil.
func Parse(ann map[string]string, opts Options) (Result, error) {
	p := parser{opts: opts, ann: ann}
	var res Result
	res.Spec.Pool = opts.DefaultPool
	ignore := map[string]bool{}
	for _, n := range opts.Ignore {
		ignore[n] = true
	}
	known := map[string]bool{}
	for _, n := range Known {
		known[n] = true
	}
	for k := range ann {
		if name, ok := strings.CutPrefix(k, Prefix); ok && !known[name] && !ignore[name] {
			p.fail(k, ann[k], "unknown telcolb.io annotation (known: "+strings.Join(Known, ", ")+")")
		}
		if name, ok := strings.CutPrefix(k, LoxilbPrefix); ok && opts.AcceptLoxilb && !known[name] {
			res.Warnings = append(res.Warnings, fmt.Sprintf("annotation %s is not supported by telcolb and is ignored", k))
		}
	}
	for _, name := range Known {
		if opts.AcceptLoxilb {
			tv, tok := ann[Prefix+name]
			lv, lok := ann[LoxilbPrefix+name]
			if tok && lok && tv != lv {
				res.Warnings = append(res.Warnings, fmt.Sprintf("both %s%s and %s%s are set; %s%s wins", Prefix, name, LoxilbPrefix, name, Prefix, name))
			}
		}
	}
	s := &res.Spec

	if k, v, ok := p.get(PoolSelect); ok {
		if p.poolName(k, v) {
			s.Pool = v
		}
	}
	if k, v, ok := p.get(PoolSelectSecondary); ok {
		names := splitList(v)
		switch {
		case len(names) == 0:
			p.fail(k, v, "empty pool list")
		case len(names) > MaxSecondary:
			p.fail(k, v, fmt.Sprintf("at most %d secondary pools", MaxSecondary))
		default:
			okAll := true
			for _, n := range names {
				okAll = p.poolName(k, n) && okAll
			}
			if okAll {
				s.SecondaryPools = names
			}
		}
	}
	if k, v, ok := p.get(SecondaryIPs); ok {
		ips, good := p.addrList(k, v, MaxSecondary)
		if good {
			s.SecondaryIPs = ips
			if pk, _, both := p.get(PoolSelectSecondary); both {
				res.Warnings = append(res.Warnings, fmt.Sprintf("%s is set, so %s is ignored", k, pk))
				s.SecondaryPools = nil
			}
		}
	}
	if k, v, ok := p.get(StaticIP); ok {
		ips, good := p.addrList(k, v, 2)
		if good && len(ips) == 2 && (ips[0].Is4() == ips[1].Is4()) {
			p.fail(k, v, "two static IPs must be one IPv4 and one IPv6 (dual-stack)")
			good = false
		}
		if good {
			s.StaticIPs = ips
			for _, sec := range s.SecondaryIPs {
				for _, st := range ips {
					if sec == st {
						p.fail(k, v, fmt.Sprintf("%s is also listed as a secondary IP", st))
					}
				}
			}
		}
	}
	if k, v, ok := p.get(LBMode); ok {
		switch strings.ToLower(v) {
		case "default", "onearm", "fullnat", "dsr":
			s.Mode = strings.ToLower(v)
		default:
			p.fail(k, v, "want one of default, onearm, fullnat, dsr")
		}
	}
	if k, v, ok := p.get(EPSelect); ok {
		switch strings.ToLower(v) {
		case "rr", "roundrobin":
			s.Select = "rr"
		case "hash":
			s.Select = "hash"
		case "persist":
			s.Select = "persist"
		case "lc", "leastconn":
			s.Select = "leastconn"
		default:
			p.fail(k, v, "want one of rr, hash, persist, lc")
		}
	}
	liveness := false
	if k, v, ok := p.get(Liveness); ok {
		liveness, _ = p.boolean(k, v)
	}
	probeType := ""
	typeSet := false
	if k, v, ok := p.get(ProbeType); ok {
		switch strings.ToLower(v) {
		case ProbeNone, ProbeTCP, ProbeUDP, ProbeHTTP, ProbeHTTPS, ProbePing, ProbeSCTP:
			probeType = strings.ToLower(v)
			typeSet = true
		default:
			p.fail(k, v, "want one of tcp, udp, sctp, http, https, ping, none")
		}
	}
	enabled := (liveness && probeType != ProbeNone) || (typeSet && probeType != ProbeNone)
	probe := &ProbeSpec{Type: probeType}
	for _, name := range []string{ProbePort, ProbeReq, ProbeResp, ProbeTimeout, ProbeRetries} {
		k, v, ok := p.get(name)
		if !ok {
			continue
		}
		if !enabled {
			p.fail(k, v, fmt.Sprintf("has no effect: the probe is off (set %s%s: \"yes\" or a %s%s other than none)", Prefix, Liveness, Prefix, ProbeType))
			continue
		}
		switch name {
		case ProbePort:
			if probeType == ProbePing {
				p.fail(k, v, "ping probes have no port")
				continue
			}
			if n, good := p.number(k, v, 1, 65535); good {
				probe.Port = uint16(n)
			}
		case ProbeReq, ProbeResp:
			switch probeType {
			case ProbeHTTP, ProbeHTTPS, ProbeUDP:
			default:
				p.fail(k, v, "only http, https and udp probes send a request or check a response; set "+Prefix+ProbeType)
				continue
			}
			if len(v) > 1024 {
				p.fail(k, v[:32]+"...", "longer than 1024 bytes")
				continue
			}
			if name == ProbeReq {
				if (probeType == ProbeHTTP || probeType == ProbeHTTPS) && !strings.HasPrefix(v, "/") {
					probe.Request = "/" + v
				} else {
					probe.Request = v
				}
			} else {
				probe.Response = v
			}
		case ProbeTimeout:
			if n, good := p.number(k, v, 1, 3600); good {
				probe.TimeoutSeconds = uint32(n)
			}
		case ProbeRetries:
			if n, good := p.number(k, v, 1, 100); good {
				probe.Retries = uint32(n)
			}
		}
	}
	if enabled {
		s.Probe = probe
	}
	if k, v, ok := p.get(Timeout); ok {
		if n, good := p.number(k, v, 1, 7*24*3600); good {
			s.IdleTimeoutSeconds = uint32(n)
		}
	}
	if k, v, ok := p.get(IPAM); ok {
		switch strings.ToLower(v) {
		case IPAMIPv4, IPAMIPv6, IPAMIPv6to4:
			s.IPAM = strings.ToLower(v)
		default:
			p.fail(k, v, "want one of ipv4, ipv6, ipv6to4")
		}
	}
	if k, v, ok := p.get(UsePodNetwork); ok {
		s.UsePodNetwork, _ = p.boolean(k, v)
	}
	if k, v, ok := p.get(MultusNets); ok {
		nets := splitList(v)
		if len(nets) == 0 {
			p.fail(k, v, "empty network list")
		}
		good := true
		seen := map[string]bool{}
		for _, n := range nets {
			if !netRE.MatchString(n) {
				p.fail(k, v, fmt.Sprintf("%q is not a network name (name or namespace/name, lowercase DNS labels)", n))
				good = false
			}
			if seen[n] {
				p.fail(k, v, fmt.Sprintf("network %q listed twice", n))
				good = false
			}
			seen[n] = true
		}
		if good {
			s.MultusNets = nets
		}
	}
	if k, v, ok := p.get(SharingKey); ok {
		if !sharingKeyRE.MatchString(v) {
			p.fail(k, v, "want 1-63 of [A-Za-z0-9._-], alphanumeric at both ends")
		} else {
			s.SharingKey = v
		}
	}
	if k, v, ok := p.get(N2); ok {
		s.N2, _ = p.boolean(k, v)
	}
	if len(s.StaticIPs) > 0 && s.IPAM != "" {
		for _, ip := range s.StaticIPs {
			if (s.IPAM == IPAMIPv4 && !ip.Is4()) || (s.IPAM != IPAMIPv4 && ip.Is4()) {
				k, v, _ := p.get(StaticIP)
				p.fail(k, v, fmt.Sprintf("%s does not match ipam mode %s", ip, s.IPAM))
			}
		}
	}
	if len(p.errs) == 0 {
		return res, nil
	}
	sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Annotation < p.errs[j].Annotation })
	errs := make([]error, len(p.errs))
	for i, e := range p.errs {
		errs[i] = e
	}
	return res, errors.Join(errs...)
}

// ProbeFor resolves the probe for one Service port: an unset type follows
// the port's protocol (tcp, udp, sctp), as kube-loxilb users expect.
func (ps *ProbeSpec) ProbeFor(protocol string) ProbeSpec {
	out := *ps
	if out.Type == "" {
		out.Type = strings.ToLower(protocol)
	}
	return out
}

// Errors extracts the *Error values from an error returned by Parse.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if ae, ok := e.(*Error); ok {
			out = append(out, ae)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		walk(errors.Unwrap(e))
	}
	walk(err)
	return out
}

type parser struct {
	opts Options
	ann  map[string]string
	errs []*Error
}

func (p *parser) fail(key, value, reason string) {
	p.errs = append(p.errs, &Error{Annotation: key, Value: value, Reason: reason})
}

// get returns the key actually used and its trimmed value.
func (p *parser) get(name string) (string, string, bool) {
	if v, ok := p.ann[Prefix+name]; ok {
		return Prefix + name, strings.Trim(strings.TrimSpace(v), "“”"), true
	}
	if p.opts.AcceptLoxilb {
		if v, ok := p.ann[LoxilbPrefix+name]; ok {
			return LoxilbPrefix + name, strings.Trim(strings.TrimSpace(v), "“”"), true
		}
	}
	return "", "", false
}

func (p *parser) poolName(key, name string) bool {
	if !poolNameRE.MatchString(name) {
		p.fail(key, name, "not a valid pool name")
		return false
	}
	if p.opts.PoolExists != nil && !p.opts.PoolExists(name) {
		p.fail(key, name, fmt.Sprintf("pool %q is not configured", name))
		return false
	}
	return true
}

func (p *parser) boolean(key, v string) (bool, bool) {
	switch strings.ToLower(v) {
	case "yes", "true", "on", "1":
		return true, true
	case "no", "false", "off", "0":
		return false, true
	}
	p.fail(key, v, "want yes or no")
	return false, false
}

func (p *parser) number(key, v string, lo, hi uint64) (uint64, bool) {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n < lo || n > hi {
		p.fail(key, v, fmt.Sprintf("want an integer from %d to %d", lo, hi))
		return 0, false
	}
	return n, true
}

func (p *parser) addrList(key, v string, max int) ([]netip.Addr, bool) {
	items := splitList(v)
	if len(items) == 0 {
		p.fail(key, v, "empty address list")
		return nil, false
	}
	if len(items) > max {
		p.fail(key, v, fmt.Sprintf("at most %d addresses", max))
		return nil, false
	}
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, it := range items {
		a, err := netip.ParseAddr(it)
		if err != nil || a.Zone() != "" {
			p.fail(key, v, fmt.Sprintf("%q is not an IP address", it))
			return nil, false
		}
		a = a.Unmap()
		if !a.IsGlobalUnicast() && !a.IsPrivate() {
			p.fail(key, v, fmt.Sprintf("%s is not a unicast address usable as a VIP", a))
			return nil, false
		}
		if seen[a] {
			p.fail(key, v, fmt.Sprintf("%s listed twice", a))
			return nil, false
		}
		seen[a] = true
		out = append(out, a)
	}
	return out, true
}

// splitList splits a comma list, dropping blanks and the curly quotes that
// copy-paste from kube-loxilb's docs leaves behind.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.Trim(strings.TrimSpace(s), "\"“”'")
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
