package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/util"
	"github.com/tidwall/gjson"

	"github.com/portcullis/portcullis/engine/config"
	"github.com/portcullis/portcullis/engine/llm"
	"github.com/portcullis/portcullis/engine/pipeline"
	"github.com/portcullis/portcullis/engine/policy"
)

const policyUsage = `usage:
  portcullis policy test [dir] [-v] [--threshold PCT] [--run REGEX] [--bundle FILE]
      run the policies' *_test.rego tests (custom builtins included) with coverage
  portcullis policy eval --input input.json [--dir policies | --bundle FILE] [--explain] [--response]
  portcullis policy eval --body request.json [--endpoint chat|completions|embeddings|messages]
                         [--team ID] [--user ID] [--key-alias ALIAS] [--dir policies] [--explain]
      print the decision for an input document (or for a request body, built as the gateway would)
`

// policyMain runs `portcullis policy ...`; it returns the exit code.
func policyMain(args []string) int {
	return policyCommand(args, os.Stdout, os.Stderr)
}

func policyCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	switch args[0] {
	case "test":
		return policyTest(args[1:], stdout, stderr)
	case "eval":
		return policyEval(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, policyUsage)
		return 0
	}
	fmt.Fprintf(stderr, "portcullis policy: unknown command %q\n%s", args[0], policyUsage)
	return 2
}

// parseInterspersed parses flags that may follow positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func policyTest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	verbose := fs.Bool("v", false, "list every test; print the trace of failed tests and the lines not covered")
	threshold := fs.Float64("threshold", 0, "fail when line coverage of the policy modules is below this percentage")
	run := fs.String("run", "", "run only the tests whose name matches this regular expression")
	bundle := fs.String("bundle", "", "test an OPA bundle (.tar.gz) instead of a directory")
	timeout := fs.Duration("timeout", 5*time.Second, "per-test timeout")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	dir := "policies"
	if len(pos) > 1 {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	if len(pos) == 1 {
		dir = pos[0]
	}
	if *bundle != "" {
		dir = ""
	}
	rep, err := policy.Test(context.Background(), policy.TestOptions{
		Dir: dir, Bundle: *bundle, Run: *run, Coverage: true, Timeout: *timeout, Trace: *verbose,
	})
	if err != nil {
		fmt.Fprintln(stderr, "portcullis policy test:", err)
		return 1
	}
	pass, fail, skip := 0, 0, 0
	for _, r := range rep.Results {
		name := r.Package + "." + r.Name
		switch {
		case r.Skip:
			skip++
			if *verbose {
				fmt.Fprintf(stdout, "%s: SKIPPED\n", name)
			}
		case r.Fail || r.Error != nil:
			fail++
			status := "FAIL"
			if r.Error != nil {
				status = "ERROR: " + r.Error.Error()
			}
			fmt.Fprintf(stdout, "%s: %s (%s)\n", name, status, r.Location)
			if len(r.Output) > 0 {
				fmt.Fprintf(stdout, "  output:\n%s", indent(string(r.Output), "    "))
			}
			if *verbose && len(r.Trace) > 0 {
				var b strings.Builder
				topdown.PrettyTraceWithLocation(&b, r.Trace)
				fmt.Fprint(stdout, indent(b.String(), "    "))
			}
		default:
			pass++
			if *verbose {
				fmt.Fprintf(stdout, "%s: PASS (%v)\n", name, r.Duration.Round(time.Microsecond))
			}
		}
	}
	fmt.Fprintln(stdout, strings.Repeat("-", 80))
	fmt.Fprintf(stdout, "revision %s: %d passed, %d failed", rep.Revision, pass, fail)
	if skip > 0 {
		fmt.Fprintf(stdout, ", %d skipped", skip)
	}
	fmt.Fprintln(stdout)
	code := 0
	if fail > 0 {
		code = 1
	}
	if rep.Coverage != nil {
		fmt.Fprintf(stdout, "coverage: %.1f%% of policy lines", rep.Coverage.Coverage)
		if *threshold > 0 {
			fmt.Fprintf(stdout, " (threshold %.1f%%)", *threshold)
		}
		fmt.Fprintln(stdout)
		if *verbose || (*threshold > 0 && rep.Coverage.Coverage < *threshold) {
			printNotCovered(stdout, rep)
		}
		if *threshold > 0 && rep.Coverage.Coverage < *threshold {
			fmt.Fprintf(stdout, "coverage %.1f%% is below the threshold %.1f%%\n", rep.Coverage.Coverage, *threshold)
			code = 1
		}
	}
	return code
}

func printNotCovered(w io.Writer, rep *policy.TestReport) {
	files := make([]string, 0, len(rep.Coverage.Files))
	for f := range rep.Coverage.Files {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		fr := rep.Coverage.Files[f]
		if len(fr.NotCovered) == 0 {
			continue
		}
		rows := make([]string, 0, len(fr.NotCovered))
		for _, r := range fr.NotCovered {
			if r.Start.Row == r.End.Row {
				rows = append(rows, fmt.Sprint(r.Start.Row))
			} else {
				rows = append(rows, fmt.Sprintf("%d-%d", r.Start.Row, r.End.Row))
			}
		}
		fmt.Fprintf(w, "  not covered: %s: %s\n", f, strings.Join(rows, ", "))
	}
}

func indent(s, pre string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString(pre)
			b.WriteString(l)
		}
	}
	if !strings.HasSuffix(b.String(), "\n") {
		b.WriteByte('\n')
	}
	return b.String()
}

func policyEval(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	inputPath := fs.String("input", "", "input document (JSON; see policies/README.md); - reads stdin")
	bodyPath := fs.String("body", "", "a request body instead: the input is built from it as the gateway would")
	endpoint := fs.String("endpoint", "chat", "with --body: chat, completions, embeddings or messages")
	team := fs.String("team", "", "with --body: the caller's team id")
	user := fs.String("user", "", "with --body: the caller's user id")
	alias := fs.String("key-alias", "", "with --body: the caller's key alias")
	dir := fs.String("dir", "policies", "policy directory")
	bundle := fs.String("bundle", "", "OPA bundle (.tar.gz) instead of --dir")
	explain := fs.Bool("explain", false, "print OPA's evaluation trace after the decision")
	response := fs.Bool("response", false, "evaluate the response decision (the input needs response.text)")
	timeout := fs.Duration("timeout", 5*time.Second, "evaluation deadline")
	if _, err := parseInterspersed(fs, args); err != nil {
		return 2
	}
	if (*inputPath == "") == (*bodyPath == "") {
		fmt.Fprintln(stderr, "portcullis policy eval: give --input or --body")
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	s := config.PolicySettings{Dir: *dir, Bundle: *bundle, SkipTests: true, Timeout: *timeout}
	if *bundle != "" {
		s.Dir = ""
	}
	eng, err := policy.New(s, policy.Options{})
	if err != nil {
		fmt.Fprintln(stderr, "portcullis policy eval:", err)
		return 1
	}
	defer eng.Close()
	var input ast.Value
	if *inputPath != "" {
		raw, err := readInputFile(*inputPath)
		if err != nil {
			fmt.Fprintln(stderr, "portcullis policy eval:", err)
			return 1
		}
		var doc any
		if err := util.UnmarshalJSON(raw, &doc); err != nil {
			fmt.Fprintln(stderr, "portcullis policy eval: input:", err)
			return 1
		}
		if input, err = ast.InterfaceToValue(doc); err != nil {
			fmt.Fprintln(stderr, "portcullis policy eval: input:", err)
			return 1
		}
	} else {
		raw, err := readInputFile(*bodyPath)
		if err != nil {
			fmt.Fprintln(stderr, "portcullis policy eval:", err)
			return 1
		}
		d, ok := map[string]llm.Dialect{"chat": llm.OpenAIChat, "completions": llm.OpenAICompletion,
			"embeddings": llm.OpenAIEmbedding, "messages": llm.AnthropicMessages}[*endpoint]
		if !ok || !gjson.ValidBytes(raw) {
			fmt.Fprintln(stderr, "portcullis policy eval: --endpoint must be chat, completions, embeddings or messages and --body valid JSON")
			return 2
		}
		x := pipeline.Acquire()
		defer pipeline.Release(x)
		x.Ctx, x.ID, x.Start, x.Dialect, x.Body = context.Background(), "eval", time.Now(), d, raw
		x.Model, x.Stream = gjson.GetBytes(raw, "model").Str, gjson.GetBytes(raw, "stream").Bool()
		for _, f := range []string{"max_tokens", "max_completion_tokens", "max_output_tokens"} {
			if n := int(gjson.GetBytes(raw, f).Int()); n > 0 && (x.MaxTokens == 0 || n < x.MaxTokens) {
				x.MaxTokens = n
			}
		}
		for _, t := range gjson.GetBytes(raw, "tags").Array() {
			x.Tags = append(x.Tags, t.Str)
		}
		x.TeamID, x.UserID, x.KeyAlias = *team, *user, *alias
		input = eng.Input(x)
	}
	ctx := context.Background()
	var dec policy.Decision
	var trace strings.Builder
	switch {
	case *response:
		var ok bool
		dec, ok, err = eng.EvalResponse(ctx, input)
		if err == nil && !ok {
			err = fmt.Errorf("the policies define no response decision (or response_enabled is false)")
		}
	case *explain:
		dec, err = eng.Explain(ctx, input, &trace)
	default:
		dec, err = eng.Eval(ctx, input)
	}
	if err != nil {
		fmt.Fprintln(stderr, "portcullis policy eval:", err)
		if trace.Len() > 0 {
			fmt.Fprint(stdout, trace.String())
		}
		return 1
	}
	out, _ := json.MarshalIndent(decisionJSON(dec), "", "  ")
	fmt.Fprintln(stdout, string(out))
	if *explain {
		fmt.Fprintln(stdout, "\ntrace:")
		fmt.Fprint(stdout, trace.String())
	}
	return 0
}

// decisionJSON renders a decision as the policies wrote it.
func decisionJSON(d policy.Decision) map[string]any {
	headers := map[string]string{}
	for _, h := range d.Headers {
		headers[h[0]] = h[1]
	}
	m := map[string]any{}
	if d.Mutations.Model != "" {
		m["model"] = d.Mutations.Model
	}
	if d.Mutations.MaxTokens > 0 {
		m["max_tokens"] = d.Mutations.MaxTokens
	}
	if len(d.Mutations.SetHeaders) > 0 || len(d.Mutations.RemoveHeaders) > 0 {
		set := map[string]string{}
		for _, h := range d.Mutations.SetHeaders {
			set[h[0]] = h[1]
		}
		m["headers"] = map[string]any{"set": set, "remove": d.Mutations.RemoveHeaders}
	}
	if len(d.Mutations.Redact) > 0 {
		m["redact"] = d.Mutations.Redact
	}
	reasons := d.Reasons
	if reasons == nil {
		reasons = []policy.Reason{}
	}
	tags := d.Tags
	if tags == nil {
		tags = []string{}
	}
	return map[string]any{"allow": d.Allow, "status": d.Status, "reasons": reasons, "mutations": m,
		"headers": headers, "tags": tags, "revision": d.Revision}
}

func readInputFile(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}
