package translate

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/sse"
)

type completionResponse struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	Created           int64              `json:"created"`
	Model             string             `json:"model"`
	Choices           []completionChoice `json:"choices"`
	Usage             *completionUsage   `json:"usage,omitempty"`
	SystemFingerprint string             `json:"system_fingerprint,omitempty"`
}

type completionChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason string    `json:"finish_reason"`
}

type completionUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// ChatResponseToCompletion converts a chat.completion body into a legacy
// text_completion body: each choice's message text becomes the choice text.
// The upstream id and created are kept; model, when not empty, replaces the
// upstream model name. An OpenAI error body is returned as a CodeUpstream
// *errs.Error, an unreadable body as CodeUpstreamProtocol.
func ChatResponseToCompletion(body []byte, model string) ([]byte, llm.Tokens, error) {
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
	if r.Created == 0 {
		r.Created = nowUnix()
	}
	out := completionResponse{
		ID:                r.ID,
		Object:            "text_completion",
		Created:           r.Created,
		Model:             model,
		Choices:           make([]completionChoice, len(r.Choices)),
		SystemFingerprint: r.SystemFingerprint,
	}
	for k := range r.Choices {
		c := &r.Choices[k]
		out.Choices[k] = completionChoice{Text: c.Message.Content.String(), Index: c.Index, FinishReason: completionFinish(c.FinishReason)}
	}
	tok := r.Usage.Tokens()
	if r.Usage != nil {
		out.Usage = &completionUsage{PromptTokens: tok.Prompt, CompletionTokens: tok.Completion, TotalTokens: tok.Total()}
	}
	b, err := marshal(&out)
	if err != nil {
		return nil, tok, errs.Internal("encode completion response", err)
	}
	return b, tok, nil
}

// completionFinish maps a chat finish_reason to the legacy vocabulary
// (stop, length, content_filter): a tool call ends the text.
func completionFinish(r string) string {
	if r == llm.FinishToolCalls || r == "function_call" {
		return llm.FinishStop
	}
	return r
}

// chatToCompletionStream turns chat chunks into text_completion chunks.
type chatToCompletionStream struct {
	model  string
	prefix []byte // {"id":..,"object":"text_completion","created":..,"model":..,"choices":[
	buf    []byte
	usage  llm.Tokens
	done   bool
}

// NewChatToCompletionStream returns a translator from chat chunks to legacy
// text_completion chunks. Chunks without text or finish_reason (the role
// chunk, tool-call deltas) emit nothing; the usage chunk is kept; [DONE] is
// passed on. model, when not empty, replaces the upstream model.
func NewChatToCompletionStream(model string) StreamTranslator {
	return &chatToCompletionStream{model: model, buf: make([]byte, 0, 256)}
}

func (t *chatToCompletionStream) Done() bool        { return t.done }
func (t *chatToCompletionStream) Usage() llm.Tokens { return t.usage }

func (t *chatToCompletionStream) Event(ev sse.Event, emit Emit) error {
	if t.done {
		return nil
	}
	if ev.IsDone() {
		t.done = true
		return emit(nil, sse.Done)
	}
	if len(bytes.TrimSpace(ev.Data)) == 0 {
		return nil
	}
	s := bstr(ev.Data)
	if e := gjson.Get(s, "error"); e.Exists() && e.Type != gjson.Null {
		return openAIErrorFrom(e)
	}
	if t.prefix == nil {
		t.setPrefix(s)
	}
	b := append(t.buf[:0], t.prefix...)
	n := 0
	gjson.Get(s, "choices").ForEach(func(_, c gjson.Result) bool {
		text := rawStr(c.Get("delta"), "content")
		fr := c.Get("finish_reason")
		if emptyRaw(text) && fr.Type != gjson.String {
			return true
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, `{"text":`...)
		b = appendRawString(b, text)
		b = append(b, `,"index":`...)
		b = strconv.AppendInt(b, c.Get("index").Int(), 10)
		b = append(b, `,"logprobs":null,"finish_reason":`...)
		if fr.Type == gjson.String {
			if f := completionFinish(fr.Str); f != fr.Str {
				b = errs.AppendJSONString(b, f)
			} else {
				b = appendJSONValue(b, fr)
			}
		} else {
			b = append(b, "null"...)
		}
		b = append(b, '}')
		return true
	})
	b = append(b, ']')
	if u, ok := readOpenAIUsage(gjson.Get(s, "usage")); ok {
		t.usage = u
		b = append(b, `,"usage":{"prompt_tokens":`...)
		b = strconv.AppendInt(b, int64(u.Prompt), 10)
		b = append(b, `,"completion_tokens":`...)
		b = strconv.AppendInt(b, int64(u.Completion), 10)
		b = append(b, `,"total_tokens":`...)
		b = strconv.AppendInt(b, int64(u.Total()), 10)
		b = append(b, '}')
	} else if n == 0 {
		t.buf = b
		return nil
	}
	b = append(b, '}')
	t.buf = b
	return emit(nil, b)
}

func (t *chatToCompletionStream) setPrefix(s string) {
	if t.model == "" {
		t.model = strings.Clone(gjson.Get(s, "model").Str)
	}
	created := gjson.Get(s, "created").Int()
	if created == 0 {
		created = nowUnix()
	}
	p := make([]byte, 0, 128+len(t.model))
	p = append(p, `{"id":`...)
	p = appendJSONValue(p, gjson.Get(s, "id"))
	p = append(p, `,"object":"text_completion","created":`...)
	p = strconv.AppendInt(p, created, 10)
	p = append(p, `,"model":`...)
	p = errs.AppendJSONString(p, t.model)
	t.prefix = append(p, `,"choices":[`...)
}
