package spend

// fifo is a slice-backed queue that reuses its backing array: taking from
// the front advances head, and pushing into a full array first slides the
// live part to the front when at least half of it is spent.
type fifo[T any] struct {
	buf  []T
	head int
}

func (q *fifo[T]) len() int { return len(q.buf) - q.head }

func (q *fifo[T]) push(v T) {
	if len(q.buf) == cap(q.buf) && q.head > 0 && q.head >= len(q.buf)/2 {
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf = q.buf[:n]
		q.head = 0
	}
	q.buf = append(q.buf, v)
}

// take appends the first n elements to dst[:0], removes them and returns
// dst.
func (q *fifo[T]) take(dst []T, n int) []T {
	dst = append(dst[:0], q.buf[q.head:q.head+n]...)
	clear(q.buf[q.head : q.head+n])
	q.head += n
	if q.head == len(q.buf) {
		q.buf = q.buf[:0]
		q.head = 0
	}
	return dst
}
