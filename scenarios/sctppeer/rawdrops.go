package sctppeer

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// RawDrops sums the drops of host's raw SCTP sockets (protocol 132, both
// families): the packets the kernel could not queue to a usrsctp stack
// because its socket's receive buffer was full. What a peer lost there
// is the peer's, not the path's nor the LB's.
func RawDrops(ctx context.Context, host *lab.Host) (uint64, error) {
	var total uint64
	for _, f := range []string{"/proc/net/raw", "/proc/net/raw6"} {
		out, err := host.Exec(ctx, "cat", f)
		if err != nil {
			return 0, fmt.Errorf("%s: read %s: %w", host.Name, f, err)
		}
		n, err := ParseRawDrops(string(out))
		if err != nil {
			return 0, fmt.Errorf("%s: %s: %w", host.Name, f, err)
		}
		total += n
	}
	return total, nil
}

// ParseRawDrops sums the drops column of /proc/net/raw or raw6 text over
// the SCTP sockets (the local address's "port" is the protocol, 0084).
func ParseRawDrops(text string) (uint64, error) {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) == 0 || !strings.Contains(lines[0], "drops") {
		return 0, fmt.Errorf("no header with a drops column: %q", firstLine(text))
	}
	var total uint64
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		i := strings.LastIndexByte(f[1], ':')
		if i < 0 || !strings.EqualFold(f[1][i+1:], "0084") {
			continue
		}
		n, err := strconv.ParseUint(f[len(f)-1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("drops of %q: %w", l, err)
		}
		total += n
	}
	return total, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
