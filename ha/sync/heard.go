package sync

import (
	stdsync "sync"
	"time"
)

// heardTimes records when each peer's last frame arrived on an
// authenticated connection, in the shell: the machine's heardAt is the
// liveness timer's base and is reset when the timer fires or a connection
// opens, so it is not "last heard" for anyone outside.
type heardTimes struct {
	mu stdsync.Mutex
	at map[string]time.Time
}

func (h *heardTimes) note(peer string, at time.Time) {
	h.mu.Lock()
	if h.at == nil {
		h.at = map[string]time.Time{}
	}
	h.at[peer] = at
	h.mu.Unlock()
}

func (h *heardTimes) get(peer string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.at[peer]
}

// HeardAt is when this node last received a message from peer (any: a
// record, an acknowledgement, a hello or keepalive), by the local clock
// with its monotonic reading; zero if never. A peer that is alive and
// connected is heard at least every KeepaliveInterval; a cut sync link
// leaves it where the cut found it.
func (n *Node) HeardAt(peer string) time.Time { return n.heard.get(peer) }
