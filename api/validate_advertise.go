package api

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Limits of an AdvertisementConfig.
const (
	// MinBFDIntervalMs is the shortest BFD interval accepted; the issue
	// asks for 100 ms x 3, 10 ms leaves room for lab tuning.
	MinBFDIntervalMs = 10
	// MaxBFDIntervalMs is the longest (one minute).
	MaxBFDIntervalMs = 60000
	// MaxMD5PasswordLength is the longest TCP MD5 key Linux accepts
	// (TCP_MD5SIG_MAXKEYLEN).
	MaxMD5PasswordLength = 80
)

// Community is a parsed BGP community: a standard one (RFC 1997, "a:b" with
// 16-bit halves) or a large one (RFC 8092, "a:b:c" with 32-bit parts).
type Community struct {
	Large    bool
	Standard uint32
	Parts    [3]uint32
}

// ParseCommunity parses "a:b" or "a:b:c".
func ParseCommunity(s string) (Community, error) {
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 2:
		hi, err1 := strconv.ParseUint(parts[0], 10, 16)
		lo, err2 := strconv.ParseUint(parts[1], 10, 16)
		if err1 != nil || err2 != nil {
			return Community{}, fmt.Errorf("%q: a standard community is two numbers of 0-65535 (a:b)", s)
		}
		return Community{Standard: uint32(hi)<<16 | uint32(lo)}, nil
	case 3:
		var c Community
		c.Large = true
		for i, p := range parts {
			n, err := strconv.ParseUint(p, 10, 32)
			if err != nil {
				return Community{}, fmt.Errorf("%q: a large community is three numbers of 0-4294967295 (a:b:c)", s)
			}
			c.Parts[i] = uint32(n)
		}
		return c, nil
	}
	return Community{}, fmt.Errorf("%q: use a:b (standard) or a:b:c (large)", s)
}

// ReservedLargeCommunityLocalData1 is the middle value of the large
// communities the BGP speaker uses internally to send a VIP only to the
// peers its advertisement names ("tlb\0"); they never leave the speaker.
const ReservedLargeCommunityLocalData1 uint32 = 0x746c6200

// ValidateAdvertisementConfig checks a node's whole advertisement
// configuration and returns a *FieldError naming the first bad field by its
// JSON path ("bgp.peers[1].address", "advertisements[0].prefixes[2]").
func ValidateAdvertisementConfig(c *AdvertisementConfig) error {
	if c.NodeName != "" {
		if err := validateName(c.NodeName); err != nil {
			return fieldErr("nodeName", "%s", err.(*FieldError).Message)
		}
	}
	peers := map[string]bool{}
	if c.BGP != nil {
		if err := validateBGP(c.BGP, peers); err != nil {
			return err
		}
	}
	if c.L2 != nil {
		if c.NodeName == "" {
			return fieldErr("nodeName", "required with l2: it names this node among l2.members")
		}
		if err := validateL2(c.L2, c.NodeName); err != nil {
			return err
		}
	}
	names := map[string]bool{}
	type owned struct {
		p     netip.Prefix
		field string
	}
	var byMode = map[string][]owned{}
	for i := range c.Advertisements {
		a := &c.Advertisements[i]
		f := fmt.Sprintf("advertisements[%d]", i)
		if err := validateName(a.Name); err != nil {
			return fieldErr(f+".name", "%s", err.(*FieldError).Message)
		}
		if names[a.Name] {
			return fieldErr(f+".name", "%q is used by another advertisement", a.Name)
		}
		names[a.Name] = true
		switch a.Mode {
		case AdvertiseBGP:
			if c.BGP == nil {
				return fieldErr(f+".mode", "bgp advertisement without a bgp section")
			}
			if len(a.Interfaces) > 0 {
				return fieldErr(f+".interfaces", "only for l2 advertisements")
			}
		case AdvertiseL2:
			if c.L2 == nil {
				return fieldErr(f+".mode", "l2 advertisement without an l2 section")
			}
			switch {
			case len(a.Peers) > 0:
				return fieldErr(f+".peers", "only for bgp advertisements")
			case len(a.Communities) > 0:
				return fieldErr(f+".communities", "only for bgp advertisements")
			case a.LocalPreference != nil:
				return fieldErr(f+".localPreference", "only for bgp advertisements")
			case a.MED != nil:
				return fieldErr(f+".med", "only for bgp advertisements")
			case a.AggregationLength != 0 || a.AggregationLengthV6 != 0:
				return fieldErr(f+".aggregationLength", "only for bgp advertisements")
			}
			for j, ifn := range a.Interfaces {
				if err := validateIfName(ifn); err != nil {
					return fieldErr(fmt.Sprintf("%s.interfaces[%d]", f, j), "%s", err)
				}
			}
		case "":
			return fieldErr(f+".mode", "required: bgp or l2")
		default:
			return fieldErr(f+".mode", "%q: use bgp or l2", a.Mode)
		}
		if len(a.Prefixes) == 0 {
			return fieldErr(f+".prefixes", "at least one CIDR is required")
		}
		if a.AggregationLength > 32 {
			return fieldErr(f+".aggregationLength", "%d: at most 32", a.AggregationLength)
		}
		if a.AggregationLengthV6 > 128 {
			return fieldErr(f+".aggregationLengthV6", "%d: at most 128", a.AggregationLengthV6)
		}
		for j, raw := range a.Prefixes {
			pf := fmt.Sprintf("%s.prefixes[%d]", f, j)
			p, err := netip.ParsePrefix(raw)
			if err != nil {
				return fieldErr(pf, "%q is not a CIDR", raw)
			}
			if p.Addr().Zone() != "" || p.Addr().Is4In6() {
				return fieldErr(pf, "%q: use a plain IPv4 or IPv6 CIDR", raw)
			}
			if p.Masked() != p {
				return fieldErr(pf, "%q has host bits set; the network is %s", raw, p.Masked())
			}
			// The aggregate must not cover more than the prefix: it would
			// announce addresses this advertisement does not own.
			if p.Addr().Is4() && a.AggregationLength != 0 && int(a.AggregationLength) < p.Bits() {
				return fieldErr(f+".aggregationLength", "%d is shorter than prefix %s", a.AggregationLength, p)
			}
			if p.Addr().Is6() && a.AggregationLengthV6 != 0 && int(a.AggregationLengthV6) < p.Bits() {
				return fieldErr(f+".aggregationLengthV6", "%d is shorter than prefix %s", a.AggregationLengthV6, p)
			}
			for _, o := range byMode[a.Mode] {
				if o.p.Overlaps(p) {
					return fieldErr(pf, "%s overlaps %s (%s): a VIP would be announced twice the same way", p, o.p, o.field)
				}
			}
			byMode[a.Mode] = append(byMode[a.Mode], owned{p, pf})
		}
		for j, pn := range a.Peers {
			if !peers[pn] {
				return fieldErr(fmt.Sprintf("%s.peers[%d]", f, j), "%q is not a peer in bgp.peers", pn)
			}
		}
		for j, cs := range a.Communities {
			c, err := ParseCommunity(cs)
			if err != nil {
				return fieldErr(fmt.Sprintf("%s.communities[%d]", f, j), "%s", err)
			}
			if c.Large && c.Parts[1] == ReservedLargeCommunityLocalData1 {
				return fieldErr(fmt.Sprintf("%s.communities[%d]", f, j), "%q: large communities with %d as their middle value are reserved (they choose the peers of an advertisement limited to some peers)", cs, ReservedLargeCommunityLocalData1)
			}
		}
	}
	return nil
}

func validateBGP(b *BGPConfig, peers map[string]bool) error {
	if b.ASN == 0 {
		return fieldErr("bgp.asn", "required (1-4294967295)")
	}
	if b.RouterID != "" {
		a, err := netip.ParseAddr(b.RouterID)
		if err != nil || !a.Is4() || a.IsUnspecified() {
			return fieldErr("bgp.routerID", "%q: an IPv4 address other than 0.0.0.0", b.RouterID)
		}
	}
	addrs := map[netip.Addr]string{}
	for i := range b.Peers {
		p := &b.Peers[i]
		f := fmt.Sprintf("bgp.peers[%d]", i)
		if err := validateName(p.Name); err != nil {
			return fieldErr(f+".name", "%s", err.(*FieldError).Message)
		}
		if peers[p.Name] {
			return fieldErr(f+".name", "%q is used by another peer", p.Name)
		}
		peers[p.Name] = true
		a, err := parseAddr(f+".address", p.Address)
		if err != nil {
			return err
		}
		if o, dup := addrs[a]; dup {
			return fieldErr(f+".address", "%s is also peer %q", a, o)
		}
		addrs[a] = p.Name
		if p.ASN == 0 {
			return fieldErr(f+".asn", "required (1-4294967295)")
		}
		if p.HoldTimeSeconds != 0 && (p.HoldTimeSeconds < 3 || p.HoldTimeSeconds > 65535) {
			return fieldErr(f+".holdTimeSeconds", "%d: 0 (default 90) or 3-65535 (RFC 4271)", p.HoldTimeSeconds)
		}
		hold := p.HoldTimeSeconds
		if hold == 0 {
			hold = 90
		}
		if p.KeepaliveTimeSeconds != 0 && p.KeepaliveTimeSeconds >= hold {
			return fieldErr(f+".keepaliveTimeSeconds", "%d: must be shorter than the hold time %d", p.KeepaliveTimeSeconds, hold)
		}
		if p.SourceAddress != "" {
			s, err := parseAddr(f+".sourceAddress", p.SourceAddress)
			if err != nil {
				return err
			}
			if s.Is4() != a.Is4() {
				return fieldErr(f+".sourceAddress", "%s is %s, the peer %s", s, family(s), family(a))
			}
		}
		if len(p.Password) > MaxMD5PasswordLength {
			return fieldErr(f+".password", "longer than %d bytes (TCP MD5 key limit)", MaxMD5PasswordLength)
		}
		if p.BFD != nil {
			for _, iv := range []struct {
				name string
				v    uint32
			}{{"receiveIntervalMs", p.BFD.ReceiveIntervalMs}, {"transmitIntervalMs", p.BFD.TransmitIntervalMs}} {
				if iv.v != 0 && (iv.v < MinBFDIntervalMs || iv.v > MaxBFDIntervalMs) {
					return fieldErr(f+".bfd."+iv.name, "%d: 0 (default 300) or %d-%d", iv.v, MinBFDIntervalMs, MaxBFDIntervalMs)
				}
			}
			if p.BFD.DetectMultiplier > 255 {
				return fieldErr(f+".bfd.detectMultiplier", "%d: 0 (default 3) or 1-255", p.BFD.DetectMultiplier)
			}
			if p.BFD.MinimumTTL > 255 {
				return fieldErr(f+".bfd.minimumTTL", "%d: 0 (default 254) or 1-255", p.BFD.MinimumTTL)
			}
			if p.BFD.MinimumTTL != 0 && !p.BFD.Multihop && !p.EBGPMultihop {
				return fieldErr(f+".bfd.minimumTTL", "only for multihop sessions (bfd.multihop or ebgpMultihop): single hop requires 255 (RFC 5881)")
			}
		}
	}
	return nil
}

func validateL2(l *L2Config, node string) error {
	for i, ifn := range l.Interfaces {
		if err := validateIfName(ifn); err != nil {
			return fieldErr(fmt.Sprintf("l2.interfaces[%d]", i), "%s", err)
		}
	}
	if len(l.Members) == 0 {
		return fieldErr("l2.members", "at least this node is required")
	}
	names := map[string]bool{}
	addrs := map[netip.AddrPort]bool{}
	for i, m := range l.Members {
		f := fmt.Sprintf("l2.members[%d]", i)
		if err := validateName(m.Name); err != nil {
			return fieldErr(f+".name", "%s", err.(*FieldError).Message)
		}
		if names[m.Name] {
			return fieldErr(f+".name", "%q is listed twice", m.Name)
		}
		names[m.Name] = true
		ap, err := netip.ParseAddrPort(m.Address)
		if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() {
			return fieldErr(f+".address", "%q: want ip:port (a unicast address, a nonzero port)", m.Address)
		}
		if addrs[ap] {
			return fieldErr(f+".address", "%s is used by another member", ap)
		}
		addrs[ap] = true
	}
	if !names[node] {
		return fieldErr("l2.members", "this node %q is not a member", node)
	}
	if l.HeartbeatIntervalMs != 0 && (l.HeartbeatIntervalMs < 10 || l.HeartbeatIntervalMs > 10000) {
		return fieldErr("l2.heartbeatIntervalMs", "%d: 0 (default 100) or 10-10000", l.HeartbeatIntervalMs)
	}
	if l.DetectMultiplier > 255 {
		return fieldErr("l2.detectMultiplier", "%d: 0 (default 3) or 1-255", l.DetectMultiplier)
	}
	return nil
}

func validateIfName(s string) error {
	if s == "" || len(s) > 15 || strings.ContainsAny(s, "/ \t\n:") || s == "." || s == ".." {
		return fmt.Errorf("%q is not an interface name (1-15 characters, no '/', ':' or spaces)", s)
	}
	return nil
}

// WithoutSecrets returns a copy of c with the BGP passwords removed (what
// GET returns).
func (c AdvertisementConfig) WithoutSecrets() AdvertisementConfig {
	if c.BGP == nil {
		return c
	}
	b := *c.BGP
	b.Peers = append([]BGPPeer(nil), b.Peers...)
	for i := range b.Peers {
		b.Peers[i].Password = ""
	}
	c.BGP = &b
	return c
}
