package figure

import (
	"os"
	"strings"
)

// LoadAvg is the machine's 1-minute load average, the first field of
// /proc/loadavg ("?" when unreadable): benchmarks log it with each round,
// since the figures of a 2-core machine follow it.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}
