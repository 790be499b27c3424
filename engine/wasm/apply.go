package wasm

import (
	"fmt"
	"slices"
	"strings"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
)

// applyFilter is a plugin's "apply:" section compiled: which requests the
// plugin runs for. Empty lists match everything.
type applyFilter struct {
	dialects uint8 // bit per llm.Dialect; 0 matches all
	models   []string
	teams    []string
	keys     []string
}

// compileApply reads apply.routes (endpoint paths, with or without /v1,
// or endpoint names), models (exact, or a prefix ending in "*"), teams
// and keys (alias or hash).
func compileApply(ps *config.PluginSettings) (applyFilter, error) {
	a := applyFilter{models: ps.Models, teams: ps.Teams, keys: ps.Keys}
	for _, r := range ps.Routes {
		var d llm.Dialect
		switch strings.TrimPrefix(strings.TrimSuffix(r, "/"), "/v1") {
		case "/chat/completions", "chat":
			d = llm.OpenAIChat
		case "/completions", "completions":
			d = llm.OpenAICompletion
		case "/embeddings", "embeddings":
			d = llm.OpenAIEmbedding
		case "/messages", "messages":
			d = llm.AnthropicMessages
		default:
			return a, fmt.Errorf("apply.routes: unknown route %q (/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/messages)", r)
		}
		a.dialects |= 1 << d
	}
	return a, nil
}

func (a *applyFilter) match(x *pipeline.Exchange) bool {
	if a.dialects != 0 && a.dialects&(1<<x.Dialect) == 0 {
		return false
	}
	if len(a.models) > 0 && !slices.ContainsFunc(a.models, func(m string) bool {
		if p, ok := strings.CutSuffix(m, "*"); ok {
			return strings.HasPrefix(x.Model, p)
		}
		return m == x.Model
	}) {
		return false
	}
	if len(a.teams) > 0 && !slices.Contains(a.teams, x.TeamID) {
		return false
	}
	if len(a.keys) > 0 && !slices.ContainsFunc(a.keys, func(k string) bool {
		return k != "" && (k == x.KeyAlias || k == x.KeyHash)
	}) {
		return false
	}
	return true
}
