package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"syscall"
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
	c0 := cpuNow()
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
	b.ReportMetric(float64(cpuNow()-c0)/float64(b.N*batch), "cpu-ns/rec")
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
