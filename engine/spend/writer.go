// Package spend writes spend and audit records off the request path with
// group commit: records queue in memory and one background goroutine
// commits them in batches, one transaction per batch.
//
// A request's finish stage calls Add (or AddSync in strict mode); the
// writer's goroutine collects records until MaxBatch of them are queued or
// FlushInterval has passed since the first of them arrived, then commits
// the batch (spend and audit together when the store implements
// BatchStore). A failed commit is retried with backoff; the records stay in
// memory meanwhile and new ones keep queueing behind them. See README.md
// for what survives a crash.
package spend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/portcullis/portcullis/engine/store"
)

// BatchStore is implemented by stores that commit spend and audit records
// in one transaction (engine/store/sqlite does). Without it the writer
// calls WriteSpend then WriteAudit; both are idempotent, so a retry after a
// failure between the two writes nothing twice.
type BatchStore interface {
	WriteBatch(ctx context.Context, spend []store.SpendRecord, audit []store.AuditRecord) error
}

// ErrClosed is returned by AddSync and Flush once the writer is closed and
// the record could not be (or was not) queued.
var ErrClosed = errors.New("spend: writer closed")

// Options tune a Writer; zero values take the defaults.
type Options struct {
	// FlushInterval is the longest a record waits for its batch to fill
	// before it is committed anyway. Default 100ms. It bounds what a kill -9
	// loses (see README.md).
	FlushInterval time.Duration
	// MaxBatch is the most spend records (and, separately, audit records) in
	// one transaction. Default 512.
	MaxBatch int
	// QueueSize is how many records (spend and audit) may wait for a
	// transaction; when full, Add blocks. Default 65536.
	QueueSize int
	// RetryBackoff is the first wait after a failed commit, doubled per
	// failure up to MaxRetryBackoff. Defaults 50ms and 5s.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// Log receives failed commits and Close summaries. Default: no logging.
	Log *zap.Logger
}

// Stats is a snapshot of the writer's counters.
type Stats struct {
	Queued        int    // records (spend + audit) waiting for a transaction
	InFlight      int    // records in the transaction being committed or retried
	Written       uint64 // spend records in committed transactions (replays the store skipped included)
	AuditWritten  uint64 // audit records in committed transactions
	Batches       uint64 // committed transactions
	FailedBatches uint64 // failed commit attempts
	Retries       uint64 // commit attempts after a failure
	QueueFull     uint64 // Add, AddSync and Audit calls that blocked on a full queue
	Dropped       uint64 // records refused after Close, or abandoned when Close's context ended first
}

// Writer is the batched spend and audit writer. Its methods are safe for
// concurrent use.
type Writer struct {
	st    store.Store
	batch BatchStore // st as a BatchStore, or nil
	log   *zap.Logger

	interval         time.Duration
	maxBatch         int
	queueSize        int
	backoff, backMax time.Duration

	mu       sync.Mutex
	notFull  sync.Cond // signalled when the goroutine takes records, or on close/abort
	spend    fifo[store.SpendRecord]
	audit    fifo[store.AuditRecord]
	firstAt  time.Time // when the oldest queued record arrived in an empty queue
	blocked  int       // adders waiting for room
	inFlight int
	// Sequence numbers: the n-th spend (audit) record ever queued has
	// spendSeq (auditSeq) n. Batches commit in order, so "committed up to"
	// watermarks say which records are durable.
	spendSeq, auditSeq       uint64
	spendDone, auditDone     uint64
	waiters                  []*waiter
	closing, aborted         bool
	lastErr                  error
	wake                     chan struct{} // cap 1: something changed for the goroutine
	ctx                      context.Context
	cancel                   context.CancelFunc
	done                     chan struct{} // closed when the goroutine returns
	written, auditWritten    atomic.Uint64 // counters (Stats)
	batches, failed, retries atomic.Uint64
	queueFull, dropped       atomic.Uint64
}

// waiter is an AddSync or Flush call waiting for the watermarks to reach
// spend and audit.
type waiter struct {
	spend, audit uint64
	failFast     bool       // AddSync: released with the error of a failed attempt on its record
	ch           chan error // cap 1
}

// NewWriter starts a writer over st and its goroutine; Close stops it.
func NewWriter(st store.Store, o Options) *Writer {
	if o.FlushInterval <= 0 {
		o.FlushInterval = 100 * time.Millisecond
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 512
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 65536
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = 50 * time.Millisecond
	}
	if o.MaxRetryBackoff <= 0 {
		o.MaxRetryBackoff = 5 * time.Second
	}
	if o.MaxRetryBackoff < o.RetryBackoff {
		o.MaxRetryBackoff = o.RetryBackoff
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	w := &Writer{
		st:        st,
		log:       o.Log,
		interval:  o.FlushInterval,
		maxBatch:  o.MaxBatch,
		queueSize: o.QueueSize,
		backoff:   o.RetryBackoff,
		backMax:   o.MaxRetryBackoff,
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	w.batch, _ = st.(BatchStore)
	w.notFull.L = &w.mu
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w
}

// Add queues r and returns. Tags (slice and strings), Prompt and Response
// are copied, since the record outlives the request and these often alias
// its pooled buffers (a tag parsed with gjson from an unsafe.String of the
// body does); the other strings are kept as they are. A record without a
// RequestID gets a random one, so retries cannot count it twice.
//
// Add blocks while the queue is full (QueueSize records waiting, which
// happens only when the store falls behind or fails): back-pressure rather
// than losing spend. Each such call counts in Stats.QueueFull.
//
// After Close has begun, Add drops r and counts it in Stats.Dropped: stop
// the traffic that produces records before closing the writer.
func (w *Writer) Add(r store.SpendRecord) {
	prepareSpend(&r)
	w.mu.Lock()
	_, ok, wake := w.enqueueSpendLocked(&r)
	w.mu.Unlock()
	if ok && wake {
		w.signal()
	}
}

// AddSync queues r like Add and returns once the transaction holding r has
// committed (nil), ctx is done (ctx.Err()), or a commit attempt holding r
// failed (that error). An error does not mean r is lost: it stays queued
// and is retried, so it may still be committed later; the store's
// RequestID de-duplication makes that safe for a caller that writes it
// again. AddSync does not wait for FlushInterval: its batch commits as soon
// as the transaction before it finishes (group commit). After Close has
// begun it returns ErrClosed.
func (w *Writer) AddSync(ctx context.Context, r store.SpendRecord) error {
	prepareSpend(&r)
	w.mu.Lock()
	seq, ok, _ := w.enqueueSpendLocked(&r)
	if !ok {
		w.mu.Unlock()
		return ErrClosed
	}
	wt := &waiter{spend: seq, failFast: true, ch: make(chan error, 1)}
	w.waiters = append(w.waiters, wt)
	w.mu.Unlock()
	w.signal()
	return w.wait(ctx, wt)
}

// Audit queues an admin audit record; the same rules as Add apply. A record
// without an ID gets a random one.
func (w *Writer) Audit(r store.AuditRecord) {
	if r.ID == "" {
		r.ID = newID()
	}
	r.Before = clone(r.Before)
	r.After = clone(r.After)
	w.mu.Lock()
	if !w.admitLocked() {
		w.mu.Unlock()
		return
	}
	if w.spend.len()+w.audit.len() == 0 {
		w.firstAt = time.Now()
	}
	w.audit.push(r)
	w.auditSeq++
	w.mu.Unlock()
	w.signal()
}

// Flush returns once every record queued before the call has committed, or
// with ctx's error (joined with the last commit error, if any) when ctx
// ends first; the records stay queued either way.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	if w.spendDone >= w.spendSeq && w.auditDone >= w.auditSeq {
		w.mu.Unlock()
		return nil
	}
	if w.aborted {
		w.mu.Unlock()
		return ErrClosed
	}
	wt := &waiter{spend: w.spendSeq, audit: w.auditSeq, ch: make(chan error, 1)}
	w.waiters = append(w.waiters, wt)
	w.mu.Unlock()
	w.signal()
	return w.wait(ctx, wt)
}

// Close stops accepting records, commits everything queued (including
// records whose Add was already blocked on a full queue) and stops the
// goroutine. If ctx ends first, Close abandons what is left, counts it in
// Stats.Dropped, logs it, and returns an error wrapping ctx.Err(). Close
// does not close the store. Calling Close again waits for the same end.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closing {
		w.closing = true
		w.notFull.Broadcast()
	}
	w.mu.Unlock()
	w.signal()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
	}
	w.mu.Lock()
	lastErr := w.lastErr
	before := w.dropped.Load()
	w.aborted = true
	w.notFull.Broadcast()
	w.mu.Unlock()
	w.cancel()
	w.signal()
	<-w.done
	lost := w.dropped.Load() - before
	if lost == 0 {
		return nil // the goroutine finished everything just in time
	}
	if lastErr != nil {
		return fmt.Errorf("spend: close: %d records not written (last error: %v): %w", lost, lastErr, ctx.Err())
	}
	return fmt.Errorf("spend: close: %d records not written: %w", lost, ctx.Err())
}

// Stats returns the current counters.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	queued, inFlight := w.spend.len()+w.audit.len(), w.inFlight
	w.mu.Unlock()
	return Stats{
		Queued:        queued,
		InFlight:      inFlight,
		Written:       w.written.Load(),
		AuditWritten:  w.auditWritten.Load(),
		Batches:       w.batches.Load(),
		FailedBatches: w.failed.Load(),
		Retries:       w.retries.Load(),
		QueueFull:     w.queueFull.Load(),
		Dropped:       w.dropped.Load(),
	}
}

func prepareSpend(r *store.SpendRecord) {
	if r.RequestID == "" {
		r.RequestID = newID()
	}
	if r.Tags != nil {
		tags := make([]string, len(r.Tags))
		for i, t := range r.Tags {
			tags[i] = strings.Clone(t)
		}
		r.Tags = tags
	}
	r.Prompt = clone(r.Prompt)
	r.Response = clone(r.Response)
}

// admitLocked waits for room in the queue; false means the record must be
// dropped (closing, or aborted while waiting).
func (w *Writer) admitLocked() bool {
	if w.closing {
		w.dropped.Add(1)
		return false
	}
	if w.spend.len()+w.audit.len() >= w.queueSize {
		w.queueFull.Add(1)
		w.blocked++
		for w.spend.len()+w.audit.len() >= w.queueSize && !w.aborted {
			w.notFull.Wait()
		}
		w.blocked--
		if w.aborted {
			w.dropped.Add(1)
			return false
		}
	}
	return true
}

// enqueueSpendLocked queues r; wake says whether the goroutine needs a
// signal: the queue was empty (it may be idle without a timer) or holds a
// full batch. Otherwise its timer or the commit in progress brings it back,
// and not signalling keeps Add from waking it once per record.
func (w *Writer) enqueueSpendLocked(r *store.SpendRecord) (seq uint64, ok, wake bool) {
	if !w.admitLocked() {
		return 0, false, false
	}
	if w.spend.len()+w.audit.len() == 0 {
		w.firstAt = time.Now()
		wake = true
	}
	w.spend.push(*r)
	w.spendSeq++
	return w.spendSeq, true, wake || w.spend.len() >= w.maxBatch
}

// signal wakes the goroutine without blocking.
func (w *Writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Writer) wait(ctx context.Context, wt *waiter) error {
	select {
	case err := <-wt.ch:
		return err
	case <-ctx.Done():
		w.mu.Lock()
		w.removeWaiterLocked(wt)
		lastErr := w.lastErr
		w.mu.Unlock()
		// Released under the lock just before removal: that answer wins.
		select {
		case err := <-wt.ch:
			return err
		default:
		}
		if lastErr != nil {
			return errors.Join(ctx.Err(), lastErr)
		}
		return ctx.Err()
	}
}

func (w *Writer) removeWaiterLocked(wt *waiter) {
	for i, x := range w.waiters {
		if x == wt {
			n := copy(w.waiters[i:], w.waiters[i+1:])
			w.waiters[i+n] = nil
			w.waiters = w.waiters[:i+n]
			return
		}
	}
}

// releaseLocked releases waiters whose records are all committed (err
// nil), or, for a failed attempt (err non-nil), the fail-fast waiters
// whose record was in it: spend sequence numbers in (spendDone, failedTo].
func (w *Writer) releaseLocked(err error, failedTo uint64) {
	kept := w.waiters[:0]
	for _, wt := range w.waiters {
		switch {
		case err == nil && wt.spend <= w.spendDone && wt.audit <= w.auditDone:
			wt.ch <- nil
		case err != nil && wt.failFast && wt.spend > w.spendDone && wt.spend <= failedTo:
			wt.ch <- err
		default:
			kept = append(kept, wt)
		}
	}
	clear(w.waiters[len(kept):])
	w.waiters = kept
}

// run is the writer goroutine.
func (w *Writer) run() {
	defer close(w.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var (
		spendBuf []store.SpendRecord
		auditBuf []store.AuditRecord
	)
	for {
		w.mu.Lock()
		if w.aborted {
			w.abortLocked()
			w.mu.Unlock()
			return
		}
		n := w.spend.len() + w.audit.len()
		if n == 0 {
			if w.closing && w.blocked == 0 {
				w.releaseLocked(nil, 0)
				for _, wt := range w.waiters { // unreachable in practice: all committed
					wt.ch <- ErrClosed
				}
				w.waiters = nil
				w.mu.Unlock()
				return
			}
			w.mu.Unlock()
			<-w.wake
			continue
		}
		if wait := w.interval - time.Since(w.firstAt); wait > 0 &&
			w.spend.len() < w.maxBatch && w.audit.len() < w.maxBatch && !w.closing && len(w.waiters) == 0 {
			w.mu.Unlock()
			timer.Reset(wait)
			select {
			case <-w.wake:
				timer.Stop()
			case <-timer.C:
			}
			continue
		}
		spendBuf = w.spend.take(spendBuf, min(w.spend.len(), w.maxBatch))
		auditBuf = w.audit.take(auditBuf, min(w.audit.len(), w.maxBatch))
		w.inFlight = len(spendBuf) + len(auditBuf)
		w.notFull.Broadcast()
		w.mu.Unlock()

		if !w.commit(spendBuf, auditBuf) {
			w.mu.Lock()
			w.abortLocked()
			w.mu.Unlock()
			return
		}
		clear(spendBuf)
		clear(auditBuf)
	}
}

// commit writes one batch, retrying until it commits (true) or Close gives
// up (false).
func (w *Writer) commit(spend []store.SpendRecord, audit []store.AuditRecord) bool {
	delay := w.backoff
	for attempt := 1; ; attempt++ {
		err := w.write(spend, audit)
		w.mu.Lock()
		if err == nil {
			w.written.Add(uint64(len(spend)))
			w.auditWritten.Add(uint64(len(audit)))
			w.batches.Add(1)
			w.spendDone += uint64(len(spend))
			w.auditDone += uint64(len(audit))
			w.inFlight = 0
			w.lastErr = nil
			w.releaseLocked(nil, 0)
			w.mu.Unlock()
			if attempt > 1 {
				w.log.Info("spend batch committed after retries",
					zap.Int("spend", len(spend)), zap.Int("audit", len(audit)), zap.Int("attempts", attempt))
			}
			return true
		}
		w.failed.Add(1)
		w.lastErr = err
		w.releaseLocked(err, w.spendDone+uint64(len(spend)))
		aborted := w.aborted
		w.mu.Unlock()
		if aborted {
			return false
		}
		w.log.Warn("spend batch failed, will retry",
			zap.Int("spend", len(spend)), zap.Int("audit", len(audit)),
			zap.Int("attempt", attempt), zap.Duration("backoff", delay), zap.Error(err))
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-w.ctx.Done():
			t.Stop()
			return false
		}
		delay = min(2*delay, w.backMax)
		w.retries.Add(1)
	}
}

func (w *Writer) write(spend []store.SpendRecord, audit []store.AuditRecord) error {
	if w.batch != nil {
		return w.batch.WriteBatch(w.ctx, spend, audit)
	}
	if len(spend) > 0 {
		if err := w.st.WriteSpend(w.ctx, spend); err != nil {
			return err
		}
	}
	if len(audit) > 0 {
		return w.st.WriteAudit(w.ctx, audit)
	}
	return nil
}

// abortLocked ends the writer after Close gave up: every record still held
// is counted as dropped and every waiter is released with ErrClosed.
func (w *Writer) abortLocked() {
	lost := w.spend.len() + w.audit.len() + w.inFlight
	w.dropped.Add(uint64(lost))
	w.spend = fifo[store.SpendRecord]{}
	w.audit = fifo[store.AuditRecord]{}
	w.inFlight = 0
	for _, wt := range w.waiters {
		wt.ch <- ErrClosed
	}
	w.waiters = nil
	w.notFull.Broadcast()
	if lost > 0 {
		w.log.Error("spend writer closed before writing every record",
			zap.Int("lost", lost), zap.NamedError("last_error", w.lastErr))
	}
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
