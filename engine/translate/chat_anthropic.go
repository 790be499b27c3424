package translate

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
)

// ChatToAnthropic encodes the canonical chat request as an Anthropic
// Messages request body; model, when not empty, replaces req.Model. System
// and developer messages are concatenated into the top-level system prompt;
// tool messages become tool_result blocks in a user turn; consecutive turns
// of one role are merged (Anthropic requires alternation). req is not
// modified. Errors are *errs.Error 400s (CodeUnsupported for what Anthropic
// cannot express, such as n > 1 or audio input).
func ChatToAnthropic(req *llm.ChatRequest, model string) ([]byte, error) {
	if req == nil {
		return nil, invalid("", "empty request")
	}
	if req.N != nil && *req.N > 1 {
		return nil, unsupported("n", "n > 1 is not supported by this model's provider")
	}
	if model == "" {
		model = req.Model
	}
	out := anthRequestOut{
		Model:         model,
		MaxTokens:     defaultAnthropicMaxTokens,
		StopSequences: req.Stop,
		Stream:        req.Stream,
		Temperature:   req.Temperature,
		TopP:          req.TopP,
	}
	switch {
	case req.MaxCompletionTokens != nil:
		out.MaxTokens = *req.MaxCompletionTokens
	case req.MaxTokens != nil:
		out.MaxTokens = *req.MaxTokens
	}
	if out.Temperature != nil && *out.Temperature > 1 {
		one := 1.0 // Anthropic's range is [0, 1]; OpenAI's is [0, 2]
		out.Temperature = &one
	}
	if req.User != "" {
		out.Metadata = &anthMetadata{UserID: req.User}
	}
	var sys []byte
	msgs := make([]anthMessageOut, 0, len(req.Messages))
	for i := range req.Messages {
		m := &req.Messages[i]
		switch m.Role {
		case "system", "developer":
			s := m.Content.String()
			if s == "" {
				continue
			}
			if len(sys) > 0 {
				sys = append(sys, "\n\n"...)
			}
			sys = append(sys, s...)
		case "user":
			blocks, err := userBlocks(&m.Content, i)
			if err != nil {
				return nil, err
			}
			msgs = appendTurn(msgs, "user", blocks...)
		case "assistant":
			blocks, err := assistantBlocks(m, i)
			if err != nil {
				return nil, err
			}
			msgs = appendTurn(msgs, "assistant", blocks...)
		case "tool":
			b := anthBlockOut{Type: "tool_result", ToolUseID: m.ToolCallID}
			if c, err := toolResultContent(&m.Content, i); err != nil {
				return nil, err
			} else if c != nil {
				b.Content = c
			}
			msgs = appendTurn(msgs, "user", b)
		case "function":
			return nil, unsupported(param("messages", i, ".role"), "the legacy 'function' role is not supported by this model's provider; use tools")
		default:
			return nil, invalid(param("messages", i, ".role"), "messages: unknown role '"+m.Role+"'")
		}
	}
	if len(msgs) == 0 {
		return nil, invalid("messages", "messages: at least one user or assistant message is required")
	}
	for k := range msgs {
		msgs[k].finish()
	}
	out.Messages = msgs
	out.System = string(sys)

	if len(req.Tools) > 0 {
		out.Tools = make([]anthToolOut, 0, len(req.Tools))
		for j := range req.Tools {
			t := &req.Tools[j]
			if t.Type != "" && t.Type != "function" {
				return nil, unsupported(param("tools", j, ".type"), "tool type '"+t.Type+"' is not supported by this model's provider")
			}
			schema := t.Function.Parameters
			if s := bytes.TrimSpace(schema); len(s) == 0 || string(s) == "null" {
				schema = json.RawMessage(`{"type":"object","properties":{}}`)
			}
			out.Tools = append(out.Tools, anthToolOut{Name: t.Function.Name, Description: t.Function.Description, InputSchema: schema})
		}
		tc, err := toolChoiceToAnthropic(req.ToolChoice)
		if err != nil {
			return nil, err
		}
		if req.ParallelToolCalls != nil && !*req.ParallelToolCalls {
			if tc == nil {
				tc = &anthToolChoiceOut{Type: "auto"}
			}
			if tc.Type != "none" {
				tc.DisableParallelToolUse = true
			}
		}
		out.ToolChoice = tc
	}
	// Extended thinking, best effort: Anthropic rejects it together with a
	// forced tool choice (the choice wins), in a tool loop whose last
	// assistant turn has no signed thinking block (we never have one: it
	// is dropped) and with non-default sampling parameters (they are
	// dropped); max_tokens must exceed the budget.
	if budget := thinkingBudget(req.ReasoningEffort); budget > 0 &&
		(out.ToolChoice == nil || out.ToolChoice.Type == "auto" || out.ToolChoice.Type == "none") &&
		!lastAssistantUsesTools(msgs) {
		out.Thinking = &anthThinking{Type: "enabled", BudgetTokens: budget}
		if out.MaxTokens <= budget {
			out.MaxTokens += budget
		}
		out.Temperature, out.TopP = nil, nil
	}

	body, err := marshal(&out)
	if err != nil {
		return nil, invalid("", "request cannot be encoded for Anthropic").Wrap(err)
	}
	return body, nil
}

// lastAssistantUsesTools reports whether the last assistant turn calls
// tools.
func lastAssistantUsesTools(msgs []anthMessageOut) bool {
	for k := len(msgs) - 1; k >= 0; k-- {
		if msgs[k].Role != "assistant" {
			continue
		}
		for j := range msgs[k].blocks {
			if msgs[k].blocks[j].Type == "tool_use" {
				return true
			}
		}
		return false
	}
	return false
}

// thinkingBudget maps reasoning_effort to an extended-thinking budget.
func thinkingBudget(effort string) int {
	switch effort {
	case "minimal", "low":
		return 1024
	case "medium":
		return 2048
	case "high":
		return 4096
	}
	return 0
}

// toolChoiceToAnthropic maps an OpenAI tool_choice. Absent means Anthropic's
// default (auto).
func toolChoiceToAnthropic(raw json.RawMessage) (*anthToolChoiceOut, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	r := gjson.ParseBytes(raw)
	switch r.Type {
	case gjson.String:
		switch r.Str {
		case "auto":
			return &anthToolChoiceOut{Type: "auto"}, nil
		case "none":
			return &anthToolChoiceOut{Type: "none"}, nil
		case "required":
			return &anthToolChoiceOut{Type: "any"}, nil
		}
	case gjson.JSON:
		if r.Get("type").Str == "function" {
			if name := r.Get("function.name").Str; name != "" {
				return &anthToolChoiceOut{Type: "tool", Name: name}, nil
			}
		}
	}
	return nil, invalid("tool_choice", "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":...}}")
}

// appendTurn adds blocks to the conversation, merging into the last turn
// when it has the same role.
func appendTurn(msgs []anthMessageOut, role string, blocks ...anthBlockOut) []anthMessageOut {
	if len(blocks) == 0 {
		return msgs
	}
	if n := len(msgs); n > 0 && msgs[n-1].Role == role {
		msgs[n-1].blocks = append(msgs[n-1].blocks, blocks...)
		return msgs
	}
	return append(msgs, anthMessageOut{Role: role, blocks: append([]anthBlockOut(nil), blocks...)})
}

// finish sets Content from the blocks: a lone text block is sent as a
// string; tool_result blocks are moved to the front of a user turn, where
// Anthropic requires them.
func (m *anthMessageOut) finish() {
	if len(m.blocks) == 1 && m.blocks[0].Type == "text" {
		m.Content = m.blocks[0].Text
		return
	}
	if m.Role == "user" {
		sorted := true
		seenOther := false
		for k := range m.blocks {
			if m.blocks[k].Type == "tool_result" {
				if seenOther {
					sorted = false
					break
				}
			} else {
				seenOther = true
			}
		}
		if !sorted {
			front := make([]anthBlockOut, 0, len(m.blocks))
			for k := range m.blocks {
				if m.blocks[k].Type == "tool_result" {
					front = append(front, m.blocks[k])
				}
			}
			for k := range m.blocks {
				if m.blocks[k].Type != "tool_result" {
					front = append(front, m.blocks[k])
				}
			}
			m.blocks = front
		}
	}
	m.Content = m.blocks
}

// userBlocks converts user content. Empty text is skipped (Anthropic
// rejects empty text blocks).
func userBlocks(c *llm.Content, i int) ([]anthBlockOut, error) {
	if !c.IsParts {
		if c.Text == "" {
			return nil, nil
		}
		return []anthBlockOut{{Type: "text", Text: c.Text}}, nil
	}
	blocks := make([]anthBlockOut, 0, len(c.Parts))
	for j := range c.Parts {
		p := &c.Parts[j]
		switch p.Type {
		case "text":
			if p.Text != "" {
				blocks = append(blocks, anthBlockOut{Type: "text", Text: p.Text})
			}
		case "image_url":
			src, err := sourceFromImageURL(p.ImageURL, partParam(i, j))
			if err != nil {
				return nil, err
			}
			blocks = append(blocks, anthBlockOut{Type: "image", Source: src})
		default:
			return nil, unsupported(partParam(i, j)+".type", "content part type '"+p.Type+"' is not supported by this model's provider")
		}
	}
	return blocks, nil
}

func partParam(i, j int) string {
	return param("messages", i, ".content["+strconv.Itoa(j)+"]")
}

// sourceFromImageURL turns an OpenAI image_url into an Anthropic image
// source: a base64 data: URL becomes base64 data with its media type, an
// http(s) URL a url source.
func sourceFromImageURL(u *llm.ImageURL, p string) (*anthSource, error) {
	if u == nil || u.URL == "" {
		return nil, invalid(p+".image_url.url", "image_url: url is required")
	}
	url := u.URL
	if rest, ok := strings.CutPrefix(url, "data:"); ok {
		meta, data, ok := strings.Cut(rest, ",")
		mediaType, enc, _ := strings.Cut(meta, ";")
		if !ok || enc != "base64" || mediaType == "" {
			return nil, invalid(p+".image_url.url", "image_url: data URLs must be base64 with a media type")
		}
		return &anthSource{Type: "base64", MediaType: mediaType, Data: data}, nil
	}
	if strings.HasPrefix(url, "https://") || strings.HasPrefix(url, "http://") {
		return &anthSource{Type: "url", URL: url}, nil
	}
	return nil, invalid(p+".image_url.url", "image_url: url must be an http(s) or data: URL")
}

// assistantBlocks converts an assistant message: text (and refusal) become
// text blocks, tool_calls tool_use blocks. reasoning_content is dropped:
// Anthropic only accepts thinking blocks it signed.
func assistantBlocks(m *llm.Message, i int) ([]anthBlockOut, error) {
	blocks := make([]anthBlockOut, 0, 1+len(m.ToolCalls))
	if !m.Content.IsParts {
		if m.Content.Text != "" {
			blocks = append(blocks, anthBlockOut{Type: "text", Text: m.Content.Text})
		}
	} else {
		for j := range m.Content.Parts {
			p := &m.Content.Parts[j]
			switch p.Type {
			case "text", "refusal":
				if p.Text != "" {
					blocks = append(blocks, anthBlockOut{Type: "text", Text: p.Text})
				}
			default:
				return nil, unsupported(partParam(i, j)+".type", "assistant content part type '"+p.Type+"' is not supported by this model's provider")
			}
		}
	}
	if m.Refusal != nil && *m.Refusal != "" {
		blocks = append(blocks, anthBlockOut{Type: "text", Text: *m.Refusal})
	}
	for k := range m.ToolCalls {
		tc := &m.ToolCalls[k]
		blocks = append(blocks, anthBlockOut{Type: "tool_use", ID: tc.ID, Name: tc.Function.Name, Input: inputFromArguments(tc.Function.Arguments)})
	}
	return blocks, nil
}

// inputFromArguments parses OpenAI tool-call arguments into an Anthropic
// input object; anything that is not a JSON object becomes {}.
func inputFromArguments(args string) json.RawMessage {
	b := []byte(args)
	if !isJSONObject(b) {
		return emptyObject
	}
	return b
}

// toolResultContent converts a tool message's content: a string stays a
// string, parts become text and image blocks. nil means no content.
func toolResultContent(c *llm.Content, i int) (any, error) {
	if !c.IsParts {
		if c.Text == "" {
			return nil, nil
		}
		return c.Text, nil
	}
	blocks, err := userBlocks(c, i)
	if err != nil || len(blocks) == 0 {
		return nil, err
	}
	return blocks, nil
}

// ChatResponseToAnthropic converts an OpenAI chat.completion body into an
// Anthropic message body (first choice only). The completion id is kept as
// the message id; model, when not empty, replaces the upstream model name.
// reasoning_content becomes a thinking block without a signature. An OpenAI
// error body is returned as a CodeUpstream *errs.Error, an unreadable body
// as CodeUpstreamProtocol.
func ChatResponseToAnthropic(body []byte, model string) ([]byte, llm.Tokens, error) {
	if e := gjson.Get(bstr(body), "error"); e.Exists() && e.Type != gjson.Null {
		return nil, llm.Tokens{}, openAIErrorFrom(e)
	}
	var r llm.ChatResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, llm.Tokens{}, protocolError("upstream returned an unreadable chat completion", err)
	}
	if model == "" {
		model = r.Model
	}
	tok := r.Usage.Tokens()
	out := anthResponseOut{
		ID:         r.ID,
		Type:       "message",
		Role:       "assistant",
		Model:      model,
		Content:    []anthBlockOut{},
		StopReason: "end_turn",
		Usage:      anthropicUsage(tok),
	}
	if len(r.Choices) > 0 {
		c := &r.Choices[0]
		for k := range r.Choices {
			if r.Choices[k].Index == 0 {
				c = &r.Choices[k]
				break
			}
		}
		m := &c.Message
		if m.ReasoningContent != "" {
			th, sig := m.ReasoningContent, ""
			out.Content = append(out.Content, anthBlockOut{Type: "thinking", Thinking: &th, Signature: &sig})
		}
		if s := m.Content.String(); s != "" {
			out.Content = append(out.Content, anthBlockOut{Type: "text", Text: s})
		}
		if m.Refusal != nil && *m.Refusal != "" {
			out.Content = append(out.Content, anthBlockOut{Type: "text", Text: *m.Refusal})
		}
		for k := range m.ToolCalls {
			tc := &m.ToolCalls[k]
			out.Content = append(out.Content, anthBlockOut{Type: "tool_use", ID: tc.ID, Name: tc.Function.Name, Input: inputFromArguments(tc.Function.Arguments)})
		}
		out.StopReason = stopFromOpenAI(c.FinishReason)
		if c.FinishReason == "" && len(m.ToolCalls) > 0 {
			out.StopReason = "tool_use"
		}
	}
	b, err := marshal(&out)
	if err != nil {
		return nil, tok, errs.Internal("encode anthropic response", err)
	}
	return b, tok, nil
}
