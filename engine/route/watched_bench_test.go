package route

import (
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/sse"
)

// readyStream always has an event ready.
type readyStream struct{ ev sse.Event }

func (r *readyStream) Next() (sse.Event, error) { return r.ev, nil }
func (r *readyStream) Close() error             { return nil }

// BenchmarkWatchedNext is the per-event cost of the stream idle deadline.
func BenchmarkWatchedNext(b *testing.B) {
	s := &watched{inner: &readyStream{ev: sse.Event{Data: []byte(`{"x":1}`)}}, idle: time.Minute}
	defer s.Close()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := s.Next(); err != nil {
			b.Fatal(err)
		}
	}
}
