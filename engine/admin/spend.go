package admin

import (
	"context"
	"encoding/json"
	"errors"
	"sort"

	"github.com/portcullis/portcullis/engine/errs"
	"github.com/portcullis/portcullis/engine/store"
)

// spendRow is one request as LiteLLM's LiteLLM_SpendLogs row shows it.
type spendRow struct {
	RequestID        string          `json:"request_id"`
	APIKey           string          `json:"api_key"` // the key's hash
	Spend            float64         `json:"spend"`
	TotalTokens      int64           `json:"total_tokens"`
	PromptTokens     int64           `json:"prompt_tokens"`
	CompletionTokens int64           `json:"completion_tokens"`
	StartTime        string          `json:"startTime"`
	EndTime          string          `json:"endTime"`
	Model            string          `json:"model"`
	ModelID          string          `json:"model_id"`
	ModelGroup       string          `json:"model_group"`
	Provider         string          `json:"custom_llm_provider"`
	User             string          `json:"user"`
	TeamID           string          `json:"team_id"`
	Metadata         spendMeta       `json:"metadata"`
	CacheHit         string          `json:"cache_hit"`
	RequestTags      []string        `json:"request_tags"`
	Status           string          `json:"status"`
	Messages         json.RawMessage `json:"messages"`
	Response         json.RawMessage `json:"response"`
}

type spendMeta struct {
	KeyAlias         string `json:"user_api_key_alias"`
	KeyHash          string `json:"user_api_key"`
	TeamID           string `json:"user_api_key_team_id"`
	UserID           string `json:"user_api_key_user_id"`
	StatusCode       int    `json:"status_code"`
	ErrorCode        string `json:"error_code,omitempty"`
	CachedTokens     int64  `json:"cached_tokens"`
	CacheWriteTokens int64  `json:"cache_creation_tokens"`
	ReasoningTokens  int64  `json:"reasoning_tokens"`
}

func viewSpend(r *store.SpendRecord) spendRow {
	row := spendRow{
		RequestID: r.RequestID, APIKey: r.KeyHash, Spend: toUSD(r.Cost),
		TotalTokens: r.PromptTokens + r.CompletionTokens, PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens,
		StartTime: fmtTime(r.StartTime), EndTime: fmtTime(r.EndTime),
		Model: r.Model, ModelID: r.Deployment, ModelGroup: r.ModelGroup, Provider: r.Provider,
		User: r.UserID, TeamID: r.TeamID,
		Metadata: spendMeta{KeyAlias: r.KeyAlias, KeyHash: r.KeyHash, TeamID: r.TeamID, UserID: r.UserID,
			StatusCode: r.Status, ErrorCode: r.ErrorCode, CachedTokens: r.CachedTokens,
			CacheWriteTokens: r.CacheWriteTokens, ReasoningTokens: r.ReasoningTokens},
		CacheHit: "False", RequestTags: listOrEmpty(r.Tags), Status: "success",
		Messages: r.Prompt, Response: r.Response,
	}
	if r.CacheHit {
		row.CacheHit = "True"
	}
	if r.Status >= 400 || r.ErrorCode != "" {
		row.Status = "failure"
	}
	if len(row.Messages) == 0 {
		row.Messages = json.RawMessage("{}")
	}
	if len(row.Response) == 0 {
		row.Response = json.RawMessage("{}")
	}
	return row
}

// GET /spend/logs?api_key=&team_id=&user_id=&model=&request_id=&start_date=&end_date=&limit=
// Newest first; at most limit rows (default 1000).
func (a *API) spendLogs(ctx context.Context, rq *request) (any, *errs.Error) {
	f := store.SpendFilter{TeamID: rq.q("team_id"), UserID: rq.q("user_id"), Model: rq.q("model")}
	if k := rq.q("api_key"); k != "" {
		f.KeyHash = hashOf(k)
	}
	var e *errs.Error
	if f.From, e = parseDate("start_date", rq.q("start_date"), false); e != nil {
		return nil, e
	}
	if f.To, e = parseDate("end_date", rq.q("end_date"), true); e != nil {
		return nil, e
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.To.After(f.From) {
		return nil, errs.BadRequest(errs.CodeInvalidRequest, "end_date", "end_date must not be before start_date")
	}
	if f.Limit, e = rq.qInt("limit", 1000, 100_000); e != nil {
		return nil, e
	}
	reqID := rq.q("request_id")
	if reqID != "" {
		f.Limit = 0 // the store has no request id filter: read the matches, pick one
	}
	recs, err := a.st.ListSpend(ctx, f)
	if err != nil {
		return nil, storeError(err, "spend", "")
	}
	out := make([]spendRow, 0, len(recs))
	for i := range recs {
		if reqID != "" && recs[i].RequestID != reqID {
			continue
		}
		out = append(out, viewSpend(&recs[i]))
	}
	return out, nil
}

// GET /global/spend/report?start_date=&end_date=&group_by=team|key|model|api_key&api_key=&team_id=
//
// group_by team (default), key and model answer a list of days, each
//
//	{"group_by_day": "2025-03-10", "teams"|"keys"|"models": [{..., "total_spend", "metadata": [...]}], "total_spend"}
//
// group_by api_key answers LiteLLM's per-key totals over the whole range:
//
//	[{"api_key", "total_cost", "total_input_tokens", "total_output_tokens", "model_details": [...]}]
func (a *API) spendReport(ctx context.Context, rq *request) (any, *errs.Error) {
	if rq.q("start_date") == "" || rq.q("end_date") == "" {
		return nil, errs.BadRequest(errs.CodeInvalidRequest, "start_date", "Please provide start_date and end_date")
	}
	from, e := parseDate("start_date", rq.q("start_date"), false)
	if e != nil {
		return nil, e
	}
	to, e := parseDate("end_date", rq.q("end_date"), true)
	if e != nil {
		return nil, e
	}
	if !to.After(from) {
		return nil, errs.BadRequest(errs.CodeInvalidRequest, "end_date", "end_date must not be before start_date")
	}
	groupBy := rq.q("group_by")
	switch groupBy {
	case "":
		groupBy = "team"
	case "team", "key", "model", "api_key":
	default:
		return nil, errs.BadRequest(errs.CodeInvalidRequest, "group_by", "group_by must be team, key, model or api_key")
	}
	rows, err := a.st.SpendReport(ctx, from, to)
	if err != nil {
		return nil, storeError(err, "spend", "")
	}
	keyHash, teamID := "", rq.q("team_id")
	if k := rq.q("api_key"); k != "" {
		keyHash = hashOf(k)
	}
	kept := rows[:0:0]
	for _, r := range rows {
		if (keyHash == "" || r.KeyHash == keyHash) && (teamID == "" || r.TeamID == teamID) {
			kept = append(kept, r)
		}
	}
	if groupBy == "api_key" {
		return byAPIKey(kept), nil
	}
	names, e := a.teamNames(ctx, kept)
	if e != nil {
		return nil, e
	}
	return byDay(kept, groupBy, names), nil
}

// teamNames maps the report's team ids to their aliases (or ids).
func (a *API) teamNames(ctx context.Context, rows []store.ReportRow) (map[string]string, *errs.Error) {
	names := map[string]string{"": "Unassigned Team"}
	for _, r := range rows {
		if _, ok := names[r.TeamID]; ok {
			continue
		}
		names[r.TeamID] = r.TeamID
		t, err := a.st.GetTeam(ctx, r.TeamID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, storeError(err, "team", r.TeamID)
		}
		if t.TeamAlias != "" {
			names[r.TeamID] = t.TeamAlias
		}
	}
	return names, nil
}

// reportDetail is one (model, key) line inside a group.
type reportDetail struct {
	Model            string  `json:"model,omitempty"`
	APIKey           string  `json:"api_key,omitempty"`
	KeyAlias         string  `json:"key_alias,omitempty"`
	TeamID           string  `json:"team_id,omitempty"`
	Spend            float64 `json:"spend"`
	TotalTokens      int64   `json:"total_tokens"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	Requests         int64   `json:"requests"`
}

// reportGroup is one team, key or model of one day.
type reportGroup struct {
	TeamName   string         `json:"team_name,omitempty"`
	TeamID     *string        `json:"team_id,omitempty"`
	APIKey     string         `json:"api_key,omitempty"`
	KeyAlias   *string        `json:"key_alias,omitempty"`
	Model      string         `json:"model,omitempty"`
	TotalSpend float64        `json:"total_spend"`
	Requests   int64          `json:"requests"`
	Metadata   []reportDetail `json:"metadata"`
	cost       store.Nano
}

func byDay(rows []store.ReportRow, groupBy string, teamNames map[string]string) []map[string]any {
	type day struct {
		name   string
		groups map[string]*reportGroup
		cost   store.Nano
	}
	days := map[string]*day{}
	for _, r := range rows {
		d := days[r.Day]
		if d == nil {
			d = &day{name: r.Day, groups: map[string]*reportGroup{}}
			days[r.Day] = d
		}
		var id string
		detail := reportDetail{Spend: toUSD(r.Cost), TotalTokens: r.PromptTokens + r.CompletionTokens,
			PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens, Requests: r.Requests}
		switch groupBy {
		case "team":
			id = r.TeamID
			detail.Model, detail.APIKey, detail.KeyAlias = r.Model, r.KeyHash, r.KeyAlias
		case "key":
			id = r.KeyHash
			detail.Model, detail.TeamID = r.Model, r.TeamID
		case "model":
			id = r.Model
			detail.APIKey, detail.KeyAlias, detail.TeamID = r.KeyHash, r.KeyAlias, r.TeamID
		}
		g := d.groups[id]
		if g == nil {
			g = &reportGroup{Metadata: []reportDetail{}}
			switch groupBy {
			case "team":
				g.TeamName, g.TeamID = teamNames[r.TeamID], strPtr(r.TeamID)
			case "key":
				g.APIKey, g.KeyAlias, g.TeamID = r.KeyHash, strPtr(r.KeyAlias), strPtr(r.TeamID)
			case "model":
				g.Model = r.Model
			}
			d.groups[id] = g
		}
		g.cost += r.Cost
		g.Requests += r.Requests
		g.Metadata = append(g.Metadata, detail)
		d.cost += r.Cost
	}
	field := map[string]string{"team": "teams", "key": "keys", "model": "models"}[groupBy]
	out := make([]map[string]any, 0, len(days))
	for _, name := range sortedKeys(days) {
		d := days[name]
		groups := make([]*reportGroup, 0, len(d.groups))
		for _, id := range sortedKeys(d.groups) {
			g := d.groups[id]
			g.TotalSpend = toUSD(g.cost)
			groups = append(groups, g)
		}
		out = append(out, map[string]any{"group_by_day": d.name, field: groups, "total_spend": toUSD(d.cost)})
	}
	return out
}

type modelDetail struct {
	Model             string  `json:"model"`
	TotalCost         float64 `json:"total_cost"`
	TotalInputTokens  int64   `json:"total_input_tokens"`
	TotalOutputTokens int64   `json:"total_output_tokens"`
	cost              store.Nano
}

type keyTotal struct {
	APIKey            string         `json:"api_key"`
	TotalCost         float64        `json:"total_cost"`
	TotalInputTokens  int64          `json:"total_input_tokens"`
	TotalOutputTokens int64          `json:"total_output_tokens"`
	ModelDetails      []*modelDetail `json:"model_details"`
	cost              store.Nano
}

// byAPIKey is LiteLLM's group_by=api_key: totals per key over the range,
// with per-model details, dearest key first.
func byAPIKey(rows []store.ReportRow) []*keyTotal {
	keys := map[string]*keyTotal{}
	models := map[[2]string]*modelDetail{}
	for _, r := range rows {
		k := keys[r.KeyHash]
		if k == nil {
			k = &keyTotal{APIKey: r.KeyHash}
			keys[r.KeyHash] = k
		}
		k.cost += r.Cost
		k.TotalInputTokens += r.PromptTokens
		k.TotalOutputTokens += r.CompletionTokens
		m := models[[2]string{r.KeyHash, r.Model}]
		if m == nil {
			m = &modelDetail{Model: r.Model}
			models[[2]string{r.KeyHash, r.Model}] = m
			k.ModelDetails = append(k.ModelDetails, m)
		}
		m.cost += r.Cost
		m.TotalInputTokens += r.PromptTokens
		m.TotalOutputTokens += r.CompletionTokens
	}
	out := make([]*keyTotal, 0, len(keys))
	for _, k := range keys {
		k.TotalCost = toUSD(k.cost)
		for _, m := range k.ModelDetails {
			m.TotalCost = toUSD(m.cost)
		}
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].cost != out[j].cost {
			return out[i].cost > out[j].cost
		}
		return out[i].APIKey < out[j].APIKey
	})
	return out
}
