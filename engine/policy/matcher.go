package policy

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"sort"
	"strings"
	"unicode/utf8"
)

// matcher is a compiled set of named patterns: the Go side of
// portcullis.match, scan and find. OPA's regex builtins cost patterns ×
// bytes on every call; a matcher first looks for the literals every match
// of a pattern must contain (strings.Index per literal, over the text or
// its ASCII-lower-cased copy) and runs a pattern's regexp only when one of
// its literals is present. When the pattern's matches are short (a
// bounded length L), the regexp runs only on windows of the text around
// the literal's occurrences instead of the whole text. Patterns with no
// usable literal always run over the whole text. A matcher is immutable
// once built and safe for concurrent use.
type matcher struct {
	// key identifies the set in the result cache (unique per engine).
	key   uint64
	rules []mrule
	// atoms are the prefilter literals; folded ones are lower-case and
	// searched in the text lower-cased.
	atoms []atom
	// index finds every atom in one pass over the text.
	index atomIndex
}

// atomIndex looks the atoms up in one pass over a text: a position is
// looked at only when its first two bytes (lower-cased for the folded
// atoms) begin some atom, which in text rarely happens.
type atomIndex struct {
	sens, fold [1 << 16 / 64]uint64 // bit b0<<8|b1: some atom begins with b0 b1
	single     [256]bool            // some one-byte atom is this byte (folded ones: lower-case)
	byPair     map[uint16][]int     // atoms (indexes) by their first two bytes
	bySingle   [256][]int
}

func (x *atomIndex) build(atoms []atom) {
	x.byPair = map[uint16][]int{}
	for i, a := range atoms {
		if len(a.lit) == 1 {
			c := a.lit[0]
			x.single[c] = true
			x.bySingle[c] = append(x.bySingle[c], i)
			if a.fold && 'a' <= c && c <= 'z' {
				// a folded letter matches its upper case too
				x.single[c-'a'+'A'] = true
				x.bySingle[c-'a'+'A'] = append(x.bySingle[c-'a'+'A'], i)
			}
			continue
		}
		k := uint16(a.lit[0])<<8 | uint16(a.lit[1])
		if a.fold {
			x.fold[k/64] |= 1 << (k % 64)
		} else {
			x.sens[k/64] |= 1 << (k % 64)
		}
		x.byPair[k] = append(x.byPair[k], i)
	}
}

// lowerASCII lower-cases an ASCII letter.
func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// hasFoldedRune reports whether s holds one of the two non-ASCII runes
// that fold onto ASCII letters (K KELVIN SIGN, LONG S); the one-pass scan
// leaves such a text to the lower-cased copy.
func hasFoldedRune(s string) bool {
	return strings.Contains(s, "\u212a") || strings.Contains(s, "\u017f")
}

type mrule struct {
	id string
	re *regexp.Regexp
	// atoms index matcher.atoms (nil: no prefilter, always run); maxLen
	// bounds a match's length in bytes (-1: unbounded, no windows).
	atoms  []int
	maxLen int
	// roles are the message roles portcullis.scan applies the rule to.
	roles []string
}

// defaultRoles are the roles a rule applies to when it names none: what
// the caller wrote, not what the model answered.
var defaultRoles = []string{"user", "system", "tool"}

// appliesTo reports whether rule i applies to a message of role.
func (m *matcher) appliesTo(i int, role string) bool {
	for _, r := range m.rules[i].roles {
		if r == role {
			return true
		}
	}
	return false
}

// scans reports whether any rule applies to role.
func (m *matcher) scans(role string) bool {
	for i := range m.rules {
		if m.appliesTo(i, role) {
			return true
		}
	}
	return false
}

type atom struct {
	lit  string
	fold bool
}

// maxAtoms bounds the literals one pattern may contribute; a pattern
// whose smallest required set is larger runs unfiltered.
const maxAtoms = 32

// compileRule compiles one pattern and derives its prefilter literals
// (nil when none can be derived) and the longest match it can produce
// (-1: unbounded).
func compileRule(pattern string) (*regexp.Regexp, []lit, int, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, nil, 0, err
	}
	parsed, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, nil, 0, err
	}
	simple := parsed.Simplify()
	n := maxLen(simple)
	if n > maxWindowLen {
		n = -1
	}
	lits, ok := required(simple)
	if !ok || len(lits) > maxAtoms {
		return re, nil, n, nil
	}
	return re, lits, n, nil
}

// maxWindowLen is the longest bounded match windows are used for.
const maxWindowLen = 512

// maxLen returns the most bytes a match of re can span, -1 if unbounded.
func maxLen(re *syntax.Regexp) int {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpNoMatch, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText,
		syntax.OpEndText, syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return 0
	case syntax.OpLiteral:
		n := 0
		for _, r := range re.Rune {
			if re.Flags&syntax.FoldCase != 0 {
				n += utf8.UTFMax // k and s fold onto 3- and 2-byte runes
			} else {
				n += utf8.RuneLen(r)
			}
		}
		return n
	case syntax.OpCharClass:
		if len(re.Rune) == 0 {
			return 0
		}
		return max(1, utf8.RuneLen(min(re.Rune[len(re.Rune)-1], utf8.MaxRune)))
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return utf8.UTFMax
	case syntax.OpCapture, syntax.OpQuest:
		return maxLen(re.Sub[0])
	case syntax.OpStar, syntax.OpPlus:
		return -1
	case syntax.OpRepeat:
		n := maxLen(re.Sub[0])
		if re.Max < 0 || n < 0 {
			return -1
		}
		return re.Max * n
	case syntax.OpConcat:
		sum := 0
		for _, sub := range re.Sub {
			n := maxLen(sub)
			if n < 0 {
				return -1
			}
			sum += n
		}
		return sum
	case syntax.OpAlternate:
		m := 0
		for _, sub := range re.Sub {
			n := maxLen(sub)
			if n < 0 {
				return -1
			}
			m = max(m, n)
		}
		return m
	}
	return -1
}

// lit is a literal one of which any match must contain.
type lit struct {
	s    string
	fold bool // s is lower-case; match case-insensitively
}

// required returns a set of literals such that every match of re contains
// at least one of them (ok false: no such set is known).
func required(re *syntax.Regexp) ([]lit, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		s := string(re.Rune)
		if !isASCII(s) {
			return nil, false
		}
		if re.Flags&syntax.FoldCase != 0 {
			return []lit{{s: strings.ToLower(s), fold: true}}, true
		}
		return []lit{{s: s}}, true
	case syntax.OpCapture, syntax.OpPlus:
		return required(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return required(re.Sub[0])
		}
		return nil, false
	case syntax.OpConcat:
		var best []lit
		found := false
		for _, sub := range re.Sub {
			l, ok := required(sub)
			if ok && (!found || better(l, best)) {
				best, found = l, true
			}
		}
		return best, found
	case syntax.OpAlternate:
		var all []lit
		for _, sub := range re.Sub {
			l, ok := required(sub)
			if !ok {
				return nil, false
			}
			all = append(all, l...)
		}
		return dedupLits(all), len(all) > 0
	case syntax.OpCharClass:
		// A small class ([@], [Ss], \d) is a set of one-byte literals.
		var out []lit
		for i := 0; i+1 < len(re.Rune); i += 2 {
			lo, hi := re.Rune[i], re.Rune[i+1]
			if hi-lo >= 10 || hi >= utf8.RuneSelf {
				return nil, false
			}
			for r := lo; r <= hi; r++ {
				out = append(out, lit{s: string(r)})
			}
		}
		if len(out) == 0 || len(out) > 10 {
			return nil, false
		}
		return dedupLits(foldPairs(out)), true
	}
	return nil, false
}

// foldPairs turns {"S","s"} into one folded "s".
func foldPairs(ls []lit) []lit {
	for i := range ls {
		low := strings.ToLower(ls[i].s)
		if low == ls[i].s {
			continue
		}
		for j := range ls {
			if ls[j].s == low {
				ls[i] = lit{s: low, fold: true}
				ls[j] = ls[i]
			}
		}
	}
	return ls
}

// better prefers the set whose shortest literal is longer, then the
// smaller set.
func better(a, b []lit) bool {
	ma, mb := minLen(a), minLen(b)
	if ma != mb {
		return ma > mb
	}
	return len(a) < len(b)
}

func minLen(ls []lit) int {
	m := 1 << 30
	for _, l := range ls {
		m = min(m, len(l.s))
	}
	return m
}

func dedupLits(ls []lit) []lit {
	sort.Slice(ls, func(i, j int) bool {
		if ls[i].s != ls[j].s {
			return ls[i].s < ls[j].s
		}
		return !ls[i].fold && ls[j].fold
	})
	out := ls[:0]
	for i, l := range ls {
		if i > 0 && out[len(out)-1] == l {
			continue
		}
		out = append(out, l)
	}
	return out
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// patternSpec is one rule of a set before compilation.
type patternSpec struct {
	id, pattern string
	roles       []string // nil: defaultRoles
}

// newMatcher compiles specs (sorted by id). Errors name the rule.
func newMatcher(key uint64, specs []patternSpec) (*matcher, error) {
	sort.Slice(specs, func(i, j int) bool { return specs[i].id < specs[j].id })
	m := &matcher{key: key, rules: make([]mrule, len(specs))}
	index := map[lit]int{}
	for i, s := range specs {
		re, lits, n, err := compileRule(s.pattern)
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", s.id, err)
		}
		roles := s.roles
		if roles == nil {
			roles = defaultRoles
		}
		r := mrule{id: s.id, re: re, roles: roles, maxLen: n}
		for _, l := range lits {
			ai, ok := index[l]
			if !ok {
				ai = len(m.atoms)
				index[l] = ai
				m.atoms = append(m.atoms, atom{lit: l.s, fold: l.fold})
			}
			r.atoms = append(r.atoms, ai)
		}
		m.rules[i] = r
	}
	m.index.build(m.atoms)
	return m, nil
}

// maxOccurrences bounds the positions kept per literal; a literal seen
// more often sends its rules to a whole-text match.
const maxOccurrences = 16

// scanState is one text's prefilter result.
type scanState struct {
	text, low string
	folded    bool // low is computed
	sameLen   bool // low has text's offsets (no multi-byte fold)
	occ       [][]int
	many      []bool
}

func (m *matcher) scanAtoms(text string) *scanState {
	st := &scanState{text: text, sameLen: true, occ: make([][]int, len(m.atoms)), many: make([]bool, len(m.atoms))}
	if !hasFoldedRune(text) {
		m.scanOnePass(st)
		return st
	}
	for ai, a := range m.atoms {
		hay := text
		if a.fold {
			if !st.folded {
				st.low, st.folded = foldASCII(text), true
				st.sameLen = len(st.low) == len(text)
			}
			hay = st.low
		}
		for from := 0; from < len(hay); {
			j := strings.Index(hay[from:], a.lit)
			if j < 0 {
				break
			}
			if !st.add(ai, from+j) {
				break
			}
			from += j + 1
		}
	}
	return st
}

// add records an occurrence of atom ai at i; false once it has too many.
func (st *scanState) add(ai, i int) bool {
	if len(st.occ[ai]) == maxOccurrences {
		st.many[ai] = true
		return false
	}
	st.occ[ai] = append(st.occ[ai], i)
	return true
}

// scanOnePass finds the atoms' occurrences in one pass (the text has no
// rune that folds onto ASCII, so a folded atom's offsets in the text are
// those in its lower-cased copy).
func (m *matcher) scanOnePass(st *scanState) {
	x, text := &m.index, st.text
	n := len(text)
	for i := 0; i < n; i++ {
		c0 := text[i]
		if x.single[c0] {
			for _, ai := range x.bySingle[c0] {
				if !st.many[ai] {
					st.add(ai, i)
				}
			}
		}
		if i+1 == n {
			break
		}
		c1 := text[i+1]
		ks := uint16(c0)<<8 | uint16(c1)
		kf := uint16(lowerASCII(c0))<<8 | uint16(lowerASCII(c1))
		hitS := x.sens[ks/64]&(1<<(ks%64)) != 0
		hitF := x.fold[kf/64]&(1<<(kf%64)) != 0
		if !hitS && !hitF {
			continue
		}
		try := func(k uint16) {
			for _, ai := range x.byPair[k] {
				a := &m.atoms[ai]
				if st.many[ai] || len(a.lit) > n-i {
					continue
				}
				var ok bool
				if a.fold {
					ok = hasPrefixFold(text[i:], a.lit)
				} else {
					ok = text[i:i+len(a.lit)] == a.lit
				}
				if ok {
					st.add(ai, i)
				}
			}
		}
		if hitS {
			try(ks)
		}
		if hitF && (kf != ks || !hitS) {
			try(kf)
		}
	}
}

// hasPrefixFold reports whether s begins with lit (lower-case ASCII) with
// ASCII letters compared case-insensitively.
func hasPrefixFold(s, lit string) bool {
	for j := 0; j < len(lit); j++ {
		if lowerASCII(s[j]) != lit[j] {
			return false
		}
	}
	return true
}

// matches reports whether rule r matches the text.
func (m *matcher) matches(r *mrule, st *scanState) bool {
	if r.atoms == nil {
		return r.re.MatchString(st.text)
	}
	present, windowed := false, r.maxLen >= 0
	litLen := 0
	for _, ai := range r.atoms {
		if len(st.occ[ai]) > 0 {
			present = true
		}
		windowed = windowed && !st.many[ai] && (!m.atoms[ai].fold || st.sameLen)
		litLen = max(litLen, len(m.atoms[ai].lit))
	}
	switch {
	case !present:
		return false
	case !windowed:
		return r.re.MatchString(st.text)
	}
	var buf [4 * maxOccurrences]int
	pos := buf[:0]
	for _, ai := range r.atoms {
		pos = append(pos, st.occ[ai]...)
	}
	sort.Ints(pos)
	return windowMatch(r.re, st.text, pos, litLen, r.maxLen)
}

// windowMatch runs re on the text around each literal position. Any match
// contains one of the positions' literals and is at most l bytes long, so
// it lies in [p-l, p+len+l]. The window reaches l bytes further on each
// side: a match that touches a window's edge inside the text (where \b or
// ^ see the cut, not the text) is ignored, and it cannot hide one that
// contains p, being too short to reach it. Every other match is a match of
// the whole text.
func windowMatch(re *regexp.Regexp, text string, pos []int, litLen, l int) bool {
	n := len(text)
	for i := 0; i < len(pos); {
		a, b := max(0, pos[i]-2*l), min(n, pos[i]+litLen+2*l)
		i++
		for i < len(pos) && pos[i]-2*l <= b {
			b = min(n, pos[i]+litLen+2*l)
			i++
		}
		w := text[a:b]
		if !re.MatchString(w) {
			continue
		}
		for _, loc := range re.FindAllStringIndex(w, -1) {
			if (loc[0] > 0 || a == 0) && (loc[1] < len(w) || b == n) {
				return true
			}
		}
	}
	return false
}

// match returns the indexes of the rules that match text, in id order.
func (m *matcher) match(text string) []int {
	st := m.scanAtoms(text)
	var out []int
	for i := range m.rules {
		if m.matches(&m.rules[i], st) {
			out = append(out, i)
		}
	}
	return out
}

// span is one match of rule (an index into rules) at text[start:end].
type span struct {
	rule, start, end int
}

// maxSpansPerRule bounds what find reports for one rule and text.
const maxSpansPerRule = 32

// find returns every match of every rule, in rule then position order.
// The prefilter decides which rules run; those that do run over the whole
// text, so no match is missed for redaction.
func (m *matcher) find(text string) []span {
	st := m.scanAtoms(text)
	var out []span
	for i := range m.rules {
		r := &m.rules[i]
		if r.atoms != nil {
			present := false
			for _, ai := range r.atoms {
				present = present || len(st.occ[ai]) > 0
			}
			if !present {
				continue
			}
		}
		for _, loc := range r.re.FindAllStringIndex(text, maxSpansPerRule) {
			if loc[1] > loc[0] {
				out = append(out, span{rule: i, start: loc[0], end: loc[1]})
			}
		}
	}
	return out
}

// foldASCII lower-cases ASCII letters and maps the two non-ASCII runes
// that case-fold onto ASCII letters (U+212A KELVIN SIGN → k, U+017F LONG
// S → s), so a folded literal found by (?i) is never missed. The copy is
// only for the prefilter; offsets into it mean nothing.
func foldASCII(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case c == 0xE2 && i+2 < len(s) && s[i+1] == 0x84 && s[i+2] == 0xAA:
			c, i = 'k', i+2
		case c == 0xC5 && i+1 < len(s) && s[i+1] == 0xBF:
			c, i = 's', i+1
		}
		b = append(b, c)
	}
	return string(b)
}

// keywordPattern is the pattern of a keyword list: any of the words,
// case-insensitively, on word boundaries.
func keywordPattern(words []string) string {
	var b strings.Builder
	b.WriteString(`(?i)\b(?:`)
	for i, w := range words {
		if i > 0 {
			b.WriteByte('|')
		}
		b.WriteString(regexp.QuoteMeta(w))
	}
	b.WriteString(`)\b`)
	return b.String()
}
