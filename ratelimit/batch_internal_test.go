package ratelimit

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// once runs f the first time only; unlike sync.Once, later calls do not wait for it.
type once struct{ done atomic.Bool }

func (o *once) do(f func()) {
	if o.done.CompareAndSwap(false, true) {
		f()
	}
}

// fakeRun answers every take of a batch with its batch's size, after hold (if set) lets
// the batch go; it records the batches and how many ran at once.
type fakeRun struct {
	hold      func(batch []*pendingTake) // blocks a batch while it returns
	batches   atomic.Int64
	running   atomic.Int64
	maxAtOnce atomic.Int64
}

func (f *fakeRun) run(batch []*pendingTake) {
	f.batches.Add(1)
	n := f.running.Add(1)
	for {
		m := f.maxAtOnce.Load()
		if n <= m || f.maxAtOnce.CompareAndSwap(m, n) {
			break
		}
	}
	if f.hold != nil {
		f.hold(batch)
	}
	f.running.Add(-1)
	for _, t := range batch {
		t.done <- takeReply{v: []int64{int64(len(batch))}}
	}
}

func newTake(timeout time.Duration) *pendingTake {
	return &pendingTake{ctx: context.Background(), deadline: time.Now().Add(timeout), done: make(chan takeReply, 1)}
}

func (b *batcher) state() (workers, idle int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.workers, b.idle
}

// Takes queued while a batch is out go together in the next one, and one batch is out at
// a time.
func TestBatcherCoalescesTakesIntoOneBatchAtATime(t *testing.T) {
	release := make(chan struct{})
	var first once
	f := &fakeRun{hold: func([]*pendingTake) {
		first.do(func() { <-release })
	}}
	b := &batcher{run: f.run, stall: time.Minute}

	lead := newTake(time.Minute)
	if err := b.enqueue(lead); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return f.running.Load() == 1 })
	const n = 50
	takes := make([]*pendingTake, n)
	for i := range takes {
		takes[i] = newTake(time.Minute)
		if err := b.enqueue(takes[i]); err != nil {
			t.Fatal(err)
		}
	}
	if w, _ := b.state(); w != 1 {
		t.Fatalf("%d batch goroutines while the first batch is on time, want 1", w)
	}
	close(release)
	if rep := <-lead.done; rep.v[0] != 1 {
		t.Fatalf("first batch carried %d takes, want 1", rep.v[0])
	}
	for i, tk := range takes {
		if rep := <-tk.done; rep.v[0] != n {
			t.Fatalf("take %d went in a batch of %d, want all %d queued together", i, rep.v[0], n)
		}
	}
	if got := f.batches.Load(); got != 2 {
		t.Fatalf("%d batches, want 2", got)
	}
	if got := f.maxAtOnce.Load(); got != 1 {
		t.Fatalf("%d batches out at once, want 1", got)
	}
}

// A batch out for longer than the stall bound lets another start beside it, so a stuck
// connection does not hold up every take; once batches flow again, one goroutine is left.
func TestBatcherStartsAnotherBatchBesideAStuckOne(t *testing.T) {
	stuck := make(chan struct{})
	var first once
	f := &fakeRun{hold: func([]*pendingTake) {
		first.do(func() { <-stuck })
	}}
	b := &batcher{run: f.run, stall: 20 * time.Millisecond}

	victim := newTake(time.Minute)
	if err := b.enqueue(victim); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return f.running.Load() == 1 })
	time.Sleep(2 * b.stall)
	later := newTake(time.Minute)
	if err := b.enqueue(later); err != nil {
		t.Fatal(err)
	}
	select {
	case <-later.done:
	case <-time.After(5 * time.Second):
		t.Fatal("a take queued behind a stuck batch was not sent")
	}
	close(stuck)
	<-victim.done
	// Keep takes flowing: the goroutine that was stuck finds another one on time and ends.
	deadline := time.Now().Add(5 * time.Second)
	for {
		tk := newTake(time.Minute)
		if err := b.enqueue(tk); err != nil {
			t.Fatal(err)
		}
		<-tk.done
		if w, _ := b.state(); w == 1 {
			break
		}
		if time.Now().After(deadline) {
			w, idle := b.state()
			t.Fatalf("%d batch goroutines (%d idle) after the stuck batch returned, want 1", w, idle)
		}
	}
}

// Takes whose caller gave up while queued are not sent.
func TestBatcherDropsTakesWhoseCallerGaveUp(t *testing.T) {
	release := make(chan struct{})
	var first once
	var sent atomic.Int64
	f := &fakeRun{hold: func(batch []*pendingTake) {
		first.do(func() { <-release })
		sent.Add(int64(len(batch)))
	}}
	b := &batcher{run: f.run, stall: time.Minute}
	if err := b.enqueue(newTake(time.Minute)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return f.running.Load() == 1 })

	expired := newTake(time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := newTake(time.Minute)
	cancelled.ctx = ctx
	live := newTake(time.Minute)
	for _, tk := range []*pendingTake{expired, cancelled, live} {
		if err := b.enqueue(tk); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	time.Sleep(5 * time.Millisecond)
	close(release)
	if rep := <-live.done; rep.v[0] != 1 {
		t.Fatalf("the live take went in a batch of %d, want 1 (the others gave up)", rep.v[0])
	}
	if got := sent.Load(); got != 2 {
		t.Fatalf("%d takes sent, want 2", got)
	}
}

// An idle batch goroutine ends.
func TestBatcherGoroutineEndsWhenIdle(t *testing.T) {
	f := &fakeRun{}
	b := &batcher{run: f.run, stall: time.Minute, linger: 50 * time.Millisecond}
	tk := newTake(time.Minute)
	if err := b.enqueue(tk); err != nil {
		t.Fatal(err)
	}
	<-tk.done
	waitFor(t, func() bool { w, _ := b.state(); return w == 0 })
	// And a new take starts one again.
	tk = newTake(time.Minute)
	if err := b.enqueue(tk); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tk.done:
	case <-time.After(5 * time.Second):
		t.Fatal("no batch after the goroutines ended")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in time")
		}
		time.Sleep(time.Millisecond)
	}
}
