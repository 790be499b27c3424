// Package anthropic is the provider for the Anthropic Messages API.
//
// An Anthropic-dialect request (inbound /v1/messages) passes through as
// bytes with "model" rewritten; an OpenAI-dialect request is translated by
// engine/translate. Responses are returned in the Anthropic dialect; the
// server translates them for OpenAI clients.
package anthropic

import (
	"context"
	"strings"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/provider"
	"github.com/portcullis/portcullis/engine/provider/openai"
	"github.com/portcullis/portcullis/engine/translate"
)

// DefaultVersion is the anthropic-version header sent when neither the
// client nor the deployment's api_version sets one.
const DefaultVersion = "2023-06-01"

// Info registers the provider.
var Info = provider.Info{Name: "anthropic", DefaultBase: "https://api.anthropic.com", Factory: New}

// Provider is one Anthropic deployment.
type Provider struct {
	ep      provider.Endpoint
	version string
}

var _ provider.Provider = (*Provider)(nil)

// MessagesURL applies the base-URL rule: a base ending in /v1/messages is
// used as is, one ending in /v1 gets /messages, anything else /v1/messages
// (so ANTHROPIC_BASE_URL works as the Anthropic SDK reads it).
func MessagesURL(base string) string {
	base = strings.TrimRight(base, "/")
	switch {
	case strings.HasSuffix(base, "/v1/messages"):
		return base
	case strings.HasSuffix(base, "/v1"):
		return base + "/messages"
	}
	return base + "/v1/messages"
}

// New builds a deployment.
func New(spec provider.Spec) (provider.Provider, error) {
	headers := [][2]string{}
	if spec.APIKey != "" {
		headers = append(headers, [2]string{"x-api-key", spec.APIKey})
	}
	for k, v := range spec.Headers {
		headers = append(headers, [2]string{k, v})
	}
	v := spec.APIVersion
	if v == "" {
		v = DefaultVersion
	}
	return &Provider{
		ep: provider.Endpoint{
			Provider: spec.Provider, Client: spec.Client, URL: MessagesURL(spec.APIBase),
			Headers: headers, Secret: spec.APIKey, Classify: classify,
		},
		version: v,
	}, nil
}

// Chat sends a Messages request.
func (p *Provider) Chat(ctx context.Context, r *provider.Request) (*provider.Response, error) {
	var body []byte
	version := p.version
	var beta []byte
	if r.Dialect == llm.AnthropicMessages {
		b, err := openai.SetModel(r.Body, r.Model)
		if err != nil {
			return nil, err
		}
		body = b
		if r.Header != nil {
			if v := r.Header.Peek("anthropic-version"); len(v) > 0 {
				version = string(v)
			}
			beta = r.Header.Peek("anthropic-beta")
		}
	} else {
		c, err := r.Chat()
		if err != nil {
			return nil, err
		}
		cc := *c
		cc.Stream = r.Stream
		b, err := translate.ChatToAnthropic(&cc, r.Model)
		if err != nil {
			return nil, err
		}
		body = b
	}
	if len(beta) > 0 {
		return p.ep.Do(ctx, r, body, llm.AnthropicMessages, [2]string{"anthropic-version", version}, [2]string{"anthropic-beta", string(beta)})
	}
	return p.ep.Do(ctx, r, body, llm.AnthropicMessages, [2]string{"anthropic-version", version})
}

// classify maps Anthropic's error types onto codes: overloaded_error (529)
// is retryable, a low credit balance is a quota error.
func classify(e *errs.Error, status int, body []byte) {
	if status == 529 {
		e.Code = errs.CodeUnavailable
		e.Retryable, e.Fallback = true, true
	}
}
