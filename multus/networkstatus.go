// Package multus reads the k8s.v1.cni.cncf.io/network-status annotation Multus
// writes on pods, so the controller can use a pod's addresses on secondary
// networks (N2/N3 interfaces of a CNF) as load-balancer endpoints.
package multus

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// NetworkStatusAnnotation is the annotation key Multus writes.
const NetworkStatusAnnotation = "k8s.v1.cni.cncf.io/network-status"

// maxAnnotationBytes bounds work on a hostile annotation; Kubernetes caps all
// annotations of an object at 256 KiB anyway.
const maxAnnotationBytes = 256 << 10

// NetworkStatus is one entry of the annotation (NPWG spec v1.2).
type NetworkStatus struct {
	Name      string          `json:"name"`
	Interface string          `json:"interface,omitempty"`
	IPs       []string        `json:"ips,omitempty"`
	Mac       string          `json:"mac,omitempty"`
	Default   bool            `json:"default,omitempty"`
	DNS       json.RawMessage `json:"dns,omitempty"`
}

// Network is one parsed attachment with its addresses.
type Network struct {
	Name      string
	Interface string
	Default   bool
	Addrs     []netip.Addr
}

// Parse decodes the annotation value. An entry without a name or with an
// address that does not parse makes the whole annotation an error: a pod
// whose status is half-understood should be skipped (and reported), not used
// with guessed addresses.
func Parse(value string) ([]Network, error) {
	if len(value) > maxAnnotationBytes {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", NetworkStatusAnnotation, len(value), maxAnnotationBytes)
	}
	if strings.TrimSpace(value) == "" {
		return nil, fmt.Errorf("%s: empty", NetworkStatusAnnotation)
	}
	var raw []NetworkStatus
	if err := json.Unmarshal([]byte(value), &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", NetworkStatusAnnotation, err)
	}
	out := make([]Network, 0, len(raw))
	for i, st := range raw {
		if st.Name == "" {
			return nil, fmt.Errorf("%s: entry %d has no name", NetworkStatusAnnotation, i)
		}
		n := Network{Name: st.Name, Interface: st.Interface, Default: st.Default}
		for j, s := range st.IPs {
			// Some CNIs report CIDR notation ("10.1.0.5/24").
			if p, err := netip.ParsePrefix(s); err == nil {
				n.Addrs = append(n.Addrs, p.Addr().Unmap())
				continue
			}
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%s: entry %d (%s) ips[%d]: %w", NetworkStatusAnnotation, i, st.Name, j, err)
			}
			n.Addrs = append(n.Addrs, a.Unmap())
		}
		out = append(out, n)
	}
	return out, nil
}

// ErrNoNetwork says a pod is not attached to the asked-for network.
var ErrNoNetwork = errors.New("pod not attached to network")

// Addresses returns a pod's addresses on network want, given as "name" or
// "namespace/name". Multus reports attachments as "namespace/name"; a bare
// name means the NetworkAttachmentDefinition in the pod's namespace, which is
// how Multus resolves a bare name in the pod's networks annotation too.
func Addresses(nets []Network, want, podNamespace string) ([]netip.Addr, error) {
	full := want
	if !strings.Contains(want, "/") {
		full = podNamespace + "/" + want
	}
	var out []netip.Addr
	found := false
	for _, n := range nets {
		if n.Name == full || n.Name == want {
			found = true
			out = append(out, n.Addrs...)
		}
	}
	if !found {
		return nil, fmt.Errorf("%w %q", ErrNoNetwork, want)
	}
	return out, nil
}
