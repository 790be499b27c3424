package policy

import (
	"testing"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/errs"
)

// TestEvaluatorOPA: with evaluator "opa" every decision goes through OPA's
// own evaluator and decides as the planned program does.
func TestEvaluatorOPA(t *testing.T) {
	data := map[string]any{"portcullis": map[string]any{"access": map[string]any{
		"teams": map[string]any{"interns": map[string]any{"models": []any{"gpt-4o-mini*"}}}}}}
	for _, ev := range []string{"planned", "opa"} {
		e, _ := newEngine(t, config.PolicySettings{Dir: shippedCopy(t, false, data), Evaluator: ev})
		if planned := e.cur.Load().request.prog != nil; planned != (ev == "planned") {
			t.Fatalf("evaluator %s: planned program %v", ev, planned)
		}
		x := exchange(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)
		x.TeamID = "interns"
		_, err := serve(e, x)
		if errs.CodeOf(err) != "model_not_allowed" {
			t.Fatalf("evaluator %s: %v", ev, err)
		}
		x = exchange(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
		x.TeamID = "interns"
		if reached, err := serve(e, x); !reached || err != nil {
			t.Fatalf("evaluator %s: allowed request: %v", ev, err)
		}
	}
}
