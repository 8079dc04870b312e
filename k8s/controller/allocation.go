package controller

import (
	"encoding/json"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// Allocation is what the controller records on a Service (AllocationAnnotation)
// before it uses the addresses anywhere, so a restarted controller reserves
// exactly these again before allocating anything new.
type Allocation struct {
	// IPs are the primary VIPs, at most one per family.
	IPs []string `json:"ips"`
	// Secondary are the SCTP multi-homing VIPs.
	Secondary []string `json:"secondary,omitempty"`
}

func (a Allocation) addrs() ([]netip.Addr, []netip.Addr, error) {
	parse := func(list []string) ([]netip.Addr, error) {
		var out []netip.Addr
		for _, s := range list {
			x, err := netip.ParseAddr(s)
			if err != nil {
				return nil, err
			}
			out = append(out, x.Unmap())
		}
		return out, nil
	}
	p, err := parse(a.IPs)
	if err != nil {
		return nil, nil, err
	}
	s, err := parse(a.Secondary)
	return p, s, err
}

func recordedAllocation(svc *corev1.Service) (primary, secondary []netip.Addr, err error) {
	raw, ok := svc.Annotations[AllocationAnnotation]
	if !ok || raw == "" {
		return nil, nil, nil
	}
	var a Allocation
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		return nil, nil, fmt.Errorf("annotation %s: %w", AllocationAnnotation, err)
	}
	p, s, err := a.addrs()
	if err != nil {
		return nil, nil, fmt.Errorf("annotation %s: %w", AllocationAnnotation, err)
	}
	return p, s, nil
}

func encodeAllocation(primary, secondary []netip.Addr) string {
	a := Allocation{IPs: []string{}}
	for _, x := range primary {
		a.IPs = append(a.IPs, x.String())
	}
	for _, x := range secondary {
		a.Secondary = append(a.Secondary, x.String())
	}
	b, _ := json.Marshal(a)
	return string(b)
}
