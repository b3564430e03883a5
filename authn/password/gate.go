package password

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// gate is a weighted FIFO semaphore over a memory budget in KiB. Each hash takes its Argon2
// memory from the budget, so a stored hash made with more memory than the live parameters
// takes a larger share instead of overrunning it. Waiting is bounded in count (maxQueue) and
// in time (maxWait); past either bound the caller gets ErrOverloaded.
type gate struct {
	size     int64
	maxQueue int
	maxWait  time.Duration
	onDepth  func(depth int) // called under mu whenever the queue length changes

	mu      sync.Mutex
	used    int64
	waiters list.List // of *waiter, oldest first
}

type waiter struct {
	n     int64
	ready chan struct{} // closed when the share is granted
}

func newGate(size int64, maxQueue int, maxWait time.Duration, onDepth func(int)) *gate {
	return &gate{size: size, maxQueue: maxQueue, maxWait: maxWait, onDepth: onDepth}
}

// acquire takes n KiB (at most size) from the budget. It returns ctx.Err() when ctx ends
// first and ErrOverloaded when the queue is full or maxWait passes.
func (g *gate) acquire(ctx context.Context, n int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g.mu.Lock()
	if g.size-g.used >= n && g.waiters.Len() == 0 {
		g.used += n
		g.mu.Unlock()
		return nil
	}
	if g.waiters.Len() >= g.maxQueue {
		g.mu.Unlock()
		return ErrOverloaded
	}
	w := &waiter{n: n, ready: make(chan struct{})}
	elem := g.waiters.PushBack(w)
	g.onDepth(g.waiters.Len())
	g.mu.Unlock()

	timer := time.NewTimer(g.maxWait)
	defer timer.Stop()
	var err error
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = ErrOverloaded
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-w.ready:
		// Granted while giving up: hand the share back.
		g.used -= n
		g.grant()
	default:
		wasFront := g.waiters.Front() == elem
		g.waiters.Remove(elem)
		g.onDepth(g.waiters.Len())
		if wasFront {
			g.grant() // the next waiter may fit where this one did not
		}
	}
	return err
}

// release returns n KiB taken by acquire.
func (g *gate) release(n int64) {
	g.mu.Lock()
	g.used -= n
	g.grant()
	g.mu.Unlock()
}

// grant hands shares to waiters in order while the oldest one fits. Called with mu held.
func (g *gate) grant() {
	granted := false
	for front := g.waiters.Front(); front != nil; front = g.waiters.Front() {
		w := front.Value.(*waiter)
		if g.size-g.used < w.n {
			break
		}
		g.used += w.n
		g.waiters.Remove(front)
		close(w.ready)
		granted = true
	}
	if granted {
		g.onDepth(g.waiters.Len())
	}
}

// queued is the number of callers waiting.
func (g *gate) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiters.Len()
}
