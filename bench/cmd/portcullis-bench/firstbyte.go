package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/exp/trace"

	"github.com/portcullis/portcullis/engine/telemetry"
)

// A stream's first byte, stage by stage, inside one hop: -trace takes a Go
// execution trace of the bare hop and of the gateway during one (c) round
// each, and times, for every stream, the path from the hop's read of the
// request to its first write of the response. The goroutine that serves a
// client connection does all of it; its system calls, its wake-ups and the
// hops' telemetry.Mark events in the trace give the points:
//
//	read           the server's read of a request head begins (fasthttp's Peek)
//	request        telemetry.MarkRequest: the handler has the request
//	parsed, upstream-call (the gateway's marks)
//	sent           the write of the request to the upstream begins (fasthttp's
//	               client in the bare hop, engine/provider's in the gateway)
//	woken          the last wake-up before the response's first write: the
//	               upstream's answer (or the rest of it) has arrived
//	upstream-head  telemetry.MarkUpstreamHead
//	routed, handled, body (the gateway's marks)
//	written        the response's first write begins
//
// sent → woken is the wait for the upstream, off the hop's CPU; the rest is
// the hop's own path, with the machine's contention in it: on this kind of
// shared 2-core VM a stage runs several times slower than in a
// micro-benchmark, whose caches stay warm. Unlike TTFB, whose p50 moves by
// ±100 µs from run to run here, a stage's p25 and p50 repeat within a few
// µs in adjacent runs on a calm machine, so a change to one stage shows.

// stagePoints are the points in path order; a hop has a subset.
var stagePoints = []string{"read", telemetry.MarkRequest, telemetry.MarkParsed, telemetry.MarkUpstreamCall, "sent", "woken",
	telemetry.MarkUpstreamHead, telemetry.MarkRouted, telemetry.MarkHandled, telemetry.MarkBody, "written"}

// firstBytePaths is the result of one trace: per stream, the time of each
// point it has (ns since the trace's start; -1 = absent), in stagePoints'
// order.
type firstBytePaths struct {
	streams [][]int64
}

// readFirstBytePaths reads an execution trace.
func readFirstBytePaths(r io.Reader) (*firstBytePaths, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, err
	}
	idx := map[string]int{}
	for i, p := range stagePoints {
		idx[p] = i
	}
	sent, woken, written := idx["sent"], idx["woken"], idx["written"]
	out := &firstBytePaths{}
	cur := map[trace.GoID][]int64{}   // each goroutine's stream in progress
	running := map[trace.GoID]int64{} // each goroutine's last wake-up
	for {
		ev, err := tr.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			// A trace cut short (the process killed while writing it)
			// still gives the streams read so far.
			if len(out.streams) > 0 {
				break
			}
			return nil, err
		}
		t := int64(ev.Time())
		switch ev.Kind() {
		case trace.EventLog:
			lg := ev.Log()
			if at := cur[ev.Goroutine()]; at != nil && lg.Category == "portcullis" {
				if i, ok := idx[lg.Message]; ok && at[i] < 0 {
					at[i] = t
				}
			}
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			g := st.Resource.Goroutine()
			from, to := st.Goroutine()
			switch {
			case to == trace.GoRunning && from != trace.GoSyscall:
				running[g] = t
			case from == trace.GoRunning && to == trace.GoSyscall:
				stk := ev.Stack()
				switch syscallName(stk) {
				case "syscall.read":
					if stackHas(stk, "bufio.(*Reader).Peek") && stackHas(stk, "fasthttp.(*Server).serveConnCounted") && !stackHas(stk, "HostClient") {
						at := make([]int64, len(stagePoints))
						for i := range at {
							at[i] = -1
						}
						at[0] = t
						cur[g] = at
					}
				case "syscall.write":
					at := cur[g]
					if at == nil {
						continue
					}
					if at[sent] < 0 {
						if stackHas(stk, "HostClient).doNonNilReqResp") || stackHas(stk, "provider.(*hostConn).send") {
							at[sent] = t
						}
					} else if stackHas(stk, "fasthttp.(*Server).serveConnCounted") {
						at[woken] = running[g]
						at[written] = t
						out.streams = append(out.streams, at)
						delete(cur, g)
					}
				}
			}
		}
	}
	return out, nil
}

func syscallName(s trace.Stack) string {
	for f := range s.Frames() {
		return f.Func
	}
	return ""
}

func stackHas(s trace.Stack, sub string) bool {
	for f := range s.Frames() {
		if strings.Contains(f.Func, sub) {
			return true
		}
	}
	return false
}

// stageRow is one stage's quantiles over the streams that have both points.
type stageRow struct {
	from, to      string
	n             int
	p25, p50, p75 time.Duration
}

// stages returns the consecutive stages the streams have, then the two
// totals every hop has: read → sent (the request's way through) and woken
// → written (the response's).
func (fp *firstBytePaths) stages() []stageRow {
	present := make([]bool, len(stagePoints))
	for _, s := range fp.streams {
		for i, v := range s {
			if v >= 0 {
				present[i] = true
			}
		}
	}
	var pts []int
	for i, ok := range present {
		if ok {
			pts = append(pts, i)
		}
	}
	var rows []stageRow
	for k := 1; k < len(pts); k++ {
		rows = append(rows, fp.row(pts[k-1], pts[k]))
	}
	rows = append(rows, fp.row(0, 4), fp.row(5, len(stagePoints)-1))
	return rows
}

func (fp *firstBytePaths) row(a, b int) stageRow {
	var d []time.Duration
	for _, s := range fp.streams {
		if s[a] >= 0 && s[b] >= s[a] {
			d = append(d, time.Duration(s[b]-s[a]))
		}
	}
	r := stageRow{from: stagePoints[a], to: stagePoints[b], n: len(d)}
	if len(d) > 0 {
		slices.Sort(d)
		q := func(p float64) time.Duration { return d[int(p*float64(len(d)-1))] }
		r.p25, r.p50, r.p75 = q(.25), q(.5), q(.75)
	}
	return r
}

// String is the log's table: one line per stage.
func (r stageRow) String() string {
	return fmt.Sprintf("%-14s → %-14s p25 %8s  p50 %8s  p75 %8s  (%d streams)", r.from, r.to, us(int64(r.p25)), us(int64(r.p50)), us(int64(r.p75)), r.n)
}

// startTrace asks t's process for an execution trace of the next round
// (warm-up and measurement) and returns the function that waits for it,
// saves it as trace-<key>.trace in the output directory and logs the
// stages of its streams' first bytes (nil if the trace failed).
func (b *bench) startTrace(t *target) func() []stageRow {
	secs := (b.m.warmup + b.m.stDur).Seconds()
	type got struct {
		body []byte
		err  error
	}
	ch := make(chan got, 1)
	go func() {
		cl := &http.Client{Timeout: time.Duration(secs*float64(time.Second)) + 30*time.Second}
		resp, err := cl.Get(fmt.Sprintf("http://%s/debug/pprof/trace?seconds=%.2f", t.traceAddr, secs))
		if err != nil {
			ch <- got{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
		}
		ch <- got{body, err}
	}()
	// The trace starts with the request: give it a moment before the load.
	time.Sleep(50 * time.Millisecond)
	return func() []stageRow {
		g := <-ch
		if g.err != nil {
			b.log("  -trace %s: %v", t.name, g.err)
			return nil
		}
		f := filepath.Join(b.out, "trace-"+t.key+".trace")
		if err := os.WriteFile(f, g.body, 0o644); err != nil {
			b.log("  -trace %s: %v", t.name, err)
		}
		fp, err := readFirstBytePaths(bytes.NewReader(g.body))
		if err != nil {
			b.log("  -trace %s: %v", t.name, err)
			return nil
		}
		b.log("  -trace %s: a stream's first byte inside the hop, %d streams (trace: %s; go tool trace shows it)", t.name, len(fp.streams), f)
		rows := fp.stages()
		for _, r := range rows {
			b.log("    %s", r)
		}
		return rows
	}
}

// logStageDiff logs b's stage p25 and p50 against a's, stage by stage
// (-trace with -against: the two builds traced in the same round).
func (b *bench) logStageDiff(na, nb string, a, rb []stageRow) {
	if a == nil || rb == nil {
		return
	}
	b.log("  -trace: %s minus %s, same round", nb, na)
	for _, y := range rb {
		for _, x := range a {
			if x.from == y.from && x.to == y.to {
				b.log("    %-14s → %-14s p25 %+7.1f µs  p50 %+7.1f µs", y.from, y.to, float64(y.p25-x.p25)/1e3, float64(y.p50-x.p50)/1e3)
			}
		}
	}
}
