package keys

import "strings"

// Models is a compiled allow-list of model names: exact names, wildcard
// prefixes ("openai/*", "gpt-4o*"), or everything ("*", an empty list,
// LiteLLM's "all-proxy-models").
type Models struct {
	all      bool
	exact    map[string]struct{}
	prefixes []string
	// teamModels is LiteLLM's "all-team-models": whatever the team allows.
	teamModels bool
}

// CompileModels compiles an allow-list.
func CompileModels(list []string) Models {
	m := Models{}
	if len(list) == 0 {
		m.all = true
		return m
	}
	for _, s := range list {
		switch {
		case s == "*" || s == "all-proxy-models":
			m.all = true
		case s == "all-team-models":
			m.teamModels = true
		case strings.HasSuffix(s, "*"):
			m.prefixes = append(m.prefixes, strings.TrimSuffix(s, "*"))
		default:
			if m.exact == nil {
				m.exact = map[string]struct{}{}
			}
			m.exact[s] = struct{}{}
		}
	}
	return m
}

// Allows reports whether model is allowed. deferToTeam is used for
// "all-team-models": the team's list decides.
func (m *Models) Allows(model string, team *Models) bool {
	if m.all {
		return true
	}
	if _, ok := m.exact[model]; ok {
		return true
	}
	for _, p := range m.prefixes {
		if strings.HasPrefix(model, p) {
			return true
		}
	}
	if m.teamModels && team != nil {
		return team.Allows(model, nil)
	}
	return false
}
