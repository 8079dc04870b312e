package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ICMP redirects on an LB node. The datapath passes up to the kernel what
// it holds no conntrack entry for (a takeover's first packets of a flow
// the sync had not delivered yet, a path the node never saw), and the
// kernel forwards it. When that packet leaves by the interface it came in
// on, the kernel also sends the sender an ICMP redirect naming the next
// hop; a backend on the node's segment (a host: it accepts redirects by
// default) then sends every packet for that destination straight to the
// next hop, past every LB node, from its own address, and the flow is lost
// for good. An LB node has no use for redirects, so the daemon turns
// sending them off unless told not to (--icmp-send-redirects). The kernel
// ORs the "all" switch with the interface's, so both are written. IPv6 has
// no such switch.

// DisableSendRedirects writes 0 to net.ipv4.conf.{all,<each interface>}.
// send_redirects under root (/proc/sys; a directory in tests) and returns
// the switches it turned off (those already off are left alone).
func DisableSendRedirects(root string, ifaces []string) ([]string, error) {
	var changed []string
	for _, dev := range append([]string{"all"}, ifaces...) {
		if dev == "" || strings.ContainsAny(dev, "/") || dev == "." || dev == ".." {
			return changed, fmt.Errorf("send_redirects: bad interface name %q", dev)
		}
		p := filepath.Join(root, "net", "ipv4", "conf", dev, "send_redirects")
		cur, err := os.ReadFile(p)
		if err != nil {
			return changed, fmt.Errorf("read %s: %w", p, err)
		}
		if strings.TrimSpace(string(cur)) == "0" {
			continue
		}
		if err := os.WriteFile(p, []byte("0"), 0o644); err != nil {
			return changed, fmt.Errorf("turn off ICMP redirects: write %s: %w", p, err)
		}
		changed = append(changed, "net.ipv4.conf."+dev+".send_redirects")
	}
	return changed, nil
}
