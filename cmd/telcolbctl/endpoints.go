package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/telcolb/telcolb/api"
)

// parseEndpoints reads the --endpoints list: comma separated
// ADDRESS[:PORT[:WEIGHT]], IPv6 addresses in brackets when a port follows
// ("[2001:db8::1]:80:5"). A missing port is 0 (keep the client's port).
func parseEndpoints(s string) ([]api.Endpoint, error) {
	var out []api.Endpoint
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("endpoint %d is empty", i+1)
		}
		ep, err := parseEndpoint(item)
		if err != nil {
			return nil, fmt.Errorf("endpoint %d %q: %w", i+1, item, err)
		}
		out = append(out, ep)
	}
	return out, nil
}

func parseEndpoint(s string) (api.Endpoint, error) {
	var addr, rest string
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return api.Endpoint{}, fmt.Errorf("missing ']'")
		}
		addr, rest = s[1:end], s[end+1:]
		if rest != "" && !strings.HasPrefix(rest, ":") {
			return api.Endpoint{}, fmt.Errorf("expected ':' after ']'")
		}
		rest = strings.TrimPrefix(rest, ":")
		if rest == "" && strings.HasSuffix(s, ":") {
			return api.Endpoint{}, fmt.Errorf("empty port")
		}
	default:
		if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
			return api.Endpoint{Address: a.String()}, nil
		}
		addr, rest, _ = strings.Cut(s, ":")
		if strings.HasSuffix(s, ":") {
			return api.Endpoint{}, fmt.Errorf("empty port or weight")
		}
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return api.Endpoint{}, fmt.Errorf("%q is not an IP address (bracket IPv6 addresses followed by a port)", addr)
	}
	ep := api.Endpoint{Address: a.String()}
	if rest == "" {
		return ep, nil
	}
	portText, weightText, hasWeight := strings.Cut(rest, ":")
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return api.Endpoint{}, fmt.Errorf("port %q is not a number 0-65535", portText)
	}
	ep.Port = uint16(port)
	if hasWeight {
		w, err := strconv.ParseUint(weightText, 10, 16)
		if err != nil {
			return api.Endpoint{}, fmt.Errorf("weight %q is not a number", weightText)
		}
		ep.Weight = uint16(w)
	}
	return ep, nil
}

// formatEndpoint is the inverse of parseEndpoint.
func formatEndpoint(ep api.Endpoint) string {
	addr := ep.Address
	if a, err := netip.ParseAddr(addr); err == nil && a.Is6() {
		addr = "[" + addr + "]"
	}
	s := fmt.Sprintf("%s:%d", addr, ep.Port)
	if ep.Weight != 0 {
		s += fmt.Sprintf(":%d", ep.Weight)
	}
	return s
}
