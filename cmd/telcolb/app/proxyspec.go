package app

import (
	"cmp"
	"fmt"
	"net/netip"

	"github.com/telcolb/telcolb/api"
)

// What the N2, PFCP and Diameter services map the same way: endpoints onto
// the proxy's backends, the selection onto its policy, and the backends'
// state back into the status.

// backend is an endpoint as a proxy sees it.
type backend struct {
	name   string
	addr   netip.AddrPort
	weight int
}

// backendsOf parses a service's endpoints; an endpoint port of 0 means
// defPort. weighted tells whether the weights differ, which makes rr
// weighted.
func backendsOf(svc api.Service, defPort uint16) (bs []backend, weighted bool, err error) {
	weights := map[uint16]bool{}
	for i, ep := range svc.Endpoints {
		a, err := netip.ParseAddr(ep.Address)
		if err != nil {
			return nil, false, &api.FieldError{Field: fmt.Sprintf("endpoints[%d].address", i), Message: err.Error()}
		}
		w := max(ep.Weight, 1)
		weights[w] = true
		bs = append(bs, backend{name: backendName(ep, defPort), addr: netip.AddrPortFrom(a, cmp.Or(ep.Port, defPort)), weight: int(w)})
	}
	return bs, len(weights) > 1, nil
}

// backendName is an endpoint's name in a proxy and in its metrics.
func backendName(ep api.Endpoint, defPort uint16) string {
	port := cmp.Or(ep.Port, defPort)
	if a, err := netip.ParseAddr(ep.Address); err == nil {
		return netip.AddrPortFrom(a, port).String()
	}
	return fmt.Sprintf("%s:%d", ep.Address, port)
}

// policyOf maps the selection onto a proxy's policy: rr is round robin, or
// weighted when the weights differ; leastconn is "fewest units" (UEs,
// sessions). hash and persist mean nothing to these proxies (a returning
// UE or session is already pinned) and are refused; what names the kind in
// the error.
func policyOf[T any](svc api.Service, weighted bool, rr, wrr, least T, what, units string) (T, error) {
	switch svc.Select {
	case "", api.SelectRoundRobin:
		if weighted {
			return wrr, nil
		}
		return rr, nil
	case api.SelectLeastConn:
		return least, nil
	}
	var none T
	return none, &api.FieldError{Field: "select", Message: fmt.Sprintf("%s with rr (weighted when endpoint weights differ) or leastconn (fewest %s), not %s", what, units, svc.Select)}
}

// fillSessions puts each endpoint's sessions and health, as its proxy
// reports them by backend name, into a service status, and the total into
// the service's ActiveConnections.
func fillSessions(st *api.ServiceStatus, defPort uint16, of func(name string) (sessions int, up bool)) {
	var total uint64
	for i, ep := range st.Endpoints {
		n, up := of(backendName(api.Endpoint{Address: ep.Address, Port: ep.Port}, defPort))
		st.Endpoints[i].ActiveConnections = uint64(n)
		st.Endpoints[i].Healthy = up
		total += uint64(n)
	}
	st.ActiveConnections = total
}
