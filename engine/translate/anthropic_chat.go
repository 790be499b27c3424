package translate

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
)

// AnthropicToChat decodes an Anthropic Messages request into the canonical
// chat request. The top-level system prompt becomes a leading system
// message; tool_result blocks become tool messages placed before the rest of
// their user turn; tool_use blocks become assistant tool_calls. A streamed
// request asks for stream usage, which the Anthropic answer must carry.
// Errors are *errs.Error 400s.
func AnthropicToChat(body []byte) (*llm.ChatRequest, error) {
	var ar anthRequest
	if err := unmarshalClient(body, &ar); err != nil {
		return nil, err
	}
	if len(ar.Messages) == 0 {
		return nil, invalid("messages", "messages: at least one message is required")
	}
	req := &llm.ChatRequest{
		Model:       ar.Model,
		MaxTokens:   ar.MaxTokens,
		Temperature: ar.Temperature,
		TopP:        ar.TopP,
		Stop:        llm.Stop(ar.StopSequences),
		Stream:      ar.Stream,
	}
	if ar.Stream {
		req.StreamOptions = &llm.StreamOptions{IncludeUsage: true}
	}
	if ar.Metadata != nil {
		req.User = ar.Metadata.UserID
	}

	msgs := make([]llm.Message, 0, len(ar.Messages)+1)
	sys, err := anthSystemText(&ar.System)
	if err != nil {
		return nil, err
	}
	if sys != "" {
		msgs = append(msgs, llm.Message{Role: "system", Content: llm.TextContent(sys)})
	}
	for i := range ar.Messages {
		m := &ar.Messages[i]
		switch m.Role {
		case "user":
			msgs, err = appendAnthUser(msgs, m, i)
		case "assistant":
			msgs, err = appendAnthAssistant(msgs, m, i)
		default:
			err = invalid(param("messages", i, ".role"), `messages: role must be "user" or "assistant"`)
		}
		if err != nil {
			return nil, err
		}
	}
	req.Messages = msgs

	if len(ar.Tools) > 0 {
		req.Tools = make([]llm.Tool, 0, len(ar.Tools))
		for j := range ar.Tools {
			t := &ar.Tools[j]
			if t.Type != "" && t.Type != "custom" {
				return nil, unsupported(param("tools", j, ".type"), "tool type '"+t.Type+"' is not supported by this model's provider")
			}
			if t.Name == "" {
				return nil, invalid(param("tools", j, ".name"), "tools: name is required")
			}
			req.Tools = append(req.Tools, llm.Tool{Type: "function", Function: llm.FunctionDef{
				Name: t.Name, Description: t.Description, Parameters: t.InputSchema,
			}})
		}
		if tc := ar.ToolChoice; tc != nil {
			switch tc.Type {
			case "auto", "":
				req.ToolChoice = json.RawMessage(`"auto"`)
			case "any":
				req.ToolChoice = json.RawMessage(`"required"`)
			case "none":
				req.ToolChoice = json.RawMessage(`"none"`)
			case "tool":
				if tc.Name == "" {
					return nil, invalid("tool_choice.name", "tool_choice: name is required for type 'tool'")
				}
				b := append(make([]byte, 0, 48+len(tc.Name)), `{"type":"function","function":{"name":`...)
				b = errs.AppendJSONString(b, tc.Name)
				req.ToolChoice = append(b, "}}"...)
			default:
				return nil, invalid("tool_choice.type", "tool_choice: unknown type '"+tc.Type+"'")
			}
			if tc.DisableParallelToolUse && tc.Type != "none" {
				f := false
				req.ParallelToolCalls = &f
			}
		}
	}
	return req, nil
}

// anthSystemText flattens the system prompt (string or text blocks).
func anthSystemText(c *anthContent) (string, error) {
	if !c.IsBlocks {
		return c.Text, nil
	}
	var b []byte
	for j := range c.Blocks {
		if c.Blocks[j].Type != "text" {
			return "", invalid(param("system", j, ".type"), "system: only text blocks are allowed")
		}
		if c.Blocks[j].Text == "" {
			continue
		}
		if len(b) > 0 {
			b = append(b, "\n\n"...)
		}
		b = append(b, c.Blocks[j].Text...)
	}
	return string(b), nil
}

func blockParam(i, j int) string {
	return param("messages", i, ".content["+strconv.Itoa(j)+"]")
}

// appendAnthUser converts one user turn: tool results first (OpenAI wants
// tool messages right after the assistant's tool_calls), then the rest.
func appendAnthUser(msgs []llm.Message, m *anthMessage, i int) ([]llm.Message, error) {
	if !m.Content.IsBlocks {
		return append(msgs, llm.Message{Role: "user", Content: llm.TextContent(m.Content.Text)}), nil
	}
	blocks := m.Content.Blocks
	others := 0
	for j := range blocks {
		b := &blocks[j]
		if b.Type != "tool_result" {
			others++
			continue
		}
		msgs = append(msgs, llm.Message{Role: "tool", ToolCallID: b.ToolUseID, Content: llm.TextContent(toolResultText(b.Content))})
	}
	if others == 0 {
		return msgs, nil
	}
	parts := make([]llm.ContentPart, 0, others)
	for j := range blocks {
		b := &blocks[j]
		switch b.Type {
		case "tool_result", "thinking", "redacted_thinking":
		case "text":
			parts = append(parts, llm.ContentPart{Type: "text", Text: b.Text})
		case "image":
			url, err := imageURLFromSource(b.Source, blockParam(i, j))
			if err != nil {
				return nil, err
			}
			parts = append(parts, llm.ContentPart{Type: "image_url", ImageURL: &llm.ImageURL{URL: url}})
		default:
			return nil, unsupported(blockParam(i, j), "content block type '"+b.Type+"' is not supported by this model's provider")
		}
	}
	switch {
	case len(parts) == 0:
		return msgs, nil
	case len(parts) == 1 && parts[0].Type == "text":
		return append(msgs, llm.Message{Role: "user", Content: llm.TextContent(parts[0].Text)}), nil
	}
	return append(msgs, llm.Message{Role: "user", Content: llm.Content{Parts: parts, IsParts: true}}), nil
}

// toolResultText flattens a tool_result's content. OpenAI tool messages
// carry text only: image blocks in a result are dropped.
func toolResultText(c *anthContent) string {
	if c == nil {
		return ""
	}
	if !c.IsBlocks {
		return c.Text
	}
	if len(c.Blocks) == 1 && c.Blocks[0].Type == "text" {
		return c.Blocks[0].Text
	}
	return joinText(c.Blocks, "\n")
}

func joinText(blocks []anthBlock, sep string) string {
	var b []byte
	first := true
	for j := range blocks {
		if blocks[j].Type != "text" {
			continue
		}
		if !first {
			b = append(b, sep...)
		}
		first = false
		b = append(b, blocks[j].Text...)
	}
	return string(b)
}

// imageURLFromSource turns an Anthropic image source into an OpenAI
// image_url: base64 data becomes a data: URL.
func imageURLFromSource(s *anthSource, p string) (string, error) {
	if s == nil {
		return "", invalid(p+".source", "image: source is required")
	}
	switch s.Type {
	case "base64":
		if s.MediaType == "" || s.Data == "" {
			return "", invalid(p+".source", "image: base64 source needs media_type and data")
		}
		return "data:" + s.MediaType + ";base64," + s.Data, nil
	case "url":
		if s.URL == "" {
			return "", invalid(p+".source.url", "image: url is required")
		}
		return s.URL, nil
	}
	return "", unsupported(p+".source.type", "image source type '"+s.Type+"' is not supported by this model's provider")
}

// appendAnthAssistant converts one assistant turn. Text blocks are joined
// as they are (citations split one answer into several blocks); thinking
// blocks are dropped (OpenAI-compatible APIs reject or ignore them).
func appendAnthAssistant(msgs []llm.Message, m *anthMessage, i int) ([]llm.Message, error) {
	msg := llm.Message{Role: "assistant"}
	if !m.Content.IsBlocks {
		msg.Content = llm.TextContent(m.Content.Text)
		return append(msgs, msg), nil
	}
	var text []byte
	for j := range m.Content.Blocks {
		b := &m.Content.Blocks[j]
		switch b.Type {
		case "text":
			text = append(text, b.Text...)
		case "tool_use":
			msg.ToolCalls = append(msg.ToolCalls, llm.ToolCall{ID: b.ID, Type: "function",
				Function: llm.FunctionCall{Name: b.Name, Arguments: argumentsFromInput(b.Input)}})
		case "thinking", "redacted_thinking":
		default:
			return nil, unsupported(blockParam(i, j), "content block type '"+b.Type+"' is not supported by this model's provider")
		}
	}
	if len(text) == 0 && len(msg.ToolCalls) > 0 {
		msg.Content = llm.Content{Null: true}
	} else {
		msg.Content = llm.TextContent(string(text))
	}
	return append(msgs, msg), nil
}

// argumentsFromInput renders a tool_use input object as OpenAI arguments.
func argumentsFromInput(in json.RawMessage) string {
	in = bytes.TrimSpace(in)
	if len(in) == 0 || string(in) == "null" {
		return "{}"
	}
	return string(in)
}

// AnthropicResponseToChat converts an Anthropic message response into an
// OpenAI chat.completion body. The message id is kept as the completion id;
// model, when not empty, replaces the upstream model name. An Anthropic
// error body is returned as a CodeUpstream *errs.Error, an unreadable body
// as CodeUpstreamProtocol.
func AnthropicResponseToChat(body []byte, model string) ([]byte, llm.Tokens, error) {
	var r anthResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, llm.Tokens{}, protocolError("upstream returned an unreadable Anthropic response", err)
	}
	if r.Type == "error" {
		return nil, llm.Tokens{}, anthropicErrorFrom(bstr(body))
	}
	if model == "" {
		model = r.Model
	}
	msg := llm.Message{Role: "assistant"}
	var text, thinking []byte
	for j := range r.Content {
		b := &r.Content[j]
		switch b.Type {
		case "text":
			text = append(text, b.Text...)
		case "thinking":
			thinking = append(thinking, b.Thinking...)
		case "tool_use":
			msg.ToolCalls = append(msg.ToolCalls, llm.ToolCall{ID: b.ID, Type: "function",
				Function: llm.FunctionCall{Name: b.Name, Arguments: argumentsFromInput(b.Input)}})
		}
	}
	if len(text) == 0 && len(msg.ToolCalls) > 0 {
		msg.Content = llm.Content{Null: true}
	} else {
		msg.Content = llm.TextContent(string(text))
	}
	msg.ReasoningContent = string(thinking)
	tok := r.Usage.tokens()
	resp := llm.ChatResponse{
		ID:      r.ID,
		Object:  "chat.completion",
		Created: nowUnix(),
		Model:   model,
		Choices: []llm.Choice{{Message: msg, FinishReason: finishFromAnthropic(r.StopReason)}},
		Usage:   openAIUsage(tok),
	}
	out, err := marshal(&resp)
	if err != nil {
		return nil, tok, errs.Internal("encode chat response", err)
	}
	return out, tok, nil
}
