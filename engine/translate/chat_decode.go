package translate

import "github.com/portcullis/portcullis/engine/llm"

// DecodeChat decodes an OpenAI Chat Completions request body into the
// canonical request. Errors are *errs.Error 400s: CodeInvalidJSON for a body
// that is not JSON, CodeInvalidRequest with Param naming the field for a
// value of the wrong type, a missing message list or an unknown role.
func DecodeChat(body []byte) (*llm.ChatRequest, error) {
	req := new(llm.ChatRequest)
	if err := unmarshalClient(body, req); err != nil {
		return nil, err
	}
	if len(req.Messages) == 0 {
		return nil, invalid("messages", "messages: at least one message is required")
	}
	for i := range req.Messages {
		switch req.Messages[i].Role {
		case "system", "developer", "user", "assistant", "tool", "function":
		default:
			return nil, invalid(param("messages", i, ".role"), "messages: unknown role '"+req.Messages[i].Role+"'")
		}
	}
	return req, nil
}
