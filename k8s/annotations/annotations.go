// Package annotations turns a Service's telcolb.io/ annotations (and, for
// users migrating from kube-loxilb, the same names under loxilb.io/) into a
// validated Spec. Every annotation is one entry of Table; the checks that
// involve several annotations run once, after every entry was read (see
// crosscheck.go). Every problem is reported as an *Error naming the
// annotation as the user wrote it, so the controller can put it in an Event
// verbatim.
package annotations

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/telcolb/telcolb/api"
)

// Prefixes of the annotations this package reads.
const (
	Prefix       = "telcolb.io/"
	LoxilbPrefix = "loxilb.io/"
)

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
	// AcceptLoxilb also reads the names under loxilb.io/, with kube-loxilb's
	// meaning; telcolb.io/ wins when both are set.
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
// Zero numbers mean the daemon's defaults.
type ProbeSpec struct {
	Type            string
	Port            uint16
	Request         string
	Response        string
	IntervalSeconds uint32
	TimeoutSeconds  uint32
	Retries         uint32
}

// Spec is the validated per-Service configuration.
type Spec struct {
	Pool string
	// PoolSelected is true when a poolSelect annotation chose Pool (false:
	// Pool is the default, and the controller may choose among the pools
	// that auto-assign).
	PoolSelected bool
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
	// PFCP makes the Service's UDP port 8805 a PFCP-aware N4 proxy.
	PFCP bool
	// Diameter makes the Service's TCP and SCTP ports Diameter agents.
	Diameter *api.DiameterSpec
	// Reallocate lets the controller move VIPs the configuration no longer
	// allows (by default they are kept, see the controller).
	Reallocate bool
}

// Result is what Parse returns besides errors: the spec and notes worth an
// Event even though nothing is wrong (which annotation won, which one is
// ignored and why).
type Result struct {
	Spec     Spec
	Warnings []string
	// IgnoredLoxilb lists the loxilb.io/ annotations present while
	// Options.AcceptLoxilb is off: the Service works, but not as they ask.
	IgnoredLoxilb []string
}

// Parse validates every annotation of a Service. It returns all problems at
// once (errors.Join of *Error, sorted by annotation) so a user fixes them in
// one go; the returned Result is only meaningful when err is nil.
func Parse(ann map[string]string, opts Options) (Result, error) {
	p := &parser{opts: opts, ann: ann}
	res := Result{Spec: Spec{Pool: opts.DefaultPool}}
	p.res = &res
	p.unknown()
	d := &draft{}
	for _, e := range Table {
		k, v, ok := p.get(e.Name)
		if !ok {
			continue
		}
		e.parse(p, field{key: k, value: v, loxilb: strings.HasPrefix(k, LoxilbPrefix)}, d)
	}
	p.crosscheck(d)
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

// unknown reports telcolb.io/ names nobody reads, notes loxilb.io/ names
// telcolb does not support, and lists loxilb.io/ names ignored for want of
// the migration flag.
func (p *parser) unknown() {
	ignore := map[string]bool{}
	for _, n := range p.opts.Ignore {
		ignore[n] = true
	}
	keys := make([]string, 0, len(p.ann))
	for k := range p.ann {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if name, ok := strings.CutPrefix(k, Prefix); ok && lookup(name) == nil && !ignore[name] {
			p.fail(k, p.ann[k], "unknown telcolb.io annotation (known: "+strings.Join(Known(), ", ")+")")
		}
		name, ok := strings.CutPrefix(k, LoxilbPrefix)
		switch {
		case !ok:
		case !p.opts.AcceptLoxilb:
			p.res.IgnoredLoxilb = append(p.res.IgnoredLoxilb, k)
		case lookup(name) == nil:
			p.warn("annotation %s is not supported by telcolb and is ignored", k)
		}
	}
	if !p.opts.AcceptLoxilb {
		return
	}
	for _, e := range Table {
		tv, tok := p.ann[Prefix+e.Name]
		lv, lok := p.ann[LoxilbPrefix+e.Name]
		if tok && lok && tv != lv {
			p.warn("both %s%s and %s%s are set; %s%s wins", Prefix, e.Name, LoxilbPrefix, e.Name, Prefix, e.Name)
		}
	}
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
