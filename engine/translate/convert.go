package translate

import (
	"errors"

	"github.com/portcullis/portcullis/engine/llm"
)

// ErrNoTranslation is returned for a pair of dialects with no translation.
var ErrNoTranslation = errors.New("translate: no translation between these dialects")

// ConvertBody translates a complete (non-streamed) response body from one
// dialect to another and returns it with its usage; model is the name the
// client asked for. Equal dialects are not translated: callers pass those
// bodies through.
func ConvertBody(from, to llm.Dialect, body []byte, model string) ([]byte, llm.Tokens, error) {
	switch {
	case from == llm.AnthropicMessages && to == llm.OpenAIChat:
		return AnthropicResponseToChat(body, model)
	case from == llm.OpenAIChat && to == llm.AnthropicMessages:
		return ChatResponseToAnthropic(body, model)
	case from == llm.OpenAIChat && to == llm.OpenAICompletion:
		return ChatResponseToCompletion(body, model)
	case from == llm.AnthropicMessages && to == llm.OpenAICompletion:
		chat, _, err := AnthropicResponseToChat(body, model)
		if err != nil {
			return nil, llm.Tokens{}, err
		}
		return ChatResponseToCompletion(chat, model)
	}
	return nil, llm.Tokens{}, ErrNoTranslation
}
