package server

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"runtime/trace"
	"slices"
	"strconv"
	"testing"

	xtrace "golang.org/x/exp/trace"

	"github.com/portcullis/portcullis/engine/telemetry"
)

// TestStreamMarks: with an execution trace running, a stream's request
// leaves the telemetry marks portcullis-bench -trace times its stages by,
// once each and in path order, on the goroutine that serves it.
func TestStreamMarks(t *testing.T) {
	upURL, _ := rawStreamUpstream(t)
	_, addr := benchServer(t, upURL)
	body := string(benchStreamBody)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Skip("an execution trace is already running:", err)
	}
	_, err = conn.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body))
	br := bufio.NewReader(conn)
	for err == nil {
		var l string
		if l, err = br.ReadString('\n'); l == "0\r\n" {
			break
		}
	}
	trace.Stop()
	if err != nil {
		t.Fatal(err)
	}

	r, err := xtrace.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	marks := map[xtrace.GoID][]string{}
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind() == xtrace.EventLog && ev.Log().Category == "portcullis" {
			marks[ev.Goroutine()] = append(marks[ev.Goroutine()], ev.Log().Message)
		}
	}
	want := []string{telemetry.MarkRequest, telemetry.MarkParsed, telemetry.MarkUpstreamCall, telemetry.MarkUpstreamHead,
		telemetry.MarkRouted, telemetry.MarkHandled, telemetry.MarkBody}
	if len(marks) != 1 {
		t.Fatalf("marks on %d goroutines: %v", len(marks), marks)
	}
	for _, got := range marks {
		if !slices.Equal(got, want) {
			t.Fatalf("marks %v, want %v", got, want)
		}
	}
}
