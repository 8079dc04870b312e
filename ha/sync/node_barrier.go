package sync

import (
	"errors"
	"time"
)

// Barriers through the node (see Machine.Barrier).

var errNodeClosed = errors.New("sync: node closed")

// BarrierWait is a barrier taken with Node.Barrier.
type BarrierWait struct {
	n    *Node
	id   uint64
	done chan struct{}
}

// Barrier marks what has been put so far (every Put and Delete that
// returned before this call) for every peer up now, flushes, and returns
// a wait whose Done channel is closed once each of those peers has
// acknowledged all of it. A peer that goes down keeps it open: callers
// bound the wait and Release it.
func (n *Node) Barrier() (*BarrierWait, error) {
	reply := make(chan *BarrierWait, 1)
	// Through the operations queue, behind the puts made before.
	n.opsMu.Lock()
	n.barrierReqs = append(n.barrierReqs, reply)
	n.opsMu.Unlock()
	select {
	case n.opsWake <- struct{}{}:
	default:
	}
	select {
	case w := <-reply:
		return w, nil
	case <-n.ctx.Done():
		return nil, errNodeClosed
	}
}

// takeBarriers answers barrier requests; called with n.mu held, from the
// loop, after the operations queued before them.
func (n *Node) takeBarriers(now time.Time, reqs []chan *BarrierWait, all *Output) {
	for _, r := range reqs {
		id, out := n.m.Barrier(now)
		w := &BarrierWait{n: n, id: id, done: make(chan struct{})}
		n.waits[id] = w
		merge(all, out)
		r <- w
	}
}

// barriersDone closes the waits of the barriers completed in a step.
func (n *Node) barriersDone(ids []uint64) {
	if len(ids) == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, id := range ids {
		if w := n.waits[id]; w != nil {
			close(w.done)
			delete(n.waits, id)
		}
	}
}

// Done is closed once every peer marked has acknowledged.
func (w *BarrierWait) Done() <-chan struct{} { return w.done }

// Unacked names the peers not yet acknowledged (nil once done).
func (w *BarrierWait) Unacked() []string {
	w.n.mu.Lock()
	defer w.n.mu.Unlock()
	return w.n.m.Unacked(w.id)
}

// Release stops waiting: the barrier is forgotten. It returns the peers
// that had not acknowledged (nil when it was done).
func (w *BarrierWait) Release() []string {
	w.n.mu.Lock()
	defer w.n.mu.Unlock()
	delete(w.n.waits, w.id)
	return w.n.m.DropBarrier(w.id)
}
