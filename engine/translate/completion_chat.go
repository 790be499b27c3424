package translate

import (
	"bytes"
	"encoding/json"

	"github.com/portcullis/portcullis/engine/llm"
)

// completionRequest is a /v1/completions request.
type completionRequest struct {
	Model            string             `json:"model"`
	Prompt           json.RawMessage    `json:"prompt"`
	MaxTokens        *int               `json:"max_tokens"`
	Temperature      *float64           `json:"temperature"`
	TopP             *float64           `json:"top_p"`
	N                *int               `json:"n"`
	Stream           bool               `json:"stream"`
	StreamOptions    *llm.StreamOptions `json:"stream_options"`
	Stop             llm.Stop           `json:"stop"`
	Seed             *int64             `json:"seed"`
	PresencePenalty  *float64           `json:"presence_penalty"`
	FrequencyPenalty *float64           `json:"frequency_penalty"`
	User             string             `json:"user"`
	Echo             bool               `json:"echo"`
	Suffix           *string            `json:"suffix"`
	Logprobs         *int               `json:"logprobs"`
}

// CompletionToChat decodes a legacy /v1/completions request into a canonical
// chat request with one user message holding the prompt. The prompt must be
// a string or an array of exactly one string; token-id prompts, echo and
// suffix cannot be served by a chat model and are CodeUnsupported;
// logprobs is dropped. Errors are *errs.Error 400s.
func CompletionToChat(body []byte) (*llm.ChatRequest, error) {
	var cr completionRequest
	if err := unmarshalClient(body, &cr); err != nil {
		return nil, err
	}
	prompt, err := completionPrompt(cr.Prompt)
	if err != nil {
		return nil, err
	}
	if cr.Echo {
		return nil, unsupported("echo", "echo is not supported when completions are served by a chat model")
	}
	if cr.Suffix != nil && *cr.Suffix != "" {
		return nil, unsupported("suffix", "suffix is not supported when completions are served by a chat model")
	}
	return &llm.ChatRequest{
		Model:            cr.Model,
		Messages:         []llm.Message{{Role: "user", Content: llm.TextContent(prompt)}},
		MaxTokens:        cr.MaxTokens,
		Temperature:      cr.Temperature,
		TopP:             cr.TopP,
		N:                cr.N,
		Stop:             cr.Stop,
		Seed:             cr.Seed,
		PresencePenalty:  cr.PresencePenalty,
		FrequencyPenalty: cr.FrequencyPenalty,
		Stream:           cr.Stream,
		StreamOptions:    cr.StreamOptions,
		User:             cr.User,
	}, nil
}

func completionPrompt(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", invalid("prompt", "prompt is required")
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", invalid("prompt", "prompt must be a string or an array of strings")
		}
		return s, nil
	case '[':
		var many []json.RawMessage
		if err := json.Unmarshal(raw, &many); err != nil {
			return "", invalid("prompt", "prompt must be a string or an array of strings")
		}
		if len(many) == 0 {
			return "", invalid("prompt", "prompt must not be empty")
		}
		if first := bytes.TrimSpace(many[0]); len(first) == 0 || first[0] != '"' {
			return "", unsupported("prompt", "token-id prompts are not supported when completions are served by a chat model")
		}
		if len(many) > 1 {
			return "", unsupported("prompt", "several prompts in one request are not supported when completions are served by a chat model")
		}
		var s string
		if err := json.Unmarshal(many[0], &s); err != nil {
			return "", invalid("prompt", "prompt must be a string or an array of strings")
		}
		return s, nil
	}
	return "", invalid("prompt", "prompt must be a string or an array of strings")
}
