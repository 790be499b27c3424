package anthropic

import "testing"

func TestMessagesURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://api.anthropic.com":              "https://api.anthropic.com/v1/messages",
		"http://127.0.0.1:9000/":                 "http://127.0.0.1:9000/v1/messages",
		"http://proxy/anthropic/v1":              "http://proxy/anthropic/v1/messages",
		"https://api.anthropic.com/v1/messages":  "https://api.anthropic.com/v1/messages",
		"https://api.anthropic.com/v1/messages/": "https://api.anthropic.com/v1/messages",
	} {
		if got := MessagesURL(in); got != want {
			t.Errorf("MessagesURL(%q) = %q, want %q", in, got, want)
		}
	}
}
