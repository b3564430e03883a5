// Package logbuf batches whole log lines into few writes to an io.Writer.
//
// A line waits in memory until the buffer would pass its size or the flush interval has
// passed since it was buffered, whichever is first, and until Flush or Close: a crash
// loses at most the last interval's lines, a clean Close loses none (the trade-off of
// Envoy's access-log flush interval).
package logbuf

import (
	"bytes"
	"io"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultSize     = 32 << 10
	DefaultInterval = 100 * time.Millisecond
)

// Options tune a Writer; the zero value means the defaults.
type Options struct {
	// Size is the most the buffer holds, in bytes (DefaultSize): a line that would
	// pass it is written out together with the buffer, and a line longer than Size is
	// written out at once.
	Size int
	// Interval is the longest a line waits in the buffer (DefaultInterval).
	Interval time.Duration
}

// Writer is a buffered line writer, safe for concurrent use. Each Write must hold whole
// lines, each ending in '\n': a Write is never split across two writes to the
// underlying writer, and the lines of concurrent Writes never interleave.
//
// A failed write to the underlying writer loses its lines: they are counted (Dropped)
// and the error kept (Err), and later lines are written as usual. A writer that blocks
// holds up the caller that fills the buffer next, as an unbuffered write would.
type Writer struct {
	w        io.Writer
	size     int
	interval time.Duration

	// wmu serializes writes to w, in the order the buffers were taken, and guards spare.
	wmu   sync.Mutex
	spare []byte

	mu      sync.Mutex
	buf     []byte
	timer   *time.Timer // flushes buf; pending while armed
	armed   bool
	closed  bool
	err     error
	dropped int64
}

// New returns a Writer over w. Close it to write out the last lines.
func New(w io.Writer, o Options) *Writer {
	if o.Size <= 0 {
		o.Size = DefaultSize
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	return &Writer{
		w: w, size: o.Size, interval: o.Interval,
		buf:   make([]byte, 0, o.Size),
		spare: make([]byte, 0, o.Size),
	}
}

// Write buffers p, one or more whole lines. It returns an error only when p itself was
// lost; p is not retained.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.add(p) {
		w.mu.Unlock()
		return len(p), nil
	}
	w.mu.Unlock()

	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.mu.Lock()
	if w.add(p) { // another caller wrote the buffer out meanwhile
		w.mu.Unlock()
		return len(p), nil
	}
	long := len(p) > w.size || w.closed
	if !long {
		w.buf = append(w.buf, p...) // past the size: no other line joins before the flush
	}
	w.mu.Unlock()
	err := w.flush()
	if long {
		err = w.write(p)
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// add appends p to the buffer if it fits, arming the timer; w.mu is held.
func (w *Writer) add(p []byte) bool {
	if w.closed || len(w.buf)+len(p) > w.size {
		return false
	}
	w.buf = append(w.buf, p...)
	if !w.armed {
		w.armed = true
		if w.timer == nil {
			w.timer = time.AfterFunc(w.interval, w.tick)
		} else {
			w.timer.Reset(w.interval)
		}
	}
	return true
}

// tick is the timer's flush. While a write is under way (a slow writer) it tries again
// an interval later instead of waiting, so a stalled writer holds up no goroutines.
func (w *Writer) tick() {
	if !w.wmu.TryLock() {
		w.mu.Lock()
		if !w.closed {
			w.timer.Reset(w.interval)
		}
		w.mu.Unlock()
		return
	}
	defer w.wmu.Unlock()
	w.mu.Lock()
	w.armed = false
	w.mu.Unlock()
	_ = w.flush()
}

// Flush writes the buffered lines out.
func (w *Writer) Flush() error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return w.flush()
}

// flush writes the buffer out; w.wmu is held.
func (w *Writer) flush() error {
	w.mu.Lock()
	out := w.buf
	w.buf, w.spare = w.spare[:0], nil
	w.mu.Unlock()
	err := w.write(out)
	w.spare = out[:0]
	return err
}

// Close writes the buffered lines out and stops the timer. Lines written after Close
// go to the underlying writer at once, unbuffered.
func (w *Writer) Close() error {
	w.mu.Lock()
	w.closed = true
	if w.timer != nil {
		w.timer.Stop()
		w.armed = false
	}
	w.mu.Unlock()
	return w.Flush()
}

// write writes b to the underlying writer, counting the lines lost if it fails; w.wmu
// is held.
func (w *Writer) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := w.w.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		n = max(0, min(n, len(b)))
		lost := bytes.Count(b[n:], []byte{'\n'})
		w.mu.Lock()
		w.err = err
		w.dropped += int64(lost)
		w.mu.Unlock()
	}
	return err
}

// Err is the error of the last failed write to the underlying writer, or nil.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Dropped is the number of lines lost to failed writes so far.
func (w *Writer) Dropped() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dropped
}
