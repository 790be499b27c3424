package admin

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/store"
)

// memberView is a team member as LiteLLM shows it.
type memberView struct {
	Role      string  `json:"role"`
	UserID    *string `json:"user_id"`
	UserEmail *string `json:"user_email"`
}

// teamView is a team as LiteLLM shows it (LiteLLM_TeamTable).
type teamView struct {
	TeamID    string   `json:"team_id"`
	TeamAlias *string  `json:"team_alias"`
	Models    []string `json:"models"`
	Spend     float64  `json:"spend"`
	limitsView
	MembersWithRoles []memberView    `json:"members_with_roles"`
	Metadata         json.RawMessage `json:"metadata"`
	Blocked          bool            `json:"blocked"`
	CreatedAt        *string         `json:"created_at"`
	UpdatedAt        *string         `json:"updated_at"`
}

func (a *API) viewTeam(t *store.Team) teamView {
	spend := t.Spend
	if a.km != nil {
		if acct, ok := a.km.TeamAccount(t.TeamID); ok {
			spend = acct.Spent()
		}
	}
	v := teamView{
		TeamID: t.TeamID, TeamAlias: strPtr(t.TeamAlias), Models: listOrEmpty(t.Models), Spend: toUSD(spend),
		limitsView: viewLimits(&t.Limits), MembersWithRoles: []memberView{},
		Metadata: metadataOut(t.Metadata, &t.Limits), Blocked: t.Blocked,
		CreatedAt: timeOrNil(t.CreatedAt), UpdatedAt: timeOrNil(t.UpdatedAt),
	}
	for _, m := range t.Members {
		v.MembersWithRoles = append(v.MembersWithRoles, memberView{Role: m.Role, UserID: strPtr(m.UserID), UserEmail: strPtr(m.UserEmail)})
	}
	return v
}

// teamPatch is the fields of /team/new and /team/update.
type teamPatch struct {
	alias   opt[string]
	models  opt[[]string]
	blocked opt[bool]
	limits  limitsPatch
	meta    metaPatch
}

func readTeamPatch(r *reader) *teamPatch {
	return &teamPatch{alias: r.str("team_alias"), models: r.strs("models"), blocked: r.boolean("blocked"),
		limits: readLimits(r, false), meta: readMeta(r)}
}

func (p *teamPatch) apply(t *store.Team, now time.Time) *errs.Error {
	if p.alias.Set {
		t.TeamAlias = strings.TrimSpace(p.alias.V)
	}
	if p.models.Set {
		t.Models = nonEmptyList(p.models.V)
	}
	if p.blocked.Set {
		t.Blocked = p.blocked.V
	}
	p.limits.apply(&t.Limits, now)
	md, e := p.meta.apply(t.Metadata, nil, nil)
	if e != nil {
		return e
	}
	t.Metadata = md
	return nil
}

type memberIn struct {
	Role      string  `json:"role"`
	UserID    *string `json:"user_id"`
	UserEmail *string `json:"user_email"`
}

// readMembers reads a list of members, or (one=true) also a single one.
func readMembers(r *reader, name string, one bool) ([]store.Member, bool) {
	raw, ok := r.f[name]
	if !ok || isNull(raw) {
		return nil, ok
	}
	var list []memberIn
	if err := json.Unmarshal(raw, &list); err != nil {
		var m memberIn
		if !one || json.Unmarshal(raw, &m) != nil {
			what := "a list of {role, user_id, user_email}"
			if one {
				what = "a member {role, user_id, user_email} or a list of them"
			}
			r.fail(name, name+" must be "+what)
			return nil, true
		}
		list = []memberIn{m}
	}
	out := make([]store.Member, 0, len(list))
	for _, m := range list {
		if m.Role == "" {
			m.Role = "user"
		}
		if m.Role != "admin" && m.Role != "user" {
			r.fail(name, "a member's role must be \"admin\" or \"user\", not "+jsonList([]string{m.Role}))
			return nil, true
		}
		var id, email string
		if m.UserID != nil {
			id = *m.UserID
		}
		if m.UserEmail != nil {
			email = *m.UserEmail
		}
		if id == "" && email == "" {
			r.fail(name, "a member needs a user_id or a user_email")
			return nil, true
		}
		out = append(out, store.Member{Role: m.Role, UserID: id, UserEmail: email})
	}
	return out, true
}

// memberPlan is what adding one member does to the users table.
type memberPlan struct {
	user   *store.User
	create bool
}

// planMembers gives every member a user id (a known user's, found by
// email, or a new one) and says which users to create; nothing is written.
// LiteLLM creates the users it does not know.
func (a *API) planMembers(ctx context.Context, ms []store.Member, now time.Time) ([]memberPlan, *errs.Error) {
	var byEmail map[string]*store.User
	var plans []memberPlan
	for i := range ms {
		m := &ms[i]
		if m.UserID == "" {
			if byEmail == nil {
				us, err := a.st.ListUsers(ctx)
				if err != nil {
					return nil, storeError(err, "user", "")
				}
				byEmail = map[string]*store.User{}
				for _, u := range us {
					if u.UserEmail != "" {
						byEmail[strings.ToLower(u.UserEmail)] = u
					}
				}
			}
			if u, ok := byEmail[strings.ToLower(m.UserEmail)]; ok {
				m.UserID = u.UserID
				plans = append(plans, memberPlan{user: u})
				continue
			}
			m.UserID = newID()
			u := &store.User{UserID: m.UserID, UserEmail: m.UserEmail, UserRole: "internal_user", CreatedAt: now, UpdatedAt: now}
			byEmail[strings.ToLower(m.UserEmail)] = u
			plans = append(plans, memberPlan{user: u, create: true})
			continue
		}
		u, err := a.st.GetUser(ctx, m.UserID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			plans = append(plans, memberPlan{user: &store.User{UserID: m.UserID, UserEmail: m.UserEmail, UserRole: "internal_user", CreatedAt: now, UpdatedAt: now}, create: true})
		case err != nil:
			return nil, storeError(err, "user", m.UserID)
		default:
			plans = append(plans, memberPlan{user: u})
		}
	}
	return plans, nil
}

// commitMembers creates the planned users and adds teamID to every
// member's teams, then tells the Manager.
func (a *API) commitMembers(ctx context.Context, plans []memberPlan, teamID string, now time.Time) ([]*store.User, *errs.Error) {
	var out []*store.User
	done := map[string]bool{}
	for _, p := range plans {
		if done[p.user.UserID] {
			continue
		}
		done[p.user.UserID] = true
		u := *p.user
		u.TeamIDs = append([]string(nil), p.user.TeamIDs...)
		if !slices.Contains(u.TeamIDs, teamID) {
			u.TeamIDs = append(u.TeamIDs, teamID)
		} else if !p.create {
			out = append(out, &u)
			continue
		}
		if p.create {
			if err := a.st.CreateUser(ctx, &u); err != nil {
				return out, storeError(err, "user", u.UserID)
			}
			a.record("user.new", "user", u.UserID, nil, a.viewUser(&u))
		} else {
			u.UpdatedAt = now
			if err := a.st.UpdateUser(ctx, &u); err != nil {
				return out, storeError(err, "user", u.UserID)
			}
			a.record("user.update", "user", u.UserID, a.viewUser(p.user), a.viewUser(&u))
		}
		if a.km != nil {
			a.km.UserChanged(&u)
		}
		out = append(out, &u)
	}
	return out, nil
}

// getTeam reads a team named by param; 404 when unknown.
func (a *API) getTeam(ctx context.Context, param, id string) (*store.Team, *errs.Error) {
	if id == "" {
		return nil, errs.BadRequest(errs.CodeInvalidRequest, param, "No team id passed in: "+param+" is required")
	}
	t, err := a.st.GetTeam(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		e := errs.New(404, errs.CodeNotFound, "Team not found, passed team_id="+id)
		e.Param = param
		return nil, e
	}
	if err != nil {
		return nil, storeError(err, "team", id)
	}
	return t, nil
}

func copyTeam(t *store.Team) *store.Team {
	c := *t
	c.Models = append([]string(nil), t.Models...)
	c.Members = append([]store.Member(nil), t.Members...)
	return &c
}

// POST /team/new
func (a *API) teamNew(ctx context.Context, rq *request) (any, *errs.Error) {
	r := rq.body
	id := r.str("team_id")
	p := readTeamPatch(r)
	members, _ := readMembers(r, "members_with_roles", false)
	if r.err != nil {
		return nil, r.err
	}
	now := a.now()
	t := &store.Team{TeamID: strings.TrimSpace(id.V), CreatedAt: now, UpdatedAt: now}
	if t.TeamID == "" {
		t.TeamID = newID()
	}
	if e := p.apply(t, now); e != nil {
		return nil, e
	}
	plans, e := a.planMembers(ctx, members, now)
	if e != nil {
		return nil, e
	}
	t.Members = dedupeMembers(members)
	if err := a.st.CreateTeam(ctx, t); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, errs.BadRequest(codeExists, "team_id", "Team id = "+t.TeamID+" already exists. Please use a different team id.")
		}
		return nil, storeError(err, "team", t.TeamID)
	}
	if a.km != nil {
		a.km.TeamChanged(t)
	}
	a.record("team.new", "team", t.TeamID, nil, a.viewTeam(t))
	if _, e := a.commitMembers(ctx, plans, t.TeamID, now); e != nil {
		return nil, e
	}
	return a.viewTeam(t), nil
}

func dedupeMembers(ms []store.Member) []store.Member {
	var out []store.Member
	seen := map[string]bool{}
	for _, m := range ms {
		if seen[m.UserID] {
			continue
		}
		seen[m.UserID] = true
		out = append(out, m)
	}
	return out
}

// POST /team/update
func (a *API) teamUpdate(ctx context.Context, rq *request) (any, *errs.Error) {
	r := rq.body
	id := r.str("team_id")
	p := readTeamPatch(r)
	if r.err != nil {
		return nil, r.err
	}
	old, e := a.getTeam(ctx, "team_id", id.V)
	if e != nil {
		return nil, e
	}
	t := copyTeam(old)
	now := a.now()
	if e := p.apply(t, now); e != nil {
		return nil, e
	}
	t.UpdatedAt = now
	if err := a.st.UpdateTeam(ctx, t); err != nil {
		return nil, storeError(err, "team", t.TeamID)
	}
	if a.km != nil {
		a.km.TeamChanged(t)
	}
	a.record("team.update", "team", t.TeamID, a.viewTeam(old), a.viewTeam(t))
	return map[string]any{"team_id": t.TeamID, "data": a.viewTeam(t)}, nil
}

// POST /team/delete: {"team_ids": [...]}. As in LiteLLM, the teams' keys
// are deleted too and the teams leave their members' team lists.
func (a *API) teamDelete(ctx context.Context, rq *request) (any, *errs.Error) {
	r := rq.body
	ids := r.strs("team_ids")
	if r.err != nil {
		return nil, r.err
	}
	if len(ids.V) == 0 {
		return nil, errs.BadRequest(errs.CodeInvalidRequest, "team_ids", "No team id passed in: team_ids is required")
	}
	var teams []*store.Team
	for _, id := range ids.V {
		t, e := a.getTeam(ctx, "team_ids", id)
		if e != nil {
			return nil, e
		}
		teams = append(teams, t)
	}
	now := a.now()
	for _, t := range teams {
		var teamKeys []*store.Key
		if err := a.eachKey(ctx, t.TeamID, "", func(k *store.Key) { teamKeys = append(teamKeys, k) }); err != nil {
			return nil, storeError(err, "key", "")
		}
		if err := a.st.DeleteTeam(ctx, t.TeamID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, storeError(err, "team", t.TeamID)
		}
		if a.km != nil {
			a.km.TeamDeleted(t.TeamID)
		}
		a.record("team.delete", "team", t.TeamID, a.viewTeam(t), nil)
		for _, k := range teamKeys {
			if err := a.st.DeleteKey(ctx, k.Hash); err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, storeError(err, "key", k.Prefix)
			}
			if a.km != nil {
				a.km.KeyDeleted(k.Hash)
			}
			a.record("key.delete", "key", k.Hash, a.auditView(k), nil)
		}
		for _, m := range t.Members {
			if e := a.leaveTeam(ctx, m.UserID, t.TeamID, now); e != nil {
				return nil, e
			}
		}
	}
	return map[string]any{"deleted_teams": ids.V}, nil
}

// leaveTeam removes teamID from a user's teams.
func (a *API) leaveTeam(ctx context.Context, userID, teamID string, now time.Time) *errs.Error {
	if userID == "" {
		return nil
	}
	old, err := a.st.GetUser(ctx, userID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return storeError(err, "user", userID)
	}
	if !slices.Contains(old.TeamIDs, teamID) {
		return nil
	}
	u := *old
	u.TeamIDs = slices.DeleteFunc(append([]string(nil), old.TeamIDs...), func(s string) bool { return s == teamID })
	u.UpdatedAt = now
	if err := a.st.UpdateUser(ctx, &u); err != nil {
		return storeError(err, "user", userID)
	}
	if a.km != nil {
		a.km.UserChanged(&u)
	}
	a.record("user.update", "user", u.UserID, a.viewUser(old), a.viewUser(&u))
	return nil
}

// POST /team/member_add: {"team_id", "member": {role, user_id, user_email}
// or a list of them}. Unknown users are created, as LiteLLM does.
func (a *API) teamMemberAdd(ctx context.Context, rq *request) (any, *errs.Error) {
	r := rq.body
	id := r.str("team_id")
	members, present := readMembers(r, "member", true)
	inTeam := r.usd("max_budget_in_team")
	if r.err != nil {
		return nil, r.err
	}
	if inTeam.given() {
		return nil, errs.BadRequest(errs.CodeUnsupported, "max_budget_in_team", "Per-member team budgets are not supported; set max_budget on the user or on the member's keys")
	}
	if !present || len(members) == 0 {
		return nil, errs.BadRequest(errs.CodeInvalidRequest, "member", "No member/members passed in")
	}
	old, e := a.getTeam(ctx, "team_id", id.V)
	if e != nil {
		return nil, e
	}
	for _, m := range members {
		for _, have := range old.Members {
			if (m.UserID != "" && m.UserID == have.UserID) || (m.UserID == "" && m.UserEmail != "" && strings.EqualFold(m.UserEmail, have.UserEmail)) {
				who := m.UserID
				if who == "" {
					who = m.UserEmail
				}
				e := errs.BadRequest(codeExists, "member", "User="+who+" already in team "+old.TeamID)
				return nil, e
			}
		}
	}
	now := a.now()
	plans, e := a.planMembers(ctx, members, now)
	if e != nil {
		return nil, e
	}
	t := copyTeam(old)
	t.Members = dedupeMembers(append(t.Members, members...))
	t.UpdatedAt = now
	if err := a.st.UpdateTeam(ctx, t); err != nil {
		return nil, storeError(err, "team", t.TeamID)
	}
	if a.km != nil {
		a.km.TeamChanged(t)
	}
	a.record("team.member_add", "team", t.TeamID, a.viewTeam(old), a.viewTeam(t))
	users, e := a.commitMembers(ctx, plans, t.TeamID, now)
	if e != nil {
		return nil, e
	}
	uv := make([]userView, 0, len(users))
	for _, u := range users {
		uv = append(uv, a.viewUser(u))
	}
	return struct {
		teamView
		UpdatedUsers       []userView `json:"updated_users"`
		UpdatedMemberships []any      `json:"updated_team_memberships"`
	}{a.viewTeam(t), uv, []any{}}, nil
}

// POST /team/block
func (a *API) teamBlock(ctx context.Context, rq *request) (any, *errs.Error) {
	return a.setTeamBlocked(ctx, rq, true)
}

// POST /team/unblock
func (a *API) teamUnblock(ctx context.Context, rq *request) (any, *errs.Error) {
	return a.setTeamBlocked(ctx, rq, false)
}

func (a *API) setTeamBlocked(ctx context.Context, rq *request, blocked bool) (any, *errs.Error) {
	r := rq.body
	id := r.str("team_id")
	if r.err != nil {
		return nil, r.err
	}
	old, e := a.getTeam(ctx, "team_id", id.V)
	if e != nil {
		return nil, e
	}
	t := copyTeam(old)
	t.Blocked = blocked
	t.UpdatedAt = a.now()
	if err := a.st.UpdateTeam(ctx, t); err != nil {
		return nil, storeError(err, "team", t.TeamID)
	}
	if a.km != nil {
		a.km.TeamChanged(t)
	}
	action := "team.unblock"
	if blocked {
		action = "team.block"
	}
	a.record(action, "team", t.TeamID, a.viewTeam(old), a.viewTeam(t))
	return a.viewTeam(t), nil
}

// teamKeys lists a team's keys as LiteLLM's team endpoints show them.
func (a *API) teamKeys(ctx context.Context, teamID string) ([]keyView, *errs.Error) {
	out := []keyView{}
	if err := a.eachKey(ctx, teamID, "", func(k *store.Key) { out = append(out, a.viewKey(k, true)) }); err != nil {
		return nil, storeError(err, "key", "")
	}
	return out, nil
}

// GET /team/info?team_id=
func (a *API) teamInfo(ctx context.Context, rq *request) (any, *errs.Error) {
	t, e := a.getTeam(ctx, "team_id", rq.q("team_id"))
	if e != nil {
		return nil, e
	}
	ks, e := a.teamKeys(ctx, t.TeamID)
	if e != nil {
		return nil, e
	}
	return map[string]any{"team_id": t.TeamID, "team_info": a.viewTeam(t), "keys": ks, "team_memberships": []any{}}, nil
}

// GET /team/list?user_id=: every team (or the user's), by alias, each with
// its keys.
func (a *API) teamList(ctx context.Context, rq *request) (any, *errs.Error) {
	userID := rq.q("user_id")
	ts, err := a.st.ListTeams(ctx)
	if err != nil {
		return nil, storeError(err, "team", "")
	}
	type listed struct {
		teamView
		Keys        []keyView `json:"keys"`
		Memberships []any     `json:"team_memberships"`
	}
	out := []listed{}
	for _, t := range ts {
		if userID != "" && !slices.ContainsFunc(t.Members, func(m store.Member) bool { return m.UserID == userID }) {
			continue
		}
		ks, e := a.teamKeys(ctx, t.TeamID)
		if e != nil {
			return nil, e
		}
		out = append(out, listed{a.viewTeam(t), ks, []any{}})
	}
	sort.SliceStable(out, func(i, j int) bool {
		return deref(out[i].TeamAlias) < deref(out[j].TeamAlias)
	})
	return out, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
