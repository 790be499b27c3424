package server

import (
	"testing"

	"github.com/portcullis/portcullis/engine/pipeline"
)

// deep uses about 8 KiB of stack, as the request pipeline does.
//
//go:noinline
func deep(n int) int {
	var pad [256]byte
	pad[n%256] = byte(n)
	if n == 0 {
		return int(pad[0])
	}
	return deep(n-1) + int(pad[n%256])
}

func deepHandler(*pipeline.Exchange) error { deep(28); return nil }

// BenchmarkHandleApart is what a streamed request pays to run its pipeline
// on a goroutine of its own (handleApart, with its presized stack); the
// Spawn variant is a plain goroutine growing its stack frame by frame,
// Direct the call without a goroutine.
func BenchmarkHandleApart(b *testing.B) {
	b.Run("Direct", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_ = deepHandler(nil)
		}
	})
	b.Run("Spawn", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			done := make(chan error, 1)
			go func() { done <- deepHandler(nil) }()
			<-done
		}
	})
	b.Run("Presized", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_ = handleApart(deepHandler, nil)
		}
	})
}
