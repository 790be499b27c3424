// Package openai is the provider for OpenAI and every OpenAI-compatible API
// (Mistral, Groq, Together, DeepSeek, OpenRouter, Fireworks, xAI,
// Perplexity, Ollama, vLLM, LM Studio, and any server named by api_base).
//
// An OpenAI-dialect request passes through as bytes: only "model" is
// rewritten in place (and stream_options.include_usage added so tokens can
// be counted). Requests from another dialect are translated from the
// canonical chat shape.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/provider"
)

// Family lists the OpenAI-compatible providers by prefix, with their default
// base URLs and the environment prefixes LiteLLM users already set.
var Family = []provider.Info{
	{Name: "openai", DefaultBase: "https://api.openai.com/v1"},
	{Name: "mistral", DefaultBase: "https://api.mistral.ai/v1"},
	{Name: "groq", DefaultBase: "https://api.groq.com/openai/v1"},
	{Name: "together_ai", DefaultBase: "https://api.together.xyz/v1", EnvPrefixes: []string{"TOGETHER_AI", "TOGETHERAI", "TOGETHER"}},
	{Name: "deepseek", DefaultBase: "https://api.deepseek.com/v1"},
	{Name: "openrouter", DefaultBase: "https://openrouter.ai/api/v1", EnvPrefixes: []string{"OPENROUTER", "OR"}},
	{Name: "fireworks_ai", DefaultBase: "https://api.fireworks.ai/inference/v1", EnvPrefixes: []string{"FIREWORKS_AI", "FIREWORKS"}},
	{Name: "xai", DefaultBase: "https://api.x.ai/v1"},
	{Name: "perplexity", DefaultBase: "https://api.perplexity.ai", EnvPrefixes: []string{"PERPLEXITY", "PERPLEXITYAI"}},
	{Name: "ollama", DefaultBase: "http://localhost:11434/v1", NoKey: true},
	{Name: "hosted_vllm", DefaultBase: "", NoKey: true},
	{Name: "lm_studio", DefaultBase: "http://localhost:1234/v1", NoKey: true},
}

// Register registers the whole family.
func Register() {
	for _, info := range Family {
		info.Factory = New
		provider.Register(info)
	}
}

// Provider is one OpenAI-compatible deployment.
type Provider struct {
	name         string
	chat         provider.Endpoint
	completions  provider.Endpoint
	embeddings   provider.Endpoint
	includeUsage bool
}

var (
	_ provider.Provider  = (*Provider)(nil)
	_ provider.Embedder  = (*Provider)(nil)
	_ provider.Completer = (*Provider)(nil)
)

// New builds a deployment. spec.APIBase is already resolved.
func New(spec provider.Spec) (provider.Provider, error) {
	if spec.APIBase == "" {
		return nil, errs.New(400, errs.CodeInvalidRequest, "api_base is required for "+spec.Provider+"/ models")
	}
	headers := make([][2]string, 0, 4)
	if spec.APIKey != "" {
		headers = append(headers, [2]string{"Authorization", "Bearer " + spec.APIKey})
	}
	if spec.Organization != "" {
		headers = append(headers, [2]string{"OpenAI-Organization", spec.Organization})
	}
	for k, v := range spec.Headers {
		headers = append(headers, [2]string{k, v})
	}
	ep := func(path string) provider.Endpoint {
		return provider.Endpoint{
			Provider: spec.Provider, Client: spec.Client, URL: spec.APIBase + path,
			Headers: headers, Secret: spec.APIKey,
		}
	}
	p := &Provider{
		name:        spec.Provider,
		chat:        ep("/chat/completions"),
		completions: ep("/completions"),
		embeddings:  ep("/embeddings"),
		// stream_options.include_usage is added for providers known to
		// accept it, so streamed tokens are counted; a deployment can turn
		// it off with litellm_params.stream_include_usage: false.
		includeUsage: spec.Provider == "openai" || spec.Provider == "hosted_vllm" || spec.Provider == "deepseek" ||
			spec.Provider == "together_ai" || spec.Provider == "fireworks_ai" || spec.Provider == "xai" || spec.Provider == "openrouter",
	}
	if v, ok := spec.Params["stream_include_usage"].(bool); ok {
		p.includeUsage = v
	}
	return p, nil
}

// Chat sends a chat completion.
func (p *Provider) Chat(ctx context.Context, r *provider.Request) (*provider.Response, error) {
	body, err := p.chatBody(r)
	if err != nil {
		return nil, err
	}
	return p.chat.Do(ctx, r, body, llm.OpenAIChat)
}

func (p *Provider) chatBody(r *provider.Request) ([]byte, error) {
	if r.Dialect == llm.OpenAIChat {
		if r.Stream && p.includeUsage {
			if r.Buf == nil {
				return setModelIncludeUsage(nil, r.Body, r.Model)
			}
			b, err := setModelIncludeUsage((*r.Buf)[:0], r.Body, r.Model)
			if err == nil && len(b) > 0 && (len(r.Body) == 0 || &b[0] != &r.Body[0]) {
				// Built in the buffer, or in a new one (ours either
				// way): its room is kept for the next request.
				*r.Buf = b
			}
			return b, err
		}
		return SetModel(r.Body, r.Model)
	}
	c, err := r.Chat()
	if err != nil {
		return nil, err
	}
	cc := *c
	cc.Model = r.Model
	cc.Stream = r.Stream
	// stream_options is only sent to providers known to accept it
	// (Mistral, for one, rejects it with 422), whatever the translation
	// from the client's dialect asked for.
	cc.StreamOptions = nil
	if r.Stream && p.includeUsage {
		cc.StreamOptions = &llm.StreamOptions{IncludeUsage: true}
	}
	b, err := json.Marshal(&cc)
	if err != nil {
		return nil, errs.Internal("encoding upstream request", err)
	}
	return b, nil
}

// Complete sends a legacy completion; only OpenAI-dialect bodies come here.
func (p *Provider) Complete(ctx context.Context, r *provider.Request) (*provider.Response, error) {
	body, err := SetModel(r.Body, r.Model)
	if err != nil {
		return nil, err
	}
	return p.completions.Do(ctx, r, body, llm.OpenAICompletion)
}

// Embed sends an embeddings request.
func (p *Provider) Embed(ctx context.Context, r *provider.Request) (*provider.Response, error) {
	body, err := SetModel(r.Body, r.Model)
	if err != nil {
		return nil, err
	}
	return p.embeddings.Do(ctx, r, body, llm.OpenAIEmbedding)
}

// usageMember asks for the usage chunk at the end of a stream.
const usageMember = `"stream_options":{"include_usage":true}`

// includeUsage returns body (a JSON object, not modified) asking for the
// usage chunk: a body without stream_options gets it as its first member
// in one allocation (sjson's path set cost a kilobyte of garbage per
// stream); one with stream_options but no include_usage goes through sjson.
func includeUsage(body []byte) []byte {
	// Most bodies have no stream_options at all: one scan for the name
	// tells, where a lookup would walk every member (messages included).
	if bytes.Contains(body, []byte(`"stream_options"`)) {
		so := gjson.GetBytes(body, "stream_options")
		if !so.Exists() {
			// The name was inside a string or a nested object: the
			// top level has none.
			return insertUsage(nil, body)
		}
		if so.Get("include_usage").Bool() {
			return body
		}
		b, err := sjson.SetRawBytes(body, "stream_options.include_usage", []byte("true"))
		if err != nil {
			return body
		}
		return b
	}
	return insertUsage(nil, body)
}

// insertUsage adds stream_options with include_usage as body's first
// member, appending to dst (which must not overlap body).
func insertUsage(dst, body []byte) []byte {
	i := bytes.IndexByte(body, '{')
	if i < 0 {
		return body
	}
	rest := bytes.TrimLeft(body[i+1:], " \t\r\n")
	out := grow(dst, len(body)+len(usageMember)+1)
	out = append(out, body[:i+1]...)
	out = append(out, usageMember...)
	if len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, body[i+1:]...)
}

// grow returns dst[:0] with room for n bytes.
func grow(dst []byte, n int) []byte {
	if cap(dst) < n {
		return make([]byte, 0, n)
	}
	return dst[:0]
}

// setModelIncludeUsage is SetModel then includeUsage, in one copy of the
// body when both change it (a stream to a deployment whose model differs
// from the requested one: an alias), where the two would copy it twice.
// The copy is appended to dst (which must not overlap body) when the
// common cases make one.
func setModelIncludeUsage(dst, body []byte, model string) ([]byte, error) {
	if bytes.Contains(body, []byte(`"stream_options"`)) {
		// Rare: the general path (includeUsage decides what to do).
		b, err := SetModel(body, model)
		if err != nil {
			return nil, err
		}
		return includeUsage(b), nil
	}
	cur := gjson.Get(unsafe.String(unsafe.SliceData(body), len(body)), "model")
	if cur.Type == gjson.String && cur.Str == model {
		return insertUsage(dst, body), nil
	}
	i := bytes.IndexByte(body, '{')
	if cur.Index <= i || i < 0 {
		// No model member to replace in place (SetModel adds one).
		b, err := SetModel(body, model)
		if err != nil {
			return nil, err
		}
		return insertUsage(nil, b), nil
	}
	// The opening brace, the usage member, the members up to the model's
	// value, the new value, the rest.
	out := grow(dst, len(body)-len(cur.Raw)+len(model)+2+len(usageMember)+1)
	out = append(out, body[:i+1]...)
	out = append(out, usageMember...)
	out = append(out, ',') // the model member follows
	out = append(out, body[i+1:cur.Index]...)
	out = errs.AppendJSONString(out, model)
	return append(out, body[cur.Index+len(cur.Raw):]...), nil
}

// SetModel returns body with its top-level "model" replaced, editing the
// bytes in place of a decode and re-encode. body is not modified.
func SetModel(body []byte, model string) ([]byte, error) {
	// Looked up over the body's memory (GetBytes would copy the value):
	// cur is only compared and its offset used, within this call.
	cur := gjson.Get(unsafe.String(unsafe.SliceData(body), len(body)), "model")
	if cur.Type == gjson.String && cur.Str == model {
		return body, nil
	}
	if cur.Index > 0 {
		// Replace the raw value at its offset: one allocation.
		out := make([]byte, 0, len(body)-len(cur.Raw)+len(model)+2)
		out = append(out, body[:cur.Index]...)
		out = errs.AppendJSONString(out, model)
		out = append(out, body[cur.Index+len(cur.Raw):]...)
		return out, nil
	}
	out, err := sjson.SetBytes(body, "model", model)
	if err != nil {
		return nil, errs.BadRequest(errs.CodeInvalidJSON, "", "request body is not a JSON object")
	}
	return out, nil
}
