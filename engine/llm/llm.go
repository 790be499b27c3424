// Package llm holds the canonical request, response, chunk and usage types.
//
// Portcullis has one schema inside: the OpenAI Chat Completions shape. Bodies
// that only pass through (OpenAI in, OpenAI-compatible out) are never decoded
// into these types; they stay bytes and are edited in place. These structs are
// used where dialects differ (Anthropic in, OpenAI out and the reverse), by the
// mock provider, and by providers whose wire format is neither.
package llm

import (
	"bytes"
	"encoding/json"
)

// Dialect names a wire format: what an inbound endpoint accepts and what a
// provider emits.
type Dialect uint8

// The dialects Portcullis speaks.
const (
	DialectNone       Dialect = iota
	OpenAIChat                // /v1/chat/completions request, response and chunks
	OpenAICompletion          // /v1/completions (legacy text completions)
	OpenAIEmbedding           // /v1/embeddings
	AnthropicMessages         // /v1/messages request, response and events
)

// Path is the endpoint's canonical path ("" for none).
func (d Dialect) Path() string {
	switch d {
	case OpenAIChat:
		return "/v1/chat/completions"
	case OpenAICompletion:
		return "/v1/completions"
	case OpenAIEmbedding:
		return "/v1/embeddings"
	case AnthropicMessages:
		return "/v1/messages"
	}
	return ""
}

func (d Dialect) String() string {
	switch d {
	case OpenAIChat:
		return "openai.chat"
	case OpenAICompletion:
		return "openai.completion"
	case OpenAIEmbedding:
		return "openai.embedding"
	case AnthropicMessages:
		return "anthropic.messages"
	}
	return "none"
}

// Operation is what a request asks for, independent of its dialect.
type Operation uint8

// Operations.
const (
	OpChat Operation = iota
	OpCompletion
	OpEmbedding
)

// Operation returns the operation a dialect's request performs.
func (d Dialect) Operation() Operation {
	switch d {
	case OpenAICompletion:
		return OpCompletion
	case OpenAIEmbedding:
		return OpEmbedding
	}
	return OpChat
}

// ChatRequest is the OpenAI Chat Completions request.
type ChatRequest struct {
	Model               string          `json:"model"`
	Messages            []Message       `json:"messages"`
	Tools               []Tool          `json:"tools,omitempty"`
	ToolChoice          json.RawMessage `json:"tool_choice,omitempty"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls,omitempty"`
	ResponseFormat      json.RawMessage `json:"response_format,omitempty"`
	MaxTokens           *int            `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int            `json:"max_completion_tokens,omitempty"`
	Temperature         *float64        `json:"temperature,omitempty"`
	TopP                *float64        `json:"top_p,omitempty"`
	N                   *int            `json:"n,omitempty"`
	Stop                Stop            `json:"stop,omitempty"`
	Seed                *int64          `json:"seed,omitempty"`
	PresencePenalty     *float64        `json:"presence_penalty,omitempty"`
	FrequencyPenalty    *float64        `json:"frequency_penalty,omitempty"`
	Logprobs            *bool           `json:"logprobs,omitempty"`
	TopLogprobs         *int            `json:"top_logprobs,omitempty"`
	Stream              bool            `json:"stream,omitempty"`
	StreamOptions       *StreamOptions  `json:"stream_options,omitempty"`
	User                string          `json:"user,omitempty"`
	Metadata            json.RawMessage `json:"metadata,omitempty"`
	ReasoningEffort     string          `json:"reasoning_effort,omitempty"`
}

// StreamOptions is stream_options.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// Stop is the "stop" field: a string or an array of strings on the wire,
// always a slice here.
type Stop []string

// UnmarshalJSON accepts a string, an array of strings or null.
func (s *Stop) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		*s = nil
		return nil
	}
	if b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = Stop{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*s = many
	return nil
}

// Message is one chat message.
type Message struct {
	Role       string     `json:"role"`
	Content    Content    `json:"content"`
	Name       string     `json:"name,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
	Refusal    *string    `json:"refusal,omitempty"`
	// ReasoningContent carries provider "thinking" text (LiteLLM's field name).
	ReasoningContent string `json:"reasoning_content,omitempty"`
}

// Content is a message content: a plain string or a list of parts. Null on
// the wire is Null=true.
type Content struct {
	Text  string
	Parts []ContentPart
	// IsParts is true when the wire form is an array.
	IsParts bool
	Null    bool
}

// TextContent builds a string content.
func TextContent(s string) Content { return Content{Text: s} }

// UnmarshalJSON accepts a string, an array of parts or null.
func (c *Content) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	*c = Content{}
	switch {
	case len(b) == 0 || string(b) == "null":
		c.Null = true
		return nil
	case b[0] == '"':
		return json.Unmarshal(b, &c.Text)
	default:
		c.IsParts = true
		return json.Unmarshal(b, &c.Parts)
	}
}

// MarshalJSON writes the form the content was read in.
func (c Content) MarshalJSON() ([]byte, error) {
	switch {
	case c.IsParts:
		return json.Marshal(c.Parts)
	case c.Null:
		return []byte("null"), nil
	default:
		return json.Marshal(c.Text)
	}
}

// String returns the concatenated text of the content.
func (c Content) String() string {
	if !c.IsParts {
		return c.Text
	}
	var n int
	for i := range c.Parts {
		n += len(c.Parts[i].Text)
	}
	buf := make([]byte, 0, n)
	for i := range c.Parts {
		if c.Parts[i].Type == "text" {
			buf = append(buf, c.Parts[i].Text...)
		}
	}
	return string(buf)
}

// ContentPart is one part of an array content.
type ContentPart struct {
	Type       string      `json:"type"`
	Text       string      `json:"text,omitempty"`
	ImageURL   *ImageURL   `json:"image_url,omitempty"`
	InputAudio *InputAudio `json:"input_audio,omitempty"`
}

// ImageURL is an image part: an https URL or a data: URL.
type ImageURL struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

// InputAudio is an audio part.
type InputAudio struct {
	Data   string `json:"data"`
	Format string `json:"format"`
}

// Tool is a tool definition.
type Tool struct {
	Type     string      `json:"type"`
	Function FunctionDef `json:"function"`
}

// FunctionDef is a function tool's schema.
type FunctionDef struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// ToolCall is a call the model makes. Index is set in stream deltas only.
type ToolCall struct {
	Index    *int         `json:"index,omitempty"`
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function FunctionCall `json:"function"`
}

// FunctionCall is the function part of a tool call; Arguments is a JSON text.
type FunctionCall struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// ChatResponse is a non-streamed chat completion.
type ChatResponse struct {
	ID                string   `json:"id"`
	Object            string   `json:"object"`
	Created           int64    `json:"created"`
	Model             string   `json:"model"`
	Choices           []Choice `json:"choices"`
	Usage             *Usage   `json:"usage,omitempty"`
	SystemFingerprint string   `json:"system_fingerprint,omitempty"`
}

// Choice is one choice of a chat completion.
type Choice struct {
	Index        int             `json:"index"`
	Message      Message         `json:"message"`
	FinishReason string          `json:"finish_reason"`
	Logprobs     json.RawMessage `json:"logprobs,omitempty"`
}

// ChatChunk is one streamed chat.completion.chunk.
type ChatChunk struct {
	ID                string        `json:"id"`
	Object            string        `json:"object"`
	Created           int64         `json:"created"`
	Model             string        `json:"model"`
	Choices           []ChunkChoice `json:"choices"`
	Usage             *Usage        `json:"usage,omitempty"`
	SystemFingerprint string        `json:"system_fingerprint,omitempty"`
}

// ChunkChoice is one choice of a chunk.
type ChunkChoice struct {
	Index        int             `json:"index"`
	Delta        Delta           `json:"delta"`
	FinishReason *string         `json:"finish_reason"`
	Logprobs     json.RawMessage `json:"logprobs,omitempty"`
}

// Delta is the incremental message of a chunk.
type Delta struct {
	Role             string     `json:"role,omitempty"`
	Content          *string    `json:"content,omitempty"`
	ToolCalls        []ToolCall `json:"tool_calls,omitempty"`
	Refusal          *string    `json:"refusal,omitempty"`
	ReasoningContent *string    `json:"reasoning_content,omitempty"`
}

// Usage is token usage in the OpenAI shape.
type Usage struct {
	PromptTokens            int                      `json:"prompt_tokens"`
	CompletionTokens        int                      `json:"completion_tokens"`
	TotalTokens             int                      `json:"total_tokens"`
	PromptTokensDetails     *PromptTokensDetails     `json:"prompt_tokens_details,omitempty"`
	CompletionTokensDetails *CompletionTokensDetails `json:"completion_tokens_details,omitempty"`
}

// PromptTokensDetails splits prompt tokens.
type PromptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
	// CacheCreationTokens counts tokens written to a provider prompt cache
	// (Anthropic cache_creation_input_tokens); not an OpenAI field.
	CacheCreationTokens int `json:"cache_creation_tokens,omitempty"`
}

// CompletionTokensDetails splits completion tokens.
type CompletionTokensDetails struct {
	ReasoningTokens int `json:"reasoning_tokens"`
}

// Tokens is the flat usage record every stage after the provider reads
// (metrics, logs, spend). It is a value type: no allocation to pass around.
type Tokens struct {
	Prompt     int
	Completion int
	CachedRead int
	CacheWrite int
	Reasoning  int
}

// Total is prompt plus completion tokens.
func (t Tokens) Total() int { return t.Prompt + t.Completion }

// Tokens flattens a Usage.
func (u *Usage) Tokens() Tokens {
	if u == nil {
		return Tokens{}
	}
	t := Tokens{Prompt: u.PromptTokens, Completion: u.CompletionTokens}
	if d := u.PromptTokensDetails; d != nil {
		t.CachedRead = d.CachedTokens
		t.CacheWrite = d.CacheCreationTokens
	}
	if d := u.CompletionTokensDetails; d != nil {
		t.Reasoning = d.ReasoningTokens
	}
	return t
}

// Finish reasons in the OpenAI vocabulary.
const (
	FinishStop          = "stop"
	FinishLength        = "length"
	FinishToolCalls     = "tool_calls"
	FinishContentFilter = "content_filter"
)
