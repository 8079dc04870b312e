package n2

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// BuildCmds builds scenarios/n2/cmd/<name> into dir, for the lab tests and
// the demo.
func BuildCmds(ctx context.Context, dir string, names ...string) error {
	for _, name := range names {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, name), "github.com/telcolb/telcolb/scenarios/n2/cmd/"+name)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", name, err, out)
		}
	}
	return nil
}

// Link connects the lb to a peer on 10.78.n.0/24 (lb .1, peer .2), routes
// the peer's traffic through the lb and returns the peer's address.
func Link(ctx context.Context, l *lab.Lab, lb, peer *lab.Host, lbIf string, n int) (netip.Addr, error) {
	if _, _, err := l.Connect(ctx, lb, lbIf, peer, "eth0"); err != nil {
		return netip.Addr{}, err
	}
	lbAddr := netip.AddrFrom4([4]byte{10, 78, byte(n), 1})
	peerAddr := netip.AddrFrom4([4]byte{10, 78, byte(n), 2})
	if err := lb.AddAddr(ctx, lbIf, netip.PrefixFrom(lbAddr, 24)); err != nil {
		return netip.Addr{}, err
	}
	if err := peer.AddAddr(ctx, "eth0", netip.PrefixFrom(peerAddr, 24)); err != nil {
		return netip.Addr{}, err
	}
	if err := peer.AddRoute(ctx, netip.Prefix{}, lbAddr); err != nil {
		return netip.Addr{}, err
	}
	if err := peer.DropProtoUnreachable(ctx); err != nil {
		return netip.Addr{}, err
	}
	return peerAddr, nil
}
