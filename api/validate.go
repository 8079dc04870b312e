package api

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Limits enforced by Validate. They mirror what the datapath can hold
// (dataplane.MaxEndpoints) and keep one rule from claiming absurd ranges.
const (
	MaxNameLength    = 253
	MaxSecondaryVIPs = 3
	// MaxSCTPPathHoldDownMillis bounds Service.SCTPPathHoldDownMillis.
	MaxSCTPPathHoldDownMillis = 60000
	MaxEndpoints              = 64
	MaxWeight                 = 100
	MaxPortRange              = 4096
	MaxIdleTimeoutSeconds     = 24 * 60 * 60
	MaxProbeIntervalSecs      = 3600
	MaxProbeRetries           = 10
	MaxProbePayloadLength     = 1024
	DefaultProbeInterval      = 5
	DefaultProbeTimeout       = 2
	DefaultProbeRetries       = 2
)

// SetDefaults fills the optional fields with the values the daemon uses, so
// two specs that mean the same thing compare equal (a PUT that changes
// nothing must not reprogram the datapath).
func SetDefaults(s *Service) {
	if s.Mode == "" {
		s.Mode = ModeDefault
	}
	if s.Select == "" {
		s.Select = SelectRoundRobin
	}
	if s.PortEnd == s.Port {
		s.PortEnd = 0
	}
	for i := range s.Endpoints {
		if s.Endpoints[i].Weight == 0 {
			s.Endpoints[i].Weight = 1
		}
	}
	if s.Probe != nil {
		if s.Probe.Type == ProbeNone {
			s.Probe = nil
			return
		}
		if s.Probe.IntervalSeconds == 0 {
			s.Probe.IntervalSeconds = DefaultProbeInterval
		}
		if s.Probe.TimeoutSeconds == 0 {
			// The default timeout must still fit a short explicit interval.
			s.Probe.TimeoutSeconds = min(DefaultProbeTimeout, max(s.Probe.IntervalSeconds-1, 1))
		}
		if s.Probe.Retries == 0 {
			s.Probe.Retries = DefaultProbeRetries
		}
	}
}

// Validate checks a Service and returns a *FieldError for the first invalid
// field, in the order the fields appear in the JSON document. Reporting one
// error keeps messages short and deterministic; fixing it and retrying shows
// the next one. It accepts specs with or without SetDefaults applied.
func Validate(s *Service) error {
	if s == nil {
		return fieldErr("", "service is empty")
	}
	if err := validateName(s.Name); err != nil {
		return err
	}
	vip, err := parseAddr("vip", s.VIP)
	if err != nil {
		return err
	}
	if err := checkReachable("vip", vip, s.AllowLinkLocal, s.N2 || s.PFCP || s.Diameter != nil); err != nil {
		return err
	}
	if err := validateSecondaryVIPs(s, vip); err != nil {
		return err
	}
	if err := validatePorts(s); err != nil {
		return err
	}
	switch s.Protocol {
	case ProtocolTCP, ProtocolUDP, ProtocolSCTP:
	case "":
		return fieldErr("protocol", "required: one of tcp, udp, sctp")
	default:
		return fieldErr("protocol", "%q is not one of tcp, udp, sctp", s.Protocol)
	}
	switch s.Mode {
	case "", ModeDefault, ModeOneArm, ModeFullNAT, ModeDSR:
	default:
		return fieldErr("mode", "%q is not one of default, onearm, fullnat, dsr", s.Mode)
	}
	if len(s.SecondaryVIPs) > 0 && s.Protocol == ProtocolSCTP && (s.Mode == ModeOneArm || s.Mode == ModeDSR) {
		return fieldErr("secondaryVIPs", "SCTP multi-homing needs mode default or fullnat, not %s: the endpoint could not be shown one address per VIP", s.Mode)
	}
	switch s.Select {
	case "", SelectRoundRobin, SelectHash, SelectPersist, SelectLeastConn, SelectMaglev:
	default:
		return fieldErr("select", "%q is not one of rr, hash, persist, leastconn, maglev", s.Select)
	}
	switch s.SCTPPathFailover {
	case "", SCTPPathFailoverOn, SCTPPathFailoverOff:
	default:
		return fieldErr("sctpPathFailover", "%q is not one of on, off", s.SCTPPathFailover)
	}
	if s.SCTPPathFailover != "" && s.Protocol != ProtocolSCTP {
		return fieldErr("sctpPathFailover", "only for protocol sctp, not %s", s.Protocol)
	}
	if s.SCTPPathHoldDownMillis > MaxSCTPPathHoldDownMillis {
		return fieldErr("sctpPathHoldDownMillis", "%d exceeds the maximum of %d", s.SCTPPathHoldDownMillis, MaxSCTPPathHoldDownMillis)
	}
	if s.SCTPPathHoldDownMillis != 0 && s.Protocol != ProtocolSCTP {
		return fieldErr("sctpPathHoldDownMillis", "only for protocol sctp, not %s", s.Protocol)
	}
	if s.IdleTimeoutSeconds > MaxIdleTimeoutSeconds {
		return fieldErr("idleTimeoutSeconds", "%d exceeds the maximum of %d (24h)", s.IdleTimeoutSeconds, MaxIdleTimeoutSeconds)
	}
	if err := validateEndpoints(s, vip); err != nil {
		return err
	}
	if err := validateProbe(s); err != nil {
		return err
	}
	if s.N2 && s.Protocol != ProtocolSCTP {
		return fieldErr("n2", "the N2 proxy needs protocol sctp, not %s", s.Protocol)
	}
	if err := validatePFCP(s); err != nil {
		return err
	}
	if err := validateDiameter(s); err != nil {
		return err
	}
	return nil
}

func validateName(name string) error {
	switch {
	case name == "":
		return fieldErr("name", "required")
	case len(name) > MaxNameLength:
		return fieldErr("name", "longer than %d characters", MaxNameLength)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && c != '.' && c != '_' && c != '-' {
			return fieldErr("name", "character %q at %d: only lowercase letters, digits, '.', '_' and '-' are allowed", c, i)
		}
		if !alnum && (i == 0 || i == len(name)-1) {
			return fieldErr("name", "must start and end with a lowercase letter or digit")
		}
	}
	return nil
}

// parseAddr accepts the addresses a datapath rule can carry: no zones (the
// datapath matches on the address alone), no IPv4-mapped IPv6 (ambiguous
// family), nothing unspecified or multicast.
func parseAddr(field, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, fieldErr(field, "required")
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fieldErr(field, "%q is not an IP address", s)
	}
	switch {
	case a.Zone() != "":
		return netip.Addr{}, fieldErr(field, "%q: zoned addresses are not supported", s)
	case a.Is4In6():
		return netip.Addr{}, fieldErr(field, "%q: use the IPv4 form %s", s, a.Unmap())
	case a.IsUnspecified():
		return netip.Addr{}, fieldErr(field, "%q: the unspecified address cannot be used", s)
	case a.IsMulticast():
		return netip.Addr{}, fieldErr(field, "%q: multicast addresses cannot be used", s)
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return netip.Addr{}, fieldErr(field, "%q: the broadcast address cannot be used", s)
	}
	return a, nil
}

// checkReachable refuses what the datapath can never carry between hosts:
// loopback (packets to it never leave the node, and never reach tc),
// link-local unless the service asks for it (valid on one link only; the
// datapath does not track which). loopbackOK is for the proxies (N2, PFCP),
// which terminate the VIP and dial their endpoints from userspace: the
// datapath never sees that traffic.
func checkReachable(field string, a netip.Addr, allowLinkLocal, loopbackOK bool) error {
	switch {
	case a.IsLoopback() && !loopbackOK:
		return fieldErr(field, "%s is a loopback address: traffic to it never reaches the datapath", a)
	case (a.IsLinkLocalUnicast()) && !allowLinkLocal:
		return fieldErr(field, "%s is link-local: set allowLinkLocal to use it (it is valid on one link only)", a)
	}
	return nil
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func validateSecondaryVIPs(s *Service, vip netip.Addr) error {
	if len(s.SecondaryVIPs) > MaxSecondaryVIPs {
		return fieldErr("secondaryVIPs", "%d given, at most %d are allowed", len(s.SecondaryVIPs), MaxSecondaryVIPs)
	}
	seen := map[netip.Addr]bool{vip: true}
	for i, raw := range s.SecondaryVIPs {
		field := fmt.Sprintf("secondaryVIPs[%d]", i)
		a, err := parseAddr(field, raw)
		if err != nil {
			return err
		}
		if a.Is4() != vip.Is4() {
			return fieldErr(field, "%s is %s but the vip is %s: all VIPs of a service share one family", a, family(a), family(vip))
		}
		if err := checkReachable(field, a, s.AllowLinkLocal, false); err != nil {
			return err
		}
		if a == vip {
			return fieldErr(field, "%s repeats the primary vip", a)
		}
		if seen[a] {
			return fieldErr(field, "%s is listed twice", a)
		}
		seen[a] = true
	}
	return nil
}

func validatePorts(s *Service) error {
	if s.Port == 0 {
		return fieldErr("port", "required: 1-65535")
	}
	if s.PortEnd != 0 {
		if s.PortEnd < s.Port {
			return fieldErr("portEnd", "%d is below port %d", s.PortEnd, s.Port)
		}
		if n := int(s.PortEnd) - int(s.Port) + 1; n > MaxPortRange {
			return fieldErr("portEnd", "range %d-%d holds %d ports, at most %d are allowed", s.Port, s.PortEnd, n, MaxPortRange)
		}
	}
	return nil
}

func isRange(s *Service) bool { return s.PortEnd != 0 && s.PortEnd != s.Port }

func validateEndpoints(s *Service, vip netip.Addr) error {
	if len(s.Endpoints) == 0 {
		return fieldErr("endpoints", "at least one endpoint is required")
	}
	if len(s.Endpoints) > MaxEndpoints {
		return fieldErr("endpoints", "%d given, at most %d are allowed", len(s.Endpoints), MaxEndpoints)
	}
	seen := make(map[netip.AddrPort]int, len(s.Endpoints))
	for i, ep := range s.Endpoints {
		prefix := fmt.Sprintf("endpoints[%d]", i)
		a, err := parseAddr(prefix+".address", ep.Address)
		if err != nil {
			return err
		}
		if err := checkReachable(prefix+".address", a, s.AllowLinkLocal, s.N2 || s.PFCP || s.Diameter != nil); err != nil {
			return err
		}
		if a == vip || slices.Contains(s.SecondaryVIPs, a.String()) {
			return fieldErr(prefix+".address", "%s is a VIP of this service: the datapath would send its traffic back to itself", a)
		}
		// NAT64 (IPv6 vip, IPv4 endpoint): the datapath translates the
		// headers and, whatever the mode, the endpoint sees the LB's IPv4
		// address on the egress interface (it cannot see an IPv6 client).
		switch {
		case vip.Is6() && a.Is4() && s.Mode == ModeDSR:
			return fieldErr(prefix+".address", "%s is IPv4 but the vip is IPv6: NAT64 rewrites the headers, which dsr mode cannot do; use default, onearm or fullnat", a)
		case vip.Is4() && a.Is6():
			return fieldErr(prefix+".address", "%s is IPv6 but the vip is IPv4: endpoints must share the vip's family", a)
		}
		if s.Mode == ModeDSR {
			// DSR never rewrites L4: the endpoint sees the port the client used.
			if isRange(s) && ep.Port != 0 {
				return fieldErr(prefix+".port", "must be 0 for a dsr port range (dsr keeps the client's destination port)")
			}
			if ep.Port != 0 && ep.Port != s.Port {
				return fieldErr(prefix+".port", "%d: in dsr mode the port must be 0 or the service port %d", ep.Port, s.Port)
			}
		} else if ep.Port == 0 && !isRange(s) {
			return fieldErr(prefix+".port", "required: port 0 (keep the client's port) is only allowed in dsr mode or with a port range")
		}
		if ep.Weight > MaxWeight {
			return fieldErr(prefix+".weight", "%d exceeds the maximum of %d", ep.Weight, MaxWeight)
		}
		key := netip.AddrPortFrom(a, ep.Port)
		if j, dup := seen[key]; dup {
			return fieldErr(prefix, "%s duplicates endpoints[%d]", key, j)
		}
		seen[key] = i
	}
	return nil
}

func validateProbe(s *Service) error {
	p := s.Probe
	if p == nil {
		return nil
	}
	switch p.Type {
	case ProbeNone:
		return nil
	case ProbeTCP, ProbeUDP, ProbeHTTP, ProbeHTTPS, ProbePing, ProbeSCTP:
	case "":
		return fieldErr("probe.type", "required: one of none, tcp, udp, http, https, ping, sctp")
	default:
		return fieldErr("probe.type", "%q is not one of none, tcp, udp, http, https, ping, sctp", p.Type)
	}
	if p.Port == 0 && p.Type != ProbePing {
		for i, ep := range s.Endpoints {
			if ep.Port == 0 {
				return fieldErr("probe.port", "required because endpoints[%d] has port 0", i)
			}
		}
	}
	if p.Port != 0 && p.Type == ProbePing {
		return fieldErr("probe.port", "ping probes have no port")
	}
	switch p.Type {
	case ProbeTCP, ProbePing, ProbeSCTP:
		if p.Request != "" {
			return fieldErr("probe.request", "%s probes send no request", p.Type)
		}
		if p.Response != "" {
			return fieldErr("probe.response", "%s probes read no response", p.Type)
		}
	case ProbeHTTP, ProbeHTTPS:
		if p.Request != "" && !strings.HasPrefix(p.Request, "/") {
			return fieldErr("probe.request", "%q: an HTTP path must start with '/'", p.Request)
		}
		if strings.ContainsAny(p.Request, " \r\n\t") {
			return fieldErr("probe.request", "%q: an HTTP path cannot contain whitespace", p.Request)
		}
	}
	if len(p.Request) > MaxProbePayloadLength {
		return fieldErr("probe.request", "longer than %d bytes", MaxProbePayloadLength)
	}
	if len(p.Response) > MaxProbePayloadLength {
		return fieldErr("probe.response", "longer than %d bytes", MaxProbePayloadLength)
	}
	interval := p.IntervalSeconds
	if interval == 0 {
		interval = DefaultProbeInterval
	}
	if interval < 2 {
		return fieldErr("probe.intervalSeconds", "%d: at least 2, the timeout (1s or more) must fit in it", interval)
	}
	if interval > MaxProbeIntervalSecs {
		return fieldErr("probe.intervalSeconds", "%d exceeds the maximum of %d", interval, MaxProbeIntervalSecs)
	}
	// An explicit timeout must fit in the interval; an omitted one is
	// shrunk by SetDefaults to fit.
	if p.TimeoutSeconds != 0 && p.TimeoutSeconds >= interval {
		return fieldErr("probe.timeoutSeconds", "%d must be shorter than the interval (%ds)", p.TimeoutSeconds, interval)
	}
	if p.Retries > MaxProbeRetries {
		return fieldErr("probe.retries", "%d exceeds the maximum of %d", p.Retries, MaxProbeRetries)
	}
	return nil
}

// validatePFCP checks a PFCP (N4) proxy service: UDP on port 8805, which
// TS 29.244 fixes (UPFs send their requests to 8805 of the address in the
// CP F-SEID).
func validatePFCP(s *Service) error {
	switch {
	case !s.PFCP && len(s.PFCPSteering) > 0:
		return fieldErr("pfcpSteering", "only a PFCP service (pfcp: true) steers by DNN, slice or network instance")
	case !s.PFCP:
		return nil
	case s.N2:
		return fieldErr("pfcp", "a service is either an N2 or a PFCP proxy, not both")
	case s.Protocol != ProtocolUDP:
		return fieldErr("pfcp", "the PFCP proxy needs protocol udp, not %s", s.Protocol)
	case s.Port != 8805 || (s.PortEnd != 0 && s.PortEnd != s.Port):
		return fieldErr("port", "a PFCP service listens on port 8805 (TS 29.244), not %d", s.Port)
	}
	return validatePFCPSteering(s)
}

var snssaiRE = regexp.MustCompile(`^([0-9]{1,3})(-[0-9a-fA-F]{6})?$`)

func validatePFCPSteering(s *Service) error {
	if len(s.PFCPSteering) > 64 {
		return fieldErr("pfcpSteering", "at most 64 rules, not %d", len(s.PFCPSteering))
	}
	for i, r := range s.PFCPSteering {
		f := fmt.Sprintf("pfcpSteering[%d]", i)
		if r.DNN == "" && r.SNSSAI == "" && r.NetworkInstance == "" {
			return fieldErr(f, "matches nothing: set dnn, snssai or networkInstance")
		}
		for name, v := range map[string]string{"dnn": r.DNN, "networkInstance": r.NetworkInstance} {
			if len(v) > 253 || strings.ContainsFunc(v, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
				return fieldErr(f+"."+name, "%q: at most 253 printable characters, no spaces", v)
			}
		}
		if r.SNSSAI != "" {
			m := snssaiRE.FindStringSubmatch(r.SNSSAI)
			if sst, err := strconv.Atoi(m2(m)); m == nil || err != nil || sst > 255 {
				return fieldErr(f+".snssai", "%q: want SST (0-255) or SST-SD with SD in 6 hex digits, e.g. 1-010203", r.SNSSAI)
			}
		}
		if len(r.Endpoints) == 0 {
			return fieldErr(f+".endpoints", "no endpoint listed")
		}
		for j, e := range r.Endpoints {
			if PFCPSteeringEndpoint(s, e) < 0 {
				return fieldErr(fmt.Sprintf("%s.endpoints[%d]", f, j), "%q is not one of the service's endpoints (address, or address:port)", e)
			}
		}
	}
	return nil
}

func m2(m []string) string {
	if m == nil {
		return ""
	}
	return m[1]
}

// PFCPSteeringEndpoint finds the endpoint a steering rule names ("addr" or
// "addr:port"; port 0 means 8805), or -1.
func PFCPSteeringEndpoint(s *Service, name string) int {
	for i, ep := range s.Endpoints {
		port := ep.Port
		if port == 0 {
			port = 8805
		}
		if name == ep.Address || name == net.JoinHostPort(ep.Address, strconv.Itoa(int(port))) {
			return i
		}
	}
	return -1
}

// validateDiameter checks a Diameter agent service.
func validateDiameter(s *Service) error {
	d := s.Diameter
	switch {
	case d == nil:
		return nil
	case s.N2 || s.PFCP:
		return fieldErr("diameter", "a service is one of an N2 proxy, a PFCP proxy or a Diameter agent")
	case s.Protocol != ProtocolTCP && s.Protocol != ProtocolSCTP:
		return fieldErr("diameter", "the Diameter agent needs protocol tcp or sctp, not %s", s.Protocol)
	case s.PortEnd != 0 && s.PortEnd != s.Port:
		return fieldErr("portEnd", "a Diameter agent listens on one port")
	case len(s.SecondaryVIPs) > 0:
		return fieldErr("secondaryVIPs", "a Diameter agent listens on one VIP")
	case s.Select == SelectHash || s.Select == SelectPersist:
		return fieldErr("select", "a Diameter agent binds sessions by Session-Id: rr (weighted when endpoint weights differ) or leastconn (fewest sessions), not %s", s.Select)
	}
	if err := validateDiameterIdentity("diameter.originHost", d.OriginHost); err != nil {
		return err
	}
	if err := validateDiameterIdentity("diameter.originRealm", d.OriginRealm); err != nil {
		return err
	}
	switch d.Mode {
	case "", DiameterRelay:
	case DiameterProxy:
		if len(d.Applications) == 0 {
			return fieldErr("diameter.applications", "a proxy agent needs the application IDs it serves")
		}
	default:
		return fieldErr("diameter.mode", "%q is not one of relay, proxy", d.Mode)
	}
	for i, a := range d.Applications {
		if a == 0 || a == 0xffffffff {
			return fieldErr(fmt.Sprintf("diameter.applications[%d]", i), "%d is the base protocol or the relay application, not an application a proxy serves", a)
		}
	}
	return nil
}

// validateDiameterIdentity checks a DiameterIdentity (RFC 6733 §4.3.1: an
// FQDN): letters, digits, '-' and '.', labels of 1 to 63 characters.
func validateDiameterIdentity(field, v string) error {
	if v == "" {
		return fieldErr(field, "required")
	}
	if len(v) > 255 {
		return fieldErr(field, "longer than 255 characters")
	}
	for _, label := range strings.Split(v, ".") {
		if label == "" || len(label) > 63 {
			return fieldErr(field, "%q is not an FQDN (empty or over-long label)", v)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fieldErr(field, "%q is not an FQDN (character %q)", v, r)
			}
		}
	}
	return nil
}
