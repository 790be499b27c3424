// Package all registers every built-in provider. Adding a provider is a new
// package under engine/provider and one line here.
package all

import (
	"sync"

	"github.com/portcullis/portcullis/engine/provider"
	"github.com/portcullis/portcullis/engine/provider/anthropic"
	"github.com/portcullis/portcullis/engine/provider/mock"
	"github.com/portcullis/portcullis/engine/provider/openai"
)

var once sync.Once

// Register registers the built-in providers; safe to call more than once.
func Register() {
	once.Do(func() {
		openai.Register()
		provider.Register(anthropic.Info)
		provider.Register(mock.Info)
	})
}
