package admin

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/keys"
	"github.com/portcullis/portcullis/engine/store"
)

// newSecret is "sk-" and 32 random bytes in base64url (46 characters).
func newSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return "sk-" + base64.RawURLEncoding.EncodeToString(b[:])
}

// displayPrefix is what is stored of a key besides its hash: its first 7
// and last 4 characters ("sk-AbCd...WxYz"). A short caller-chosen key
// keeps less, so the stored part never gives most of it away.
func displayPrefix(secret string) string {
	switch {
	case len(secret) >= 24:
		return secret[:7] + "..." + secret[len(secret)-4:]
	case len(secret) >= 16:
		return secret[:3] + "..." + secret[len(secret)-2:]
	}
	return secret[:min(3, len(secret))] + "..."
}

// keyName is LiteLLM's display form, "sk-...WxYz", from the stored prefix.
func keyName(prefix string) string {
	i := strings.LastIndex(prefix, "...")
	if i < 0 {
		return prefix
	}
	head := prefix[:min(3, i)]
	return head + "..." + prefix[i+3:]
}

// hashOf turns what a caller sent (a key or its hash) into the hash.
// Keys start with "sk-"; 64 hex characters are taken as a hash.
func hashOf(k string) string {
	if !strings.HasPrefix(k, "sk-") && len(k) == 64 && isHex(k) {
		return strings.ToLower(k)
	}
	return keys.Hash(k)
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// keyView is a key as LiteLLM shows it (LiteLLM_VerificationToken).
type keyView struct {
	Token    string   `json:"token,omitempty"`
	KeyName  string   `json:"key_name"`
	KeyAlias *string  `json:"key_alias"`
	Spend    float64  `json:"spend"`
	Expires  *string  `json:"expires"`
	Models   []string `json:"models"`
	UserID   *string  `json:"user_id"`
	TeamID   *string  `json:"team_id"`
	limitsView
	Metadata  json.RawMessage `json:"metadata"`
	Tags      []string        `json:"tags"`
	Blocked   bool            `json:"blocked"`
	CreatedAt *string         `json:"created_at"`
	UpdatedAt *string         `json:"updated_at"`
	CreatedBy *string         `json:"created_by"`
}

// viewKey shows k; spend is the live account's when the Manager has one.
func (a *API) viewKey(k *store.Key, withToken bool) keyView {
	v := keyView{
		KeyName: keyName(k.Prefix), KeyAlias: strPtr(k.KeyAlias), Spend: toUSD(a.keySpend(k)),
		Expires: timePtr(k.ExpiresAt), Models: listOrEmpty(k.Models), UserID: strPtr(k.UserID), TeamID: strPtr(k.TeamID),
		limitsView: viewLimits(&k.Limits), Metadata: metadataOut(k.Metadata, &k.Limits), Tags: tagsOf(k.Metadata),
		Blocked: k.Blocked, CreatedAt: timeOrNil(k.CreatedAt), UpdatedAt: timeOrNil(k.UpdatedAt), CreatedBy: strPtr(k.CreatedBy),
	}
	if withToken {
		v.Token = k.Hash
	}
	return v
}

// auditKey is a key in an audit record: never the secret, the hash only
// by its first 12 characters.
type auditKey struct {
	TokenPrefix string `json:"token_prefix"`
	keyView
}

func (a *API) auditView(k *store.Key) *auditKey {
	if k == nil {
		return nil
	}
	return &auditKey{TokenPrefix: k.Hash[:min(12, len(k.Hash))], keyView: a.viewKey(k, false)}
}

func (a *API) keySpend(k *store.Key) store.Nano {
	if a.km != nil {
		if acct, ok := a.km.KeyAccount(k.Hash); ok {
			return acct.Spent()
		}
	}
	return k.Spend
}

// generatedKey is LiteLLM's GenerateKeyResponse: the secret (shown only
// here), its hash as token and token_id, and the key's fields.
type generatedKey struct {
	Key      string  `json:"key"`
	TokenID  string  `json:"token_id"`
	Duration *string `json:"duration"`
	keyView
}

// keyPatch is the key fields of /key/generate, /key/update and
// /key/regenerate.
type keyPatch struct {
	alias, duration, teamID, userID opt[string]
	models                          opt[[]string]
	blocked                         opt[bool]
	spend                           opt[store.Nano]
	limits                          limitsPatch
	meta                            metaPatch
}

func readKeyPatch(r *reader) *keyPatch {
	return &keyPatch{
		alias: r.str("key_alias"), duration: readDuration(r), teamID: r.str("team_id"), userID: r.str("user_id"),
		models: r.strs("models"), blocked: r.boolean("blocked"), spend: r.usd("spend"),
		limits: readLimits(r, true), meta: readMeta(r),
	}
}

// readDuration reads a key's duration: "30s", "1h", "30d", ... ("-1" on
// update: never expires).
func readDuration(r *reader) opt[string] {
	o := r.str("duration")
	if o.given() {
		if d := strings.TrimSpace(o.V); d != "" && d != "-1" {
			if _, err := keys.ParseDuration(d); err != nil {
				r.fail("duration", strings.Replace(err.Error(), "budget_duration", "duration", 1))
			}
		}
	}
	return o
}

// applyKey writes p into k (a copy being created or updated) and checks
// what needs the store: the team exists and allows the key's models, the
// alias is unique.
func (a *API) applyKey(ctx context.Context, k *store.Key, p *keyPatch, now time.Time, creating bool) *errs.Error {
	oldAlias, oldTeam := k.KeyAlias, k.TeamID
	if p.alias.Set {
		k.KeyAlias = strings.TrimSpace(p.alias.V)
	}
	if p.teamID.Set {
		k.TeamID = p.teamID.V
	}
	if p.userID.Set {
		k.UserID = p.userID.V
	}
	if p.models.Set {
		k.Models = nonEmptyList(p.models.V)
	}
	if p.blocked.Set {
		k.Blocked = p.blocked.V
	}
	if p.duration.given() {
		switch d := strings.TrimSpace(p.duration.V); d {
		case "":
		case "-1":
			k.ExpiresAt = nil
		default:
			dur, _ := keys.ParseDuration(d) // validated by readKeyPatch
			exp := now.Add(dur)
			k.ExpiresAt = &exp
		}
	}
	if p.spend.given() {
		if !creating {
			return errs.BadRequest(errs.CodeUnsupported, "spend", "spend can only be set when a key is generated")
		}
		k.Spend = p.spend.V
	}
	p.limits.apply(&k.Limits, now)
	md, e := p.meta.apply(k.Metadata, &k.Limits, &p.limits)
	if e != nil {
		return e
	}
	k.Metadata = md

	if k.TeamID != "" && (creating || k.TeamID != oldTeam || p.models.Set) {
		t, err := a.st.GetTeam(ctx, k.TeamID)
		if errors.Is(err, store.ErrNotFound) {
			return errs.BadRequest(errs.CodeInvalidRequest, "team_id", "team_id "+k.TeamID+" does not exist; create it with /team/new first")
		}
		if err != nil {
			return storeError(err, "team", k.TeamID)
		}
		if e := modelsWithinTeam(k.Models, t); e != nil {
			return e
		}
	}
	if k.KeyAlias != "" && (creating || k.KeyAlias != oldAlias) {
		found, err := a.keysByAlias(ctx, []string{k.KeyAlias})
		if err != nil {
			return storeError(err, "key", k.KeyAlias)
		}
		for _, other := range found {
			if other.Hash != k.Hash {
				return errs.BadRequest(codeExists, "key_alias", "Key with alias '"+k.KeyAlias+"' already exists. Unique key aliases across all keys are required.")
			}
		}
	}
	return nil
}

// modelsWithinTeam refuses a key model its team does not allow, when the
// team restricts models (LiteLLM's can_team_access_model).
func modelsWithinTeam(models []string, t *store.Team) *errs.Error {
	tm := keys.CompileModels(t.Models)
	for _, m := range models {
		if m == "all-team-models" {
			continue
		}
		if !tm.Allows(m, nil) {
			return errs.BadRequest(codeTeamModelAccess, "models", "Team "+t.TeamID+" does not allow model `"+m+"`; a team key's models must be within the team's models "+jsonList(t.Models)+".")
		}
	}
	return nil
}

func jsonList(s []string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func nonEmptyList(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// keysByAlias finds keys by alias. The store has no alias index, so this
// pages through every key.
func (a *API) keysByAlias(ctx context.Context, aliases []string) ([]*store.Key, error) {
	want := make(map[string]bool, len(aliases))
	for _, s := range aliases {
		want[s] = true
	}
	var out []*store.Key
	err := a.eachKey(ctx, "", "", func(k *store.Key) {
		if k.KeyAlias != "" && want[k.KeyAlias] {
			out = append(out, k)
		}
	})
	return out, err
}

// eachKey calls fn for every key matching team and user, a page at a time.
func (a *API) eachKey(ctx context.Context, teamID, userID string, fn func(*store.Key)) error {
	const page = 1000
	for off := 0; ; off += page {
		ks, total, err := a.st.ListKeys(ctx, teamID, userID, off, page)
		if err != nil {
			return err
		}
		for _, k := range ks {
			fn(k)
		}
		if len(ks) < page || off+len(ks) >= total {
			return nil
		}
	}
}

// newKey creates a key from p: the caller's "key" or a new secret. It is
// shared by /key/generate and /user/new.
func (a *API) newKey(ctx context.Context, secret opt[string], p *keyPatch, defaults func(*store.Key)) (*store.Key, string, *errs.Error) {
	now := a.now()
	s := newSecret()
	if secret.given() {
		s = secret.V
		if !strings.HasPrefix(s, "sk-") {
			return nil, "", errs.BadRequest(errs.CodeInvalidRequest, "key", "Invalid key format. LiteLLM Virtual Key must start with 'sk-'.")
		}
		if len(s) < 8 {
			return nil, "", errs.BadRequest(errs.CodeInvalidRequest, "key", "key must be at least 8 characters")
		}
		if a.master != nil && s == string(a.master) {
			return nil, "", errs.BadRequest(errs.CodeInvalidRequest, "key", "key must not be the master key")
		}
	}
	k := &store.Key{Hash: keys.Hash(s), Prefix: displayPrefix(s), CreatedAt: now, UpdatedAt: now, CreatedBy: actor}
	if defaults != nil {
		defaults(k)
	}
	if e := a.applyKey(ctx, k, p, now, true); e != nil {
		return nil, "", e
	}
	if err := a.st.CreateKey(ctx, k); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, "", errs.BadRequest(codeExists, "key", "This key already exists.")
		}
		return nil, "", storeError(err, "key", k.Prefix)
	}
	if a.km != nil {
		a.km.KeyChanged(k)
	}
	a.record("key.generate", "key", k.Hash, nil, a.auditView(k))
	return k, s, nil
}

func (a *API) generated(k *store.Key, secret string, duration opt[string]) *generatedKey {
	g := &generatedKey{Key: secret, TokenID: k.Hash, keyView: a.viewKey(k, true)}
	if duration.given() && duration.V != "" {
		g.Duration = &duration.V
	}
	return g
}

// POST /key/generate
func (a *API) keyGenerate(ctx context.Context, rq *request) (any, *errs.Error) {
	r := rq.body
	secret := r.str("key")
	p := readKeyPatch(r)
	if r.err != nil {
		return nil, r.err
	}
	k, s, e := a.newKey(ctx, secret, p, nil)
	if e != nil {
		return nil, e
	}
	return a.generated(k, s, p.duration), nil
}

// getKey resolves a key (secret or hash) named by param.
func (a *API) getKey(ctx context.Context, param, k string) (*store.Key, *errs.Error) {
	if k == "" {
		return nil, errs.BadRequest(errs.CodeInvalidRequest, param, "No key passed in: "+param+" is required (the key or its hash)")
	}
	got, err := a.st.GetKey(ctx, hashOf(k))
	if errors.Is(err, store.ErrNotFound) {
		e := errs.New(404, errs.CodeNotFound, "Key not found: "+describeKey(k))
		e.Param = param
		return nil, e
	}
	if err != nil {
		return nil, storeError(err, "key", "")
	}
	return got, nil
}

// describeKey names a key in an error without repeating it: its display
// form, or a hash's first 12 characters.
func describeKey(k string) string {
	if strings.HasPrefix(k, "sk-") {
		return keyName(displayPrefix(k))
	}
	return k[:min(12, len(k))] + "..."
}

func copyKey(k *store.Key) *store.Key {
	c := *k
	c.Models = append([]string(nil), k.Models...)
	return &c
}

// POST /key/update
func (a *API) keyUpdate(ctx context.Context, rq *request) (any, *errs.Error) {
	r := rq.body
	name := r.str("key")
	p := readKeyPatch(r)
	if r.err != nil {
		return nil, r.err
	}
	old, e := a.getKey(ctx, "key", name.V)
	if e != nil {
		return nil, e
	}
	k := copyKey(old)
	now := a.now()
	if e := a.applyKey(ctx, k, p, now, false); e != nil {
		return nil, e
	}
	k.UpdatedAt = now
	if err := a.st.UpdateKey(ctx, k); err != nil {
		return nil, storeError(err, "key", k.Prefix)
	}
	if a.km != nil {
		a.km.KeyChanged(k)
	}
	a.record("key.update", "key", k.Hash, a.auditView(old), a.auditView(k))
	return struct {
		Key string `json:"key"`
		keyView
	}{name.V, a.viewKey(k, true)}, nil
}

// POST /key/delete: {"keys": [...]} (keys or hashes) or {"key_aliases": [...]}.
func (a *API) keyDelete(ctx context.Context, rq *request) (any, *errs.Error) {
	r := rq.body
	names, aliases := r.strs("keys"), r.strs("key_aliases")
	if r.err != nil {
		return nil, r.err
	}
	var victims []*store.Key
	var deleted []string
	switch {
	case len(names.V) > 0:
		for _, n := range names.V {
			k, e := a.getKey(ctx, "keys", n)
			if e != nil {
				return nil, e
			}
			victims = append(victims, k)
		}
		deleted = names.V
	case len(aliases.V) > 0:
		found, err := a.keysByAlias(ctx, aliases.V)
		if err != nil {
			return nil, storeError(err, "key", "")
		}
		for _, al := range aliases.V {
			ok := false
			for _, k := range found {
				ok = ok || k.KeyAlias == al
			}
			if !ok {
				e := errs.New(404, errs.CodeNotFound, "No key with alias '"+al+"'")
				e.Param = "key_aliases"
				return nil, e
			}
		}
		victims, deleted = found, aliases.V
	default:
		return nil, errs.BadRequest(errs.CodeInvalidRequest, "keys", "Pass the keys to delete as {\"keys\": [...]} (keys or hashes) or {\"key_aliases\": [...]}")
	}
	seen := map[string]bool{}
	for _, k := range victims {
		if seen[k.Hash] {
			continue
		}
		seen[k.Hash] = true
		if err := a.st.DeleteKey(ctx, k.Hash); err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, storeError(err, "key", k.Prefix)
		}
		if a.km != nil {
			a.km.KeyDeleted(k.Hash)
		}
		a.record("key.delete", "key", k.Hash, a.auditView(k), nil)
	}
	return map[string]any{"deleted_keys": deleted}, nil
}

// POST /key/regenerate and /key/{key}/regenerate: a new secret for the
// same key; the old one stops working at once. Other fields in the body
// update the key as /key/update does.
func (a *API) keyRegenerate(ctx context.Context, rq *request) (any, *errs.Error) {
	r := rq.body
	name := r.str("key")
	newKey := r.str("new_key")
	newMaster := r.str("new_master_key")
	p := readKeyPatch(r)
	if r.err != nil {
		return nil, r.err
	}
	if newMaster.given() {
		return nil, errs.BadRequest(errs.CodeUnsupported, "new_master_key", "Rotating the master key is done in the configuration, not through /key/regenerate")
	}
	target := name.V
	if target == "" {
		target = rq.pathKey
	}
	old, e := a.getKey(ctx, "key", target)
	if e != nil {
		return nil, e
	}
	s := newSecret()
	if newKey.given() {
		s = newKey.V
		if !strings.HasPrefix(s, "sk-") || len(s) < 8 {
			return nil, errs.BadRequest(errs.CodeInvalidRequest, "new_key", "New key must start with 'sk-' and be at least 8 characters.")
		}
		if a.master != nil && s == string(a.master) {
			return nil, errs.BadRequest(errs.CodeInvalidRequest, "new_key", "new_key must not be the master key")
		}
	}
	now := a.now()
	k := copyKey(old)
	k.Hash, k.Prefix = keys.Hash(s), displayPrefix(s)
	changed := p.any()
	if e := a.applyKey(ctx, k, p, now, false); e != nil {
		return nil, e
	}
	k.UpdatedAt = now
	if a.flush != nil {
		// Spend queued under the old hash reaches the key's total before
		// the row moves to the new hash.
		if err := a.flush(ctx); err != nil {
			return nil, errs.New(503, errs.CodeUnavailable, "could not flush pending spend before regenerating").Wrap(err)
		}
	}
	if err := a.st.ReplaceKeyHash(ctx, old.Hash, k.Hash, k.Prefix); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, errs.BadRequest(codeExists, "new_key", "new_key already exists")
		}
		return nil, storeError(err, "key", old.Prefix)
	}
	if changed {
		if err := a.st.UpdateKey(ctx, k); err != nil {
			return nil, storeError(err, "key", k.Prefix)
		}
	}
	if a.km != nil {
		// The live account (spend this period, reservations in flight)
		// moves to the new hash: regenerating must not reset a budget.
		a.km.KeyRehashed(old.Hash, k)
	}
	a.record("key.regenerate", "key", k.Hash, a.auditView(old), a.auditView(k))
	return a.generated(k, s, p.duration), nil
}

// any reports whether the patch changes anything.
func (p *keyPatch) any() bool {
	l := &p.limits
	return p.alias.Set || p.duration.Set || p.teamID.Set || p.userID.Set || p.models.Set || p.blocked.Set ||
		p.spend.Set || p.meta.metadata.Set || p.meta.tags.Set || l.maxBudget.Set || l.softBudget.Set ||
		l.budgetDuration.Set || l.rpm.Set || l.tpm.Set || l.parallel.Set || l.modelBudget.Set ||
		l.modelRPM.Set || l.modelTPM.Set
}

// POST /key/block
func (a *API) keyBlock(ctx context.Context, rq *request) (any, *errs.Error) {
	return a.setBlocked(ctx, rq, true)
}

// POST /key/unblock
func (a *API) keyUnblock(ctx context.Context, rq *request) (any, *errs.Error) {
	return a.setBlocked(ctx, rq, false)
}

func (a *API) setBlocked(ctx context.Context, rq *request, blocked bool) (any, *errs.Error) {
	r := rq.body
	name := r.str("key")
	if r.err != nil {
		return nil, r.err
	}
	old, e := a.getKey(ctx, "key", name.V)
	if e != nil {
		return nil, e
	}
	k := copyKey(old)
	k.Blocked = blocked
	k.UpdatedAt = a.now()
	if err := a.st.UpdateKey(ctx, k); err != nil {
		return nil, storeError(err, "key", k.Prefix)
	}
	if a.km != nil {
		a.km.KeyChanged(k)
	}
	action := "key.unblock"
	if blocked {
		action = "key.block"
	}
	a.record(action, "key", k.Hash, a.auditView(old), a.auditView(k))
	return a.viewKey(k, true), nil
}

// GET /key/info?key=...
func (a *API) keyInfo(ctx context.Context, rq *request) (any, *errs.Error) {
	name := rq.q("key")
	k, e := a.getKey(ctx, "key", name)
	if e != nil {
		return nil, e
	}
	return map[string]any{"key": name, "info": a.viewKey(k, false)}, nil
}

// GET /key/list?team_id=&user_id=&key_alias=&key_hash=&page=&size=&return_full_object=
func (a *API) keyList(ctx context.Context, rq *request) (any, *errs.Error) {
	page, e := rq.qInt("page", 1, 0)
	if e != nil {
		return nil, e
	}
	size, e := rq.qInt("size", 10, 100)
	if e != nil {
		return nil, e
	}
	full, e := rq.qBool("return_full_object")
	if e != nil {
		return nil, e
	}
	teamID, userID, alias, hash := rq.q("team_id"), rq.q("user_id"), rq.q("key_alias"), rq.q("key_hash")
	var ks []*store.Key
	var total int
	switch {
	case hash != "" || alias != "":
		var all []*store.Key
		if hash != "" {
			k, err := a.st.GetKey(ctx, hashOf(hash))
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, storeError(err, "key", "")
			}
			if k != nil && (teamID == "" || k.TeamID == teamID) && (userID == "" || k.UserID == userID) {
				all = append(all, k)
			}
		} else if err := a.eachKey(ctx, teamID, userID, func(k *store.Key) {
			if k.KeyAlias == alias {
				all = append(all, k)
			}
		}); err != nil {
			return nil, storeError(err, "key", "")
		}
		if hash != "" && alias != "" && len(all) == 1 && all[0].KeyAlias != alias {
			all = nil
		}
		total = len(all)
		if from := (page - 1) * size; from < len(all) {
			ks = all[from:min(len(all), from+size)]
		}
	default:
		var err error
		if ks, total, err = a.st.ListKeys(ctx, teamID, userID, (page-1)*size, size); err != nil {
			return nil, storeError(err, "key", "")
		}
	}
	out := make([]any, 0, len(ks))
	for _, k := range ks {
		if full {
			out = append(out, a.viewKey(k, true))
		} else {
			out = append(out, k.Hash)
		}
	}
	return map[string]any{
		"keys": out, "total_count": total, "current_page": page, "total_pages": (total + size - 1) / size,
	}, nil
}
