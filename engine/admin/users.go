package admin

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/store"
)

// userRoles are LiteLLM's user roles.
var userRoles = []string{"proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"}

// userView is a user as LiteLLM shows it (LiteLLM_UserTable).
type userView struct {
	UserID    string   `json:"user_id"`
	UserEmail *string  `json:"user_email"`
	UserRole  *string  `json:"user_role"`
	Models    []string `json:"models"`
	Spend     float64  `json:"spend"`
	limitsView
	Teams     []string        `json:"teams"`
	Metadata  json.RawMessage `json:"metadata"`
	CreatedAt *string         `json:"created_at"`
	UpdatedAt *string         `json:"updated_at"`
}

func (a *API) viewUser(u *store.User) userView {
	spend := u.Spend
	if a.km != nil {
		if acct, ok := a.km.UserAccount(u.UserID); ok {
			spend = acct.Spent()
		}
	}
	return userView{
		UserID: u.UserID, UserEmail: strPtr(u.UserEmail), UserRole: strPtr(u.UserRole), Models: listOrEmpty(u.Models),
		Spend: toUSD(spend), limitsView: viewLimits(&u.Limits), Teams: listOrEmpty(u.TeamIDs),
		Metadata: metadataOut(u.Metadata, &u.Limits), CreatedAt: timeOrNil(u.CreatedAt), UpdatedAt: timeOrNil(u.UpdatedAt),
	}
}

// userPatch is the fields of /user/new and /user/update.
type userPatch struct {
	email, role opt[string]
	models      opt[[]string]
	limits      limitsPatch
	meta        metaPatch
}

func readUserPatch(r *reader) *userPatch {
	p := &userPatch{email: r.str("user_email"), role: r.str("user_role"), models: r.strs("models"),
		limits: readLimits(r, false), meta: readMeta(r)}
	if p.role.given() && !slices.Contains(userRoles, p.role.V) {
		r.fail("user_role", "user_role must be one of "+jsonList(userRoles))
	}
	return p
}

func (p *userPatch) apply(u *store.User, now time.Time) *errs.Error {
	if p.email.Set {
		u.UserEmail = strings.TrimSpace(p.email.V)
	}
	if p.role.Set {
		u.UserRole = p.role.V
	}
	if p.models.Set {
		u.Models = nonEmptyList(p.models.V)
	}
	p.limits.apply(&u.Limits, now)
	md, e := p.meta.apply(u.Metadata, nil, nil)
	if e != nil {
		return e
	}
	u.Metadata = md
	return nil
}

type teamIn struct {
	TeamID          string   `json:"team_id"`
	UserRole        string   `json:"user_role"`
	MaxBudgetInTeam *float64 `json:"max_budget_in_team"`
}

// readTeams reads /user/new's teams: ["team-id", ...] or
// [{"team_id", "user_role", "max_budget_in_team"}, ...].
func readTeams(r *reader) []teamIn {
	raw, ok := r.f["teams"]
	if !ok || isNull(raw) {
		return nil
	}
	var ids []string
	if json.Unmarshal(raw, &ids) == nil {
		out := make([]teamIn, 0, len(ids))
		for _, id := range ids {
			out = append(out, teamIn{TeamID: id, UserRole: "user"})
		}
		return out
	}
	var list []teamIn
	if err := json.Unmarshal(raw, &list); err != nil {
		r.fail("teams", "teams must be a list of team ids or of {team_id, user_role}")
		return nil
	}
	for i := range list {
		if list[i].TeamID == "" {
			r.fail("teams", "every team needs a team_id")
			return nil
		}
		if list[i].UserRole == "" {
			list[i].UserRole = "user"
		}
		if list[i].UserRole != "user" && list[i].UserRole != "admin" {
			r.fail("teams", "a team user_role must be \"admin\" or \"user\"")
			return nil
		}
		if list[i].MaxBudgetInTeam != nil {
			r.fail("teams", "max_budget_in_team is not supported; set max_budget on the user or on the member's keys")
			return nil
		}
	}
	return list
}

// newUserResponse is LiteLLM's NewUserResponse: the user and the key made
// for it ("key" is "" when auto_create_key is false).
type newUserResponse struct {
	Key      string  `json:"key"`
	KeyName  *string `json:"key_name"`
	Token    *string `json:"token"`
	Expires  *string `json:"expires"`
	KeyAlias *string `json:"key_alias"`
	TeamID   *string `json:"team_id"`
	userView
}

// POST /user/new
func (a *API) userNew(ctx context.Context, rq *request) (any, *errs.Error) {
	r := rq.body
	id := r.str("user_id")
	p := readUserPatch(r)
	teams := readTeams(r)
	autoKey := r.boolean("auto_create_key")
	kp := &keyPatch{alias: r.str("key_alias"), duration: readDuration(r), teamID: r.str("team_id")}
	if r.err != nil {
		return nil, r.err
	}
	now := a.now()
	u := &store.User{UserID: strings.TrimSpace(id.V), UserRole: "internal_user", CreatedAt: now, UpdatedAt: now}
	if u.UserID == "" {
		u.UserID = newID()
	}
	if e := p.apply(u, now); e != nil {
		return nil, e
	}
	type join struct {
		team *store.Team
		role string
	}
	var joins []join
	for _, ti := range teams {
		t, e := a.getTeam(ctx, "teams", ti.TeamID)
		if e != nil {
			return nil, e
		}
		if !slices.Contains(u.TeamIDs, t.TeamID) {
			u.TeamIDs = append(u.TeamIDs, t.TeamID)
			joins = append(joins, join{t, ti.UserRole})
		}
	}
	withKey := !autoKey.Set || autoKey.Null || autoKey.V
	keyDefaults := func(k *store.Key) {
		k.UserID = u.UserID
		k.Models = append([]string(nil), u.Models...)
	}
	if withKey {
		// Check the key before anything is written: its team, models and alias.
		scratch := &store.Key{}
		keyDefaults(scratch)
		if e := a.applyKey(ctx, scratch, kp, now, true); e != nil {
			return nil, e
		}
	}
	if err := a.st.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, errs.BadRequest(codeExists, "user_id", "User with id "+u.UserID+" already exists")
		}
		return nil, storeError(err, "user", u.UserID)
	}
	if a.km != nil {
		a.km.UserChanged(u)
	}
	a.record("user.new", "user", u.UserID, nil, a.viewUser(u))
	for _, j := range joins {
		if e := a.addMember(ctx, j.team, store.Member{Role: j.role, UserID: u.UserID, UserEmail: u.UserEmail}, now); e != nil {
			return nil, e
		}
	}
	resp := &newUserResponse{userView: a.viewUser(u)}
	if withKey {
		k, secret, e := a.newKey(ctx, opt[string]{}, kp, keyDefaults)
		if e != nil {
			return nil, e
		}
		name := keyName(k.Prefix)
		resp.Key, resp.KeyName, resp.Token = secret, &name, &k.Hash
		resp.Expires, resp.KeyAlias, resp.TeamID = timePtr(k.ExpiresAt), strPtr(k.KeyAlias), strPtr(k.TeamID)
	}
	return resp, nil
}

// addMember adds m to team t unless its user is a member already.
func (a *API) addMember(ctx context.Context, old *store.Team, m store.Member, now time.Time) *errs.Error {
	if slices.ContainsFunc(old.Members, func(have store.Member) bool { return have.UserID == m.UserID }) {
		return nil
	}
	t := copyTeam(old)
	t.Members = append(t.Members, m)
	t.UpdatedAt = now
	if err := a.st.UpdateTeam(ctx, t); err != nil {
		return storeError(err, "team", t.TeamID)
	}
	if a.km != nil {
		a.km.TeamChanged(t)
	}
	a.record("team.member_add", "team", t.TeamID, a.viewTeam(old), a.viewTeam(t))
	return nil
}

// getUser reads a user named by param; 404 when unknown.
func (a *API) getUser(ctx context.Context, param, id string) (*store.User, *errs.Error) {
	if id == "" {
		return nil, errs.BadRequest(errs.CodeInvalidRequest, param, "No user id passed in: "+param+" is required")
	}
	u, err := a.st.GetUser(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		e := errs.New(404, errs.CodeNotFound, "User not found, passed user_id="+id)
		e.Param = param
		return nil, e
	}
	if err != nil {
		return nil, storeError(err, "user", id)
	}
	return u, nil
}

// POST /user/update: by user_id, or by user_email when no user_id is given.
func (a *API) userUpdate(ctx context.Context, rq *request) (any, *errs.Error) {
	r := rq.body
	id := r.str("user_id")
	p := readUserPatch(r)
	if r.err != nil {
		return nil, r.err
	}
	var old *store.User
	var e *errs.Error
	switch {
	case id.V != "":
		old, e = a.getUser(ctx, "user_id", id.V)
	case p.email.V != "":
		us, err := a.st.ListUsers(ctx)
		if err != nil {
			return nil, storeError(err, "user", "")
		}
		for _, u := range us {
			if strings.EqualFold(u.UserEmail, p.email.V) {
				old = u
				break
			}
		}
		if old == nil {
			e = errs.New(404, errs.CodeNotFound, "User not found, passed user_email="+p.email.V)
			e.Param = "user_email"
		}
		p.email = opt[string]{} // it identified the user
	default:
		e = errs.BadRequest(errs.CodeInvalidRequest, "user_id", "Either user_id or user_email must be passed in")
	}
	if e != nil {
		return nil, e
	}
	u := *old
	u.Models = append([]string(nil), old.Models...)
	now := a.now()
	if e := p.apply(&u, now); e != nil {
		return nil, e
	}
	u.UpdatedAt = now
	if err := a.st.UpdateUser(ctx, &u); err != nil {
		return nil, storeError(err, "user", u.UserID)
	}
	if a.km != nil {
		a.km.UserChanged(&u)
	}
	a.record("user.update", "user", u.UserID, a.viewUser(old), a.viewUser(&u))
	return map[string]any{"user_id": u.UserID, "data": a.viewUser(&u)}, nil
}

// GET /user/info?user_id=
func (a *API) userInfo(ctx context.Context, rq *request) (any, *errs.Error) {
	u, e := a.getUser(ctx, "user_id", rq.q("user_id"))
	if e != nil {
		return nil, e
	}
	ks := []keyView{}
	if err := a.eachKey(ctx, "", u.UserID, func(k *store.Key) { ks = append(ks, a.viewKey(k, true)) }); err != nil {
		return nil, storeError(err, "key", "")
	}
	ts := []teamView{}
	for _, id := range u.TeamIDs {
		t, err := a.st.GetTeam(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, storeError(err, "team", id)
		}
		ts = append(ts, a.viewTeam(t))
	}
	return map[string]any{"user_id": u.UserID, "user_info": a.viewUser(u), "keys": ks, "teams": ts}, nil
}

// GET /user/list?page=&page_size=&role=&team=
func (a *API) userList(ctx context.Context, rq *request) (any, *errs.Error) {
	page, e := rq.qInt("page", 1, 0)
	if e != nil {
		return nil, e
	}
	size, e := rq.qInt("page_size", 25, 100)
	if e != nil {
		return nil, e
	}
	role, team := rq.q("role"), rq.q("team")
	us, err := a.st.ListUsers(ctx)
	if err != nil {
		return nil, storeError(err, "user", "")
	}
	var match []*store.User
	for _, u := range us {
		if (role == "" || u.UserRole == role) && (team == "" || slices.Contains(u.TeamIDs, team)) {
			match = append(match, u)
		}
	}
	out := []userView{}
	if from := (page - 1) * size; from < len(match) {
		for _, u := range match[from:min(len(match), from+size)] {
			out = append(out, a.viewUser(u))
		}
	}
	return map[string]any{
		"users": out, "total": len(match), "page": page, "page_size": size, "total_pages": (len(match) + size - 1) / size,
	}, nil
}
