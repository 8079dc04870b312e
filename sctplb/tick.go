package sctplb

import (
	"context"
	"time"
)

// tickUntil calls f at once and then every interval until ctx ends: the
// Diameter agent and the N4 proxy step their machine with a Tick and
// refresh their stats snapshot this way, while their readers step it on
// each message under the same mutex.
func tickUntil(ctx context.Context, every time.Duration, f func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		f()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
