package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/engine/store"
)

func expInsertSQL(n int, returning bool) string {
	var sb strings.Builder
	sb.WriteString("INSERT INTO spend_logs (" + spendColumns + ") VALUES ")
	for i := 0; i < n; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
	}
	sb.WriteString(" ON CONFLICT (request_id) DO NOTHING")
	if returning {
		sb.WriteString(" RETURNING request_id")
	}
	return sb.String()
}

func BenchmarkExp(b *testing.B) {
	for _, per := range []int{1, 8, 32, 64, 128} {
		for _, ret := range []bool{false, true} {
			for _, drop := range []bool{true} {
				for _, prag := range []string{"", "PRAGMA temp_store=MEMORY"} {
					if per == 1 && ret {
						continue
					}
					name := fmt.Sprintf("per=%d/ret=%v/drop=%v/prag=%v", per, ret, drop, prag != "")
					b.Run(name, func(b *testing.B) { expRun(b, per, ret, drop, prag) })
				}
			}
		}
	}
}

func expRun(b *testing.B, per int, ret, drop bool, prag string) {
	ctx := context.Background()
	s, _ := openTest(b)
	seedOwners(b, s)
	if drop {
		if _, err := s.w.Exec("DROP INDEX spend_logs_user_id_start_time; DROP INDEX spend_logs_model_start_time"); err != nil {
			b.Fatal(err)
		}
	}
	if prag != "" {
		if _, err := s.w.Exec(prag); err != nil {
			b.Fatal(err)
		}
	}
	st, err := s.w.Prepare(expInsertSQL(per, ret))
	if err != nil {
		b.Fatal(err)
	}
	const batch = 512
	recs := make([]store.SpendRecord, batch)
	args := make([]any, 0, per*23)
	b.ReportAllocs()
	b.ResetTimer()
	c0 := cpuTime()
	n := 0
	var rid sql.RawBytes
	for b.Loop() {
		for i := range recs {
			n++
			recs[i] = store.SpendRecord{
				RequestID: "req-" + strconv.Itoa(n), KeyHash: "k" + strconv.Itoa(n%16), TeamID: "t" + strconv.Itoa(n%4),
				UserID: "u" + strconv.Itoa(n%16), Model: "gpt-4o", Provider: "openai", PromptTokens: 100,
				CompletionTokens: 200, Cost: 1234, Status: 200, StartTime: t0, EndTime: t0,
			}
		}
		tx, err := s.w.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		ins := tx.StmtContext(ctx, st)
		got := 0
		for i := 0; i < batch; i += per {
			args = args[:0]
			for j := i; j < i+per; j++ {
				r := &recs[j]
				args = append(args, r.RequestID, r.KeyHash, r.KeyAlias, r.TeamID, r.UserID, r.Model, r.ModelGroup, r.Deployment, r.Provider,
					r.PromptTokens, r.CompletionTokens, r.CachedTokens, r.CacheWriteTokens, r.ReasoningTokens, r.Cost,
					int64(r.Status), r.ErrorCode, ms(r.StartTime), ms(r.EndTime), int64(boolInt(r.CacheHit)), "[]", nil, nil)
			}
			if ret {
				rows, err := ins.QueryContext(ctx, args...)
				if err != nil {
					b.Fatal(err)
				}
				for rows.Next() {
					if err := rows.Scan(&rid); err != nil {
						b.Fatal(err)
					}
					got++
				}
				if err := rows.Err(); err != nil {
					b.Fatal(err)
				}
				rows.Close()
			} else {
				res, err := ins.ExecContext(ctx, args...)
				if err != nil {
					b.Fatal(err)
				}
				k, _ := res.RowsAffected()
				got += int(k)
			}
		}
		if got != batch {
			b.Fatalf("got %d", got)
		}
		for _, q := range []string{"UPDATE keys SET spend = spend + ? WHERE hash = ?", "UPDATE teams SET spend = spend + ? WHERE team_id = ?", "UPDATE users SET spend = spend + ? WHERE user_id = ?"} {
			for k := 0; k < 16; k++ {
				if _, err := tx.ExecContext(ctx, q, 1, "x"+strconv.Itoa(k)); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/rec")
	b.ReportMetric(float64(cpuTime()-c0)/float64(b.N*batch), "cpu-ns/rec")
}


// BenchmarkExpPureSQL: rows generated inside SQLite: the floor for b-tree + commit work.
func BenchmarkExpPureSQL(b *testing.B) {
	for _, kt := range [][2]int{{1, 1}, {16, 4}, {256, 16}, {4096, 64}} {
		b.Run(fmt.Sprintf("copy-keys=%d-teams=%d", kt[0], kt[1]), func(b *testing.B) { expCopy(b, kt[0], kt[1]) })
	}
	return
	for _, drop := range []string{"", "spend_logs_team_id_start_time", "spend_logs_team_id_start_time,spend_logs_key_hash_start_time", "spend_logs_team_id_start_time,spend_logs_key_hash_start_time,spend_logs_start_time"} {
		b.Run("drop="+strconv.Itoa(len(strings.Split(drop, ","))*len(drop)/max(1, len(drop))), func(b *testing.B) { expPure(b, drop) })
	}
}

func expPure(b *testing.B, drop string) {
	ctx := context.Background()
	s, _ := openTest(b)
	seedOwners(b, s)
	if drop != "" {
		for _, ix := range strings.Split(drop, ",") {
			if _, err := s.w.Exec("DROP INDEX " + ix); err != nil {
				b.Fatal(err)
			}
		}
	}
	const batch = 512
	q := `WITH RECURSIVE c(x) AS (SELECT ? UNION ALL SELECT x+1 FROM c WHERE x < ?)
INSERT INTO spend_logs (` + spendColumns + `) SELECT 'req-'||x, 'k'||(x%16), '', 't'||(x%4), 'u'||(x%16), 'gpt-4o', '', '', 'openai', 100, 200, 0, 0, 0, 1234, 200, '', 1741608000000, 1741608000000, 0, '[]', NULL, NULL FROM c WHERE true ON CONFLICT (request_id) DO NOTHING`
	b.ReportAllocs()
	b.ResetTimer()
	c0 := cpuTime()
	n := 0
	for b.Loop() {
		tx, _ := s.w.BeginTx(ctx, nil)
		res, err := tx.ExecContext(ctx, q, n+1, n+batch)
		if err != nil {
			b.Fatal(err)
		}
		if k, _ := res.RowsAffected(); k != batch {
			b.Fatal(k)
		}
		n += batch
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-c0)/float64(b.N*batch), "cpu-ns/rec")
}

func expCopy(b *testing.B, keys, teams int) {
	ctx := context.Background()
	s, _ := openTest(b)
	seedOwners(b, s)
	const batch = 512
	if _, err := s.w.Exec(strings.NewReplacer("KEYS", strconv.Itoa(keys), "TEAMS", strconv.Itoa(teams)).Replace(`CREATE TEMP TABLE src AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 1000000)
SELECT x AS id, 'req-'||x AS request_id, 'k'||(x%KEYS) AS key_hash, '' AS key_alias, 't'||(x%TEAMS) AS team_id, 'u'||(x%16) AS user_id, 'gpt-4o' AS model, '' AS model_group, '' AS deployment, 'openai' AS provider, 100 AS prompt_tokens, 200 AS completion_tokens, 0 AS cached_tokens, 0 AS cache_write_tokens, 0 AS reasoning_tokens, 1234 AS cost, 200 AS status, '' AS error_code, 1741608000000+x AS start_time, 1741608000000 AS end_time, 0 AS cache_hit, '[]' AS tags, NULL AS prompt, NULL AS response FROM c`)); err != nil {
		b.Fatal(err)
	}
	if _, err := s.w.Exec(`CREATE INDEX temp.src_id ON src (id)`); err != nil {
		b.Fatal(err)
	}
	q := `INSERT INTO spend_logs (` + spendColumns + `) SELECT ` + spendColumns + ` FROM src WHERE id BETWEEN ? AND ? ON CONFLICT (request_id) DO NOTHING`
	b.ReportAllocs()
	b.ResetTimer()
	c0 := cpuTime()
	n := 0
	for b.Loop() {
		tx, _ := s.w.BeginTx(ctx, nil)
		res, err := tx.ExecContext(ctx, q, n+1, n+batch)
		if err != nil {
			b.Fatal(err)
		}
		if k, _ := res.RowsAffected(); k != batch {
			b.Fatal(k)
		}
		n += batch
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-c0)/float64(b.N*batch), "cpu-ns/rec")
}

// BenchmarkExpManyKeysBatch: batch size effect with many keys (v5 settings).
func BenchmarkExpManyKeysBatch(b *testing.B) {
	for _, batch := range []int{512, 2048, 4096} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			ctx := context.Background()
			s, _ := openTest(b)
			seedOwners(b, s)
			recs := make([]store.SpendRecord, batch)
			n := 0
			fill := func() {
				for i := range recs {
					n++
					recs[i] = store.SpendRecord{
						RequestID: "req-" + strconv.Itoa(n), KeyHash: fmt.Sprintf("%064x", n*7919%1024), TeamID: "t" + strconv.Itoa(n%64),
						UserID: "u" + strconv.Itoa(n%1024), Model: "gpt-4o", Provider: "openai", PromptTokens: 100,
						CompletionTokens: 200, Cost: 1234, Status: 200, StartTime: t0.Add(time.Duration(n) * time.Millisecond), EndTime: t0,
					}
				}
			}
			for range 102400 / batch {
				fill()
				if err := s.WriteSpend(ctx, recs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			c0 := cpuTime()
			for b.Loop() {
				fill()
				if err := s.WriteSpend(ctx, recs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-c0)/float64(b.N*batch), "cpu-ns/rec")
		})
	}
}
