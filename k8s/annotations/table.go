package annotations

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/telcolb/telcolb/api"
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
	ProbeInterval       = "probeinterval"
	ProbeRetries        = "proberetries"
	Timeout             = "timeout"
	IPAM                = "ipam"
	UsePodNetwork       = "usepodnetwork"
	MultusNets          = "multus-nets"
	SharingKey          = "sharing-key"
	// N2 ("true"/"false") makes the SCTP ports of the Service NGAP-aware N2
	// proxies (per-UE steering to AMFs) instead of per-association L4 rules.
	N2 = "n2"
	// PFCP ("true"/"false") makes the Service's UDP port 8805 a PFCP-aware
	// N4 proxy (SMFs see one UPF, the endpoints are the UPFs).
	PFCP = "pfcp"
	// Diameter ("relay" or "proxy") makes the Service's TCP and SCTP ports
	// Diameter agents (sctplb/diam): the endpoints are the Diameter
	// servers, every request of a Session-Id goes to one of them.
	Diameter = "diameter"
	// DiameterOriginHost and DiameterOriginRealm are the agent's Diameter
	// identity (required with Diameter).
	DiameterOriginHost  = "diameter-origin-host"
	DiameterOriginRealm = "diameter-origin-realm"
	// DiameterApplications lists the application IDs a proxy agent serves,
	// comma separated (required with Diameter "proxy").
	DiameterApplications = "diameter-applications"
	// Reallocate ("true") lets the controller move VIPs that the
	// configuration no longer allows; without it they are kept.
	Reallocate = "reallocate"
)

// LoxilbProbeIntervalDefault is kube-loxilb's probe duration when
// loxilb.io/liveness is on and loxilb.io/probetimeout is absent (its docs:
// "The default value is 60 seconds").
const LoxilbProbeIntervalDefault = 60

// Entry is one annotation: its name (under both prefixes), what kube-loxilb
// means by it, what telcolb does with it, and the parser that reads it into
// the Spec (or, for values other annotations qualify, into the draft the
// cross-field checks finish).
type Entry struct {
	Name string
	// Loxilb is kube-loxilb's meaning; empty for telcolb's own names.
	Loxilb string
	// Telcolb is what telcolb does with it (under loxilb.io/ when that
	// differs).
	Telcolb string
	parse   func(p *parser, f field, d *draft)
}

// field is one annotation as found on the Service.
type field struct {
	key    string // as the user wrote it, with prefix
	value  string // trimmed of blanks and the docs' curly quotes
	loxilb bool   // read under loxilb.io/: kube-loxilb's meaning applies
}

// draft collects what the cross-field checks need: values whose meaning
// depends on other annotations, with the field each came from.
type draft struct {
	secondaryPools, secondaryIPs, staticIP *field

	liveness, livenessOn bool
	livenessLoxilb       bool
	probeType            string
	typeField            *field
	probePort            uint16
	portField            *field
	request, response    *field
	interval, timeout    uint32
	intervalField        *field
	timeoutField         *field
	loxilbDuration       *field // loxilb.io/probetimeout, read as the interval
	retries              uint32
	retriesField         *field
	// Diameter agent
	diameter, diamHost, diamRealm, diamApps *field
}

var (
	poolNameRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
	sharingKeyRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
	// A network-attachment-definition reference: name or namespace/name.
	netRE = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
)

// Table lists every annotation Parse reads, in the order it reads them.
var Table = []Entry{
	{PoolSelect, "IP pool the external IP is allocated from; default \"defaultPool\"", "same", parsePool},
	{PoolSelectSecondary, "up to 3 pools giving one secondary (SCTP multi-homing) IP each; ignored when secondaryIPs is set", "same; only for Services with an SCTP port", parseSecondaryPools},
	{SecondaryIPs, "up to 3 secondary (SCTP multi-homing) IPs; wins over poolSelectSecondary", "same", parseSecondaryIPs},
	{StaticIP, "the external IP, also outside every pool", "same; one IPv4 and one IPv6 for dual-stack", parseStaticIP},
	{LBMode, "default, onearm, fullnat or dsr", "same", parseMode},
	{EPSelect, "endpoint selection: rr (default), hash, persist, lc, maglev", "same (lc is leastconn)", parseSelect},
	{Liveness, "yes: health-check endpoints and use only live ones; default no", "same", parseLiveness},
	{ProbeType, "udp, tcp, https, http, sctp, ping or none; default the port's protocol", "same; a type other than none turns probing on", parseProbeType},
	{ProbePort, "probe port; not applied without probetype or with ping/none", "same; loxilb.io/: ignored with a note where kube-loxilb ignores it; telcolb.io/: an error", parseProbePort},
	{ProbeReq, "probe request; not applied without probetype or with a type that sends nothing", "http path or udp payload; loxilb.io/: ignored with a note for tcp, sctp, ping, none; telcolb.io/: an error", parseProbeReq},
	{ProbeResp, "expected probe response; same conditions as probereq", "as probereq", parseProbeResp},
	{ProbeTimeout, "liveness probe duration in seconds: one probe per period; default 60", "loxilb.io/: the probe interval (default 60 with loxilb.io/liveness); telcolb.io/: the per-probe timeout, shorter than the interval", parseProbeTimeout},
	{ProbeInterval, "", "telcolb.io/ only: seconds between probes (default 5), 2-3600", parseProbeInterval},
	{ProbeRetries, "failed probes before an endpoint is inactive; default 2", "same, 1-10", parseProbeRetries},
	{Timeout, "session retention (idle timeout) in seconds", "same, 1-86400", parseTimeout},
	{IPAM, "ipv4, ipv6 or ipv6to4 (IPv6 VIP, IPv4 endpoints)", "same", parseIPAM},
	{UsePodNetwork, "yes: pod IPs and targetPort are the endpoints", "same", parseUsePodNetwork},
	{MultusNets, "Multus networks whose pod addresses are the endpoints", "same", parseMultusNets},
	{SharingKey, "", "Services with the same key may share a VIP when no port clashes; without it a VIP is exclusive", parseSharingKey},
	{N2, "", "yes: the SCTP ports are NGAP-aware N2 proxies", parseN2},
	{PFCP, "", "yes: UDP port 8805 is a PFCP-aware N4 proxy (SMFs see one UPF; the endpoints are the UPFs)", parsePFCP},
	{Diameter, "", "relay or proxy: the TCP and SCTP ports are Diameter agents (RFC 6733; the endpoints are the Diameter servers, every request of a Session-Id goes to one; the VIP must be a local address of the node)", parseDiameterField},
	{DiameterOriginHost, "", "the Diameter agent's Origin-Host (an FQDN; required with diameter)", parseDiameterField},
	{DiameterOriginRealm, "", "the Diameter agent's Origin-Realm (an FQDN; required with diameter)", parseDiameterField},
	{DiameterApplications, "", "application IDs a Diameter proxy serves, comma separated, e.g. 4,16777238 (required with diameter: proxy)", parseDiameterField},
	{Reallocate, "", "yes: VIPs the configuration no longer allows move to an allowed one (default: kept, with an Event)", parseReallocate},
}

// Known lists every annotation name Parse understands.
func Known() []string {
	out := make([]string, len(Table))
	for i, e := range Table {
		out[i] = e.Name
	}
	return out
}

func lookup(name string) *Entry {
	for i := range Table {
		if Table[i].Name == name {
			return &Table[i]
		}
	}
	return nil
}

func parsePool(p *parser, f field, _ *draft) {
	if p.poolName(f.key, f.value) {
		p.res.Spec.Pool = f.value
		p.res.Spec.PoolSelected = true
	}
}

func parseSecondaryPools(p *parser, f field, d *draft) {
	names := splitList(f.value)
	switch {
	case len(names) == 0:
		p.fail(f.key, f.value, "empty pool list")
	case len(names) > MaxSecondary:
		p.fail(f.key, f.value, fmt.Sprintf("at most %d secondary pools", MaxSecondary))
	default:
		okAll := true
		for _, n := range names {
			okAll = p.poolName(f.key, n) && okAll
		}
		if okAll {
			p.res.Spec.SecondaryPools = names
			d.secondaryPools = &f
		}
	}
}

func parseSecondaryIPs(p *parser, f field, d *draft) {
	if ips, ok := p.addrList(f.key, f.value, MaxSecondary); ok {
		p.res.Spec.SecondaryIPs = ips
		d.secondaryIPs = &f
	}
}

func parseStaticIP(p *parser, f field, d *draft) {
	ips, ok := p.addrList(f.key, f.value, 2)
	if ok && len(ips) == 2 && ips[0].Is4() == ips[1].Is4() {
		p.fail(f.key, f.value, "two static IPs must be one IPv4 and one IPv6 (dual-stack)")
		return
	}
	if ok {
		p.res.Spec.StaticIPs = ips
		d.staticIP = &f
	}
}

func parseMode(p *parser, f field, _ *draft) {
	switch v := strings.ToLower(f.value); v {
	case "default", "onearm", "fullnat", "dsr":
		p.res.Spec.Mode = v
	default:
		p.fail(f.key, f.value, "want one of default, onearm, fullnat, dsr")
	}
}

func parseSelect(p *parser, f field, _ *draft) {
	switch strings.ToLower(f.value) {
	case "rr", "roundrobin":
		p.res.Spec.Select = "rr"
	case "hash":
		p.res.Spec.Select = "hash"
	case "persist":
		p.res.Spec.Select = "persist"
	case "lc", "leastconn":
		p.res.Spec.Select = "leastconn"
	case "maglev":
		p.res.Spec.Select = "maglev"
	default:
		p.fail(f.key, f.value, "want one of rr, hash, persist, lc, maglev")
	}
}

func parseLiveness(p *parser, f field, d *draft) {
	d.liveness, _ = p.boolean(f.key, f.value)
	d.livenessOn = d.liveness
	d.livenessLoxilb = f.loxilb
}

func parseProbeType(p *parser, f field, d *draft) {
	switch v := strings.ToLower(f.value); v {
	case ProbeNone, ProbeTCP, ProbeUDP, ProbeHTTP, ProbeHTTPS, ProbePing, ProbeSCTP:
		d.probeType = v
		d.typeField = &f
	default:
		p.fail(f.key, f.value, "want one of tcp, udp, sctp, http, https, ping, none")
	}
}

func parseProbePort(p *parser, f field, d *draft) {
	if n, ok := p.number(f.key, f.value, 1, 65535); ok {
		d.probePort = uint16(n)
		d.portField = &f
	}
}

func parseProbeReq(p *parser, f field, d *draft) {
	if p.payload(f) {
		d.request = &f
	}
}

func parseProbeResp(p *parser, f field, d *draft) {
	if p.payload(f) {
		d.response = &f
	}
}

func parseProbeTimeout(p *parser, f field, d *draft) {
	if f.loxilb {
		// kube-loxilb's probetimeout is how long one probe period lasts.
		if n, ok := p.number(f.key, f.value, 2, api.MaxProbeIntervalSecs); ok {
			d.interval = uint32(n)
			d.intervalField = &f
			d.loxilbDuration = &f
		}
		return
	}
	if n, ok := p.number(f.key, f.value, 1, api.MaxProbeIntervalSecs-1); ok {
		d.timeout = uint32(n)
		d.timeoutField = &f
	}
}

func parseProbeInterval(p *parser, f field, d *draft) {
	if f.loxilb {
		p.warn("annotation %s is not a kube-loxilb annotation and is ignored (kube-loxilb's probe period is %s%s)", f.key, LoxilbPrefix, ProbeTimeout)
		return
	}
	if n, ok := p.number(f.key, f.value, 2, api.MaxProbeIntervalSecs); ok {
		if d.loxilbDuration != nil {
			p.warn("both %s and %s set the probe interval; %s wins", f.key, d.loxilbDuration.key, f.key)
		}
		d.interval = uint32(n)
		d.intervalField = &f
	}
}

func parseProbeRetries(p *parser, f field, d *draft) {
	if n, ok := p.number(f.key, f.value, 1, api.MaxProbeRetries); ok {
		d.retries = uint32(n)
		d.retriesField = &f
	}
}

func parseTimeout(p *parser, f field, _ *draft) {
	if n, ok := p.number(f.key, f.value, 1, api.MaxIdleTimeoutSeconds); ok {
		p.res.Spec.IdleTimeoutSeconds = uint32(n)
	}
}

func parseIPAM(p *parser, f field, _ *draft) {
	switch v := strings.ToLower(f.value); v {
	case IPAMIPv4, IPAMIPv6, IPAMIPv6to4:
		p.res.Spec.IPAM = v
	default:
		p.fail(f.key, f.value, "want one of ipv4, ipv6, ipv6to4")
	}
}

func parseUsePodNetwork(p *parser, f field, _ *draft) {
	p.res.Spec.UsePodNetwork, _ = p.boolean(f.key, f.value)
}

func parseMultusNets(p *parser, f field, _ *draft) {
	nets := splitList(f.value)
	if len(nets) == 0 {
		p.fail(f.key, f.value, "empty network list")
	}
	good := true
	seen := map[string]bool{}
	for _, n := range nets {
		if !netRE.MatchString(n) {
			p.fail(f.key, f.value, fmt.Sprintf("%q is not a network name (name or namespace/name, lowercase DNS labels)", n))
			good = false
		}
		if seen[n] {
			p.fail(f.key, f.value, fmt.Sprintf("network %q listed twice", n))
			good = false
		}
		seen[n] = true
	}
	if good {
		p.res.Spec.MultusNets = nets
	}
}

func parseSharingKey(p *parser, f field, _ *draft) {
	if !sharingKeyRE.MatchString(f.value) {
		p.fail(f.key, f.value, "want 1-63 of [A-Za-z0-9._-], alphanumeric at both ends")
		return
	}
	p.res.Spec.SharingKey = f.value
}

func parseN2(p *parser, f field, _ *draft) {
	p.res.Spec.N2, _ = p.boolean(f.key, f.value)
}

func parsePFCP(p *parser, f field, _ *draft) {
	p.res.Spec.PFCP, _ = p.boolean(f.key, f.value)
}

// parseDiameterField keeps a Diameter annotation for the cross-field check
// (crosscheckDiameter), which needs all four.
func parseDiameterField(p *parser, f field, d *draft) {
	fc := f
	switch {
	case strings.HasSuffix(f.key, "/"+Diameter):
		d.diameter = &fc
	case strings.HasSuffix(f.key, "/"+DiameterOriginHost):
		d.diamHost = &fc
	case strings.HasSuffix(f.key, "/"+DiameterOriginRealm):
		d.diamRealm = &fc
	case strings.HasSuffix(f.key, "/"+DiameterApplications):
		d.diamApps = &fc
	}
}

func parseReallocate(p *parser, f field, _ *draft) {
	p.res.Spec.Reallocate, _ = p.boolean(f.key, f.value)
}
