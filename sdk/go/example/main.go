// Command tagger routes batch requests to a cheaper model, tags the
// upstream request, and drops a banned word from streamed answers.
package main

import (
	"strings"

	portcullis "github.com/portcullis/portcullis/sdk/go"
)

var cheap = "gpt-4o-mini"

func init() {
	portcullis.OnConfig(func(cfg []byte) error {
		// cfg is the plugin's `config:` as JSON ("null" when none).
		if m := portcullis.Parse(cfg).Get("cheap_model"); m.Exists() {
			cheap = m.String()
		}
		return nil
	})
	portcullis.OnRequest(func(r *portcullis.Request) *portcullis.Result {
		if !r.HasTag("batch") || !r.HasModel(cheap) {
			return nil // continue, no changes
		}
		return portcullis.Route(cheap).Fallbacks(r.Model()).
			SetHeader("x-batch", "1").Label("routed:batch")
	})
	portcullis.OnStreamEvent(func(e *portcullis.StreamEvent) *portcullis.Result {
		text := e.Data().Get("choices.0.delta.content")
		if !strings.Contains(text.Str, "darn") {
			return nil
		}
		return portcullis.Continue().
			ReplaceString("/choices/0/delta/content", strings.ReplaceAll(text.Str, "darn", "d***")).
			Redacted("/choices/0/delta/content", "profanity", 1)
	})
}

func main() {}
