package translate

import (
	"bytes"
	"encoding/json"
	"reflect"
)

// The Anthropic Messages wire shapes, private to this package. Types read
// from the wire (requests from clients, responses from upstream) and types
// written to it are separate: the readers accept every form the API allows
// (string or block-array content), the writers hold exactly what is sent.

// anthRequest is a Messages request as a client sends it.
type anthRequest struct {
	Model         string          `json:"model"`
	Messages      []anthMessage   `json:"messages"`
	System        anthContent     `json:"system"`
	MaxTokens     *int            `json:"max_tokens"`
	Metadata      *anthMetadata   `json:"metadata"`
	StopSequences []string        `json:"stop_sequences"`
	Stream        bool            `json:"stream"`
	Temperature   *float64        `json:"temperature"`
	TopP          *float64        `json:"top_p"`
	TopK          *int            `json:"top_k"`
	Tools         []anthTool      `json:"tools"`
	ToolChoice    *anthToolChoice `json:"tool_choice"`
}

type anthMetadata struct {
	UserID string `json:"user_id,omitempty"`
}

type anthMessage struct {
	Role    string      `json:"role"`
	Content anthContent `json:"content"`
}

// anthContent is a string or an array of content blocks.
type anthContent struct {
	Text     string
	Blocks   []anthBlock
	IsBlocks bool
}

// stringOrArray names the expected JSON kind in type errors.
type stringOrArray struct{}

var stringOrArrayType = reflect.TypeOf(stringOrArray{})

// UnmarshalJSON accepts a string, an array of blocks or null.
func (c *anthContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	*c = anthContent{}
	if len(b) == 0 {
		return nil
	}
	switch b[0] {
	case 'n':
		return nil
	case '"':
		return json.Unmarshal(b, &c.Text)
	case '[':
		c.IsBlocks = true
		return json.Unmarshal(b, &c.Blocks)
	}
	return &json.UnmarshalTypeError{Value: jsonValueKind(b[0]), Type: stringOrArrayType}
}

// jsonValueKind names the JSON value starting with c, as encoding/json does.
func jsonValueKind(c byte) string {
	switch c {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "bool"
	}
	return "number"
}

// anthBlock is any content block as read from the wire.
type anthBlock struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	Source    *anthSource     `json:"source"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   *anthContent    `json:"content"`
	IsError   bool            `json:"is_error"`
	Thinking  string          `json:"thinking"`
}

// anthSource is an image source: base64 data or a URL.
type anthSource struct {
	Type      string `json:"type"`
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
	URL       string `json:"url,omitempty"`
}

type anthTool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	InputSchema json.RawMessage `json:"input_schema"`
}

type anthToolChoice struct {
	Type                   string `json:"type"`
	Name                   string `json:"name"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use"`
}

// anthResponse is a non-streamed Messages response as read from upstream.
type anthResponse struct {
	ID         string      `json:"id"`
	Type       string      `json:"type"`
	Model      string      `json:"model"`
	Content    []anthBlock `json:"content"`
	StopReason string      `json:"stop_reason"`
	Usage      anthUsage   `json:"usage"`
}

// ---- written to the wire ---------------------------------------------------

type anthRequestOut struct {
	Model         string             `json:"model"`
	Messages      []anthMessageOut   `json:"messages"`
	System        string             `json:"system,omitempty"`
	MaxTokens     int                `json:"max_tokens"`
	Metadata      *anthMetadata      `json:"metadata,omitempty"`
	StopSequences []string           `json:"stop_sequences,omitempty"`
	Stream        bool               `json:"stream,omitempty"`
	Temperature   *float64           `json:"temperature,omitempty"`
	TopP          *float64           `json:"top_p,omitempty"`
	Tools         []anthToolOut      `json:"tools,omitempty"`
	ToolChoice    *anthToolChoiceOut `json:"tool_choice,omitempty"`
	Thinking      *anthThinking      `json:"thinking,omitempty"`
}

// anthMessageOut holds its blocks while messages are merged; Content is set
// from them (a string for a lone text block) just before marshalling.
type anthMessageOut struct {
	Role    string `json:"role"`
	Content any    `json:"content"`
	blocks  []anthBlockOut
}

// anthBlockOut is one content block written to the wire. Text blocks are
// never empty (Anthropic rejects them), so omitempty on text is safe.
type anthBlockOut struct {
	Type      string          `json:"type"`
	Text      string          `json:"text,omitempty"`
	Thinking  *string         `json:"thinking,omitempty"`
	Signature *string         `json:"signature,omitempty"`
	Source    *anthSource     `json:"source,omitempty"`
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	ToolUseID string          `json:"tool_use_id,omitempty"`
	Content   any             `json:"content,omitempty"`
}

type anthToolOut struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema"`
}

type anthToolChoiceOut struct {
	Type                   string `json:"type"`
	Name                   string `json:"name,omitempty"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use,omitempty"`
}

type anthThinking struct {
	Type         string `json:"type"`
	BudgetTokens int    `json:"budget_tokens"`
}

type anthResponseOut struct {
	ID           string         `json:"id"`
	Type         string         `json:"type"`
	Role         string         `json:"role"`
	Model        string         `json:"model"`
	Content      []anthBlockOut `json:"content"`
	StopReason   string         `json:"stop_reason"`
	StopSequence *string        `json:"stop_sequence"`
	Usage        anthUsage      `json:"usage"`
}
