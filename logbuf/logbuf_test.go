package logbuf

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is an underlying writer that keeps each write apart and fails the test's
// check if two writes overlap.
type recorder struct {
	inFlight atomic.Int32
	overlap  atomic.Bool

	mu     sync.Mutex
	writes []string
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.inFlight.Add(1) > 1 {
		r.overlap.Store(true)
	}
	defer r.inFlight.Add(-1)
	r.mu.Lock()
	r.writes = append(r.writes, string(p))
	r.mu.Unlock()
	return len(p), nil
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.writes...)
}

// line is a line of n bytes (newline included) naming id.
func line(id string, n int) string {
	return id + " " + strings.Repeat("x", max(0, n-len(id)-2)) + "\n"
}

func TestConcurrentLinesArriveWholeAndOnce(t *testing.T) {
	rec := &recorder{}
	w := New(rec, Options{Size: 1024, Interval: time.Millisecond})
	const writers, each = 32, 300
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// Mostly short lines, some longer than the buffer.
				n := 20 + (g*each+i)%200
				if i%97 == 0 {
					n = 1500
				}
				if _, err := w.Write([]byte(line(fmt.Sprintf("g%d-%d", g, i), n))); err != nil {
					t.Error(err)
				}
				if i%50 == 0 {
					_ = w.Flush()
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if rec.overlap.Load() {
		t.Error("two writes to the underlying writer overlapped")
	}
	seen := map[string]int{}
	for _, chunk := range rec.got() {
		if !strings.HasSuffix(chunk, "\n") {
			t.Fatalf("a write ends inside a line: …%q", chunk[max(0, len(chunk)-40):])
		}
		for _, l := range strings.SplitAfter(chunk, "\n") {
			if l == "" {
				continue
			}
			id, _, _ := strings.Cut(l, " ")
			if l != line(id, len(l)) {
				t.Fatalf("line %q is not intact", l)
			}
			seen[id]++
		}
	}
	for g := range writers {
		for i := range each {
			if id := fmt.Sprintf("g%d-%d", g, i); seen[id] != 1 {
				t.Fatalf("line %s written %d times, want once", id, seen[id])
			}
		}
	}
	if w.Dropped() != 0 || w.Err() != nil {
		t.Errorf("Dropped %d, Err %v with a writer that never fails", w.Dropped(), w.Err())
	}
}

func TestBufferIsWrittenWhenItWouldPassItsSize(t *testing.T) {
	rec := &recorder{}
	w := New(rec, Options{Size: 100, Interval: time.Hour})
	for i := range 3 {
		_, _ = w.Write([]byte(line(fmt.Sprint("a", i), 30)))
	}
	if got := rec.got(); len(got) != 0 {
		t.Fatalf("90 of 100 bytes buffered, yet written: %q", got)
	}
	_, _ = w.Write([]byte(line("a3", 30)))
	got := rec.got()
	if len(got) != 1 || got[0] != line("a0", 30)+line("a1", 30)+line("a2", 30)+line("a3", 30) {
		t.Fatalf("after the line that passes the size: writes %q, want the four lines in one", got)
	}

	// A line longer than the buffer goes out at once, after what was buffered before it.
	_, _ = w.Write([]byte(line("b0", 10)))
	long := line("long", 250)
	_, _ = w.Write([]byte(long))
	got = rec.got()[1:]
	if len(got) != 2 || got[0] != line("b0", 10) || got[1] != long {
		t.Fatalf("after a long line: writes %q, want the buffered line, then the long one", got)
	}
}

func TestLinesAreWrittenWithinTheInterval(t *testing.T) {
	rec := &recorder{}
	w := New(rec, Options{Size: 1 << 20, Interval: 10 * time.Millisecond})
	defer w.Close()
	for round := range 3 { // the timer re-arms after each flush
		want := line(fmt.Sprint("r", round), 40)
		_, _ = w.Write([]byte(want))
		deadline := time.Now().Add(5 * time.Second)
		for {
			if got := rec.got(); len(got) == round+1 && got[round] == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: a buffered line not written 5 s after a 10 ms interval: %q", round, rec.got())
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func TestCloseWritesTheBufferAndStopsTheTimer(t *testing.T) {
	rec := &recorder{}
	w := New(rec, Options{Interval: time.Hour})
	_, _ = w.Write([]byte(line("a", 30)))
	_, _ = w.Write([]byte(line("b", 30)))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := rec.got(); len(got) != 1 || got[0] != line("a", 30)+line("b", 30) {
		t.Fatalf("after Close: writes %q, want both lines in one", got)
	}
	if w.timer.Stop() {
		t.Error("the flush timer is still pending after Close")
	}
	// Lines after Close are not kept back.
	_, _ = w.Write([]byte(line("late", 30)))
	if got := rec.got(); len(got) != 2 || got[1] != line("late", 30) {
		t.Fatalf("a line written after Close: writes %q", got)
	}
}

// stalled blocks every write until release is closed.
type stalled struct {
	recorder
	release chan struct{}
}

func (s *stalled) Write(p []byte) (int, error) {
	<-s.release
	return s.recorder.Write(p)
}

func TestAStalledWriterHoldsUpNoTimerGoroutines(t *testing.T) {
	s := &stalled{release: make(chan struct{})}
	w := New(s, Options{Interval: time.Millisecond})
	_, _ = w.Write([]byte(line("first", 30)))
	go func() { _ = w.Flush() }() // stuck in the writer
	before := runtime.NumGoroutine()
	const n = 50
	for i := range n { // each line arms the timer; it fires while the write is stuck
		_, _ = w.Write([]byte(line(fmt.Sprint(i), 30)))
		time.Sleep(2 * time.Millisecond)
	}
	if grown := runtime.NumGoroutine() - before; grown > 5 {
		t.Errorf("%d more goroutines after %d flush intervals with the writer stuck", grown, n)
	}
	close(s.release)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(strings.Join(s.got(), ""), "\n"); got != n+1 {
		t.Errorf("%d lines written once the writer came back, want %d", got, n+1)
	}
}

// failing fails every write after taking part of it.
type failing struct{ calls atomic.Int32 }

var errBroken = errors.New("broken pipe")

func (f *failing) Write(p []byte) (int, error) {
	f.calls.Add(1)
	return len(p) / 2, errBroken
}

func TestAFailingWriterLosesLinesWithoutBlocking(t *testing.T) {
	f := &failing{}
	w := New(f, Options{Size: 100, Interval: time.Millisecond})
	done := make(chan struct{})
	const writers, each = 8, 100
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					_, _ = w.Write([]byte(line("x", 30)))
				}
			}()
		}
		wg.Wait()
		_ = w.Close()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writers blocked on a failing writer")
	}
	if f.calls.Load() == 0 {
		t.Fatal("nothing was written")
	}
	if !errors.Is(w.Err(), errBroken) {
		t.Errorf("Err() = %v, want the writer's error", w.Err())
	}
	// Each failed write took half its bytes: the lines past that point are lost.
	if d := w.Dropped(); d <= 0 || d > writers*each {
		t.Errorf("Dropped() = %d, want between 1 and %d", d, writers*each)
	}
	if _, err := w.Write([]byte(line("after", 200))); !errors.Is(err, errBroken) {
		t.Errorf("a line lost at once: Write error %v, want the writer's", err)
	}
}

func TestDroppedCountsTheLinesPastTheFailure(t *testing.T) {
	w := New(&failing{}, Options{Interval: time.Hour})
	// 4 lines of 25 bytes: the writer takes 50 bytes, the first two lines.
	for i := range 4 {
		_, _ = w.Write([]byte(line(fmt.Sprint(i), 25)))
	}
	if err := w.Flush(); !errors.Is(err, errBroken) {
		t.Fatalf("Flush error %v, want the writer's", err)
	}
	if d := w.Dropped(); d != 2 {
		t.Fatalf("Dropped() = %d, want 2", d)
	}
}

// BenchmarkWriteLine writes one 300-byte line per op from parallel goroutines to
// /dev/null: through a Writer, and directly to the *os.File (one write(2) per line).
func BenchmarkWriteLine(b *testing.B) {
	p := []byte(line("bench", 300))
	open := func(b *testing.B) *os.File {
		f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		return f
	}
	b.Run("logbuf", func(b *testing.B) {
		w := New(open(b), Options{})
		b.ReportAllocs()
		b.SetBytes(int64(len(p)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_, _ = w.Write(p)
			}
		})
		_ = w.Close()
	})
	b.Run("direct", func(b *testing.B) {
		f := open(b)
		b.ReportAllocs()
		b.SetBytes(int64(len(p)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_, _ = f.Write(p)
			}
		})
	})
}
