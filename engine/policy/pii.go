package policy

import (
	"regexp"
	"strings"
)

// Finding is one piece of personal data or one secret found in a text by
// portcullis.pii.
type Finding struct {
	// Type is email, phone, card or secret.
	Type string
	// Kind refines Type: the secret's issuer (openai, anthropic,
	// aws_access_key, github, slack, google_api_key, stripe, private_key,
	// jwt); Type again otherwise.
	Kind       string
	Start, End int // byte offsets into the text
}

// secretPatterns are API-key-shaped strings. The ids are the Kinds; the
// literal each starts with is the matcher's prefilter, so a text without
// any of them costs one strings.Index per literal.
var secretPatterns = []patternSpec{
	{id: "anthropic", pattern: `sk-ant-[A-Za-z0-9_\-]{20,}`},
	{id: "openai", pattern: `sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}`},
	{id: "aws_access_key", pattern: `\b(?:AKIA|ASIA)[0-9A-Z]{16}\b`},
	{id: "github", pattern: `\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})`},
	{id: "slack", pattern: `xox[abposr]-[A-Za-z0-9\-]{10,}`},
	{id: "google_api_key", pattern: `AIza[0-9A-Za-z_\-]{35}`},
	{id: "stripe", pattern: `\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}`},
	{id: "private_key", pattern: `-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----`},
	{id: "jwt", pattern: `\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}`},
}

var emailRE = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}`)

// piiDetector finds e-mail addresses, phone and card numbers (Luhn
// checked) and secrets. It is built once per engine.
type piiDetector struct {
	secrets *matcher
}

func newPIIDetector() *piiDetector {
	m, err := newMatcher(0, append([]patternSpec(nil), secretPatterns...))
	if err != nil {
		panic(err) // the patterns are constants
	}
	return &piiDetector{secrets: m}
}

// scan returns the findings in text, secrets first, then e-mails, then
// numbers, each in position order. A secret's span is not reported again
// as a phone or card number.
func (d *piiDetector) scan(text string) []Finding {
	var out []Finding
	// The anthropic pattern is a prefix of the openai one: report the
	// more specific kind once.
	for _, s := range d.secrets.find(text) {
		if overlaps(out, s.start, s.end) {
			continue
		}
		out = append(out, Finding{Type: "secret", Kind: d.secrets.rules[s.rule].id, Start: s.start, End: s.end})
	}
	if strings.IndexByte(text, '@') >= 0 {
		for _, loc := range emailRE.FindAllStringIndex(text, maxSpansPerRule) {
			if !overlaps(out, loc[0], loc[1]) {
				out = append(out, Finding{Type: "email", Kind: "email", Start: loc[0], End: loc[1]})
			}
		}
	}
	return scanNumbers(text, out)
}

func overlaps(fs []Finding, start, end int) bool {
	for _, f := range fs {
		if start < f.End && f.Start < end {
			return true
		}
	}
	return false
}

// scanNumbers finds runs of digits with separators (space, '-',
// parentheses) bounded by non-alphanumerics: 13–19 digits passing the
// Luhn check are card numbers (separators: spaces or dashes only); 10–15
// digits with a leading '+' or at least one separator are phone numbers
// (a bare run of digits is more often an id or a timestamp; so is a run
// of 8–9 digits unless it starts with '+').
func scanNumbers(text string, out []Finding) []Finding {
	n := len(text)
	for i := 0; i < n; i++ {
		c := text[i]
		plus := c == '+' || c == '('
		if !isDigit(c) && !(plus && i+1 < n && isDigit(text[i+1])) {
			continue
		}
		if i > 0 && isAlnum(text[i-1]) {
			// Inside a word: skip to its end.
			for i < n && isAlnum(text[i]) {
				i++
			}
			continue
		}
		start := i
		digits, seps, onlySpaceDash := 0, 0, true
		j := i
		if plus {
			j++
			seps++
			if c == '(' {
				onlySpaceDash = false
			}
		}
		lastDigit := j
		for j < n {
			ch := text[j]
			if isDigit(ch) {
				digits++
				lastDigit = j + 1
				j++
				continue
			}
			if (ch == ' ' || ch == '-' || ch == '(' || ch == ')') && j+1 < n &&
				(isDigit(text[j+1]) || (ch == ')' && text[j+1] == ' ') || (ch == ' ' && text[j+1] == '(')) {
				if ch != ' ' && ch != '-' {
					onlySpaceDash = false
				}
				seps++
				j++
				continue
			}
			break
		}
		end := lastDigit
		i = max(end-1, i)
		if end < n && isAlnum(text[end]) {
			continue
		}
		if overlaps(out, start, end) || looksLikeDate(text[start:end]) {
			continue
		}
		switch {
		case digits >= 13 && digits <= 19 && onlySpaceDash && c != '+' && c != '(' && luhn(text[start:end]):
			out = append(out, Finding{Type: "card", Kind: "card", Start: start, End: end})
		case digits >= 10 && digits <= 15 && (c == '+' || seps > 0):
			out = append(out, Finding{Type: "phone", Kind: "phone", Start: start, End: end})
		case digits >= 8 && digits <= 9 && c == '+':
			out = append(out, Finding{Type: "phone", Kind: "phone", Start: start, End: end})
		}
	}
	return out
}

// looksLikeDate reports a run starting like a date, 19xx- or 20xx-.
func looksLikeDate(s string) bool {
	return len(s) > 4 && (s[:2] == "19" || s[:2] == "20") && isDigit(s[2]) && isDigit(s[3]) && s[4] == '-'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isAlnum(c byte) bool {
	return isDigit(c) || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || c == '_'
}

// luhn reports whether s, ignoring spaces and dashes, is at least two
// digits that pass the Luhn check. Any other character makes it false.
func luhn(s string) bool {
	sum, n := 0, 0
	for i := len(s) - 1; i >= 0; i-- {
		c := s[i]
		if c == ' ' || c == '-' {
			continue
		}
		if !isDigit(c) {
			return false
		}
		d := int(c - '0')
		if n%2 == 1 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		n++
	}
	return n >= 2 && sum%10 == 0
}
