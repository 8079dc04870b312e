package annotations

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/telcolb/telcolb/api"
)

// parser holds one Parse call's input and what it found.
type parser struct {
	opts Options
	ann  map[string]string
	res  *Result
	errs []*Error
}

func (p *parser) fail(key, value, reason string) {
	p.errs = append(p.errs, &Error{Annotation: key, Value: value, Reason: reason})
}

func (p *parser) warn(format string, args ...any) {
	p.res.Warnings = append(p.res.Warnings, fmt.Sprintf(format, args...))
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

// payload checks a probe request or response on its own.
func (p *parser) payload(f field) bool {
	if len(f.value) > api.MaxProbePayloadLength {
		p.fail(f.key, f.value[:32]+"...", fmt.Sprintf("longer than %d bytes", api.MaxProbePayloadLength))
		return false
	}
	return true
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
