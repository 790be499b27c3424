package main

import (
	"bufio"
	"bytes"
	"net"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/bench/internal/barehop"
	"github.com/portcullis/portcullis/bench/internal/upstream"
)

// TestFirstBytePaths streams through a real bare hop on loopback while the
// test writes an execution trace, and reads each stream's path back from it.
func TestFirstBytePaths(t *testing.T) {
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upLn.Close()
	go func() { _ = upstream.Server(upstream.Config{Chunks: 3, Gap: time.Millisecond}).Serve(upLn) }()
	hopLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hopLn.Close()
	go func() { _ = barehop.New(upLn.Addr().String()).Serve(hopLn) }()

	conn, err := net.Dial("tcp", hopLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"model":"bench","messages":[],"stream":true}`
	req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: hop\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	br := bufio.NewReader(conn)
	const streams = 20
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Skip("an execution trace is already running:", err)
	}
	for i := 0; i < streams; i++ {
		if _, err := conn.Write(req); err != nil {
			trace.Stop()
			t.Fatal(err)
		}
		// The chunked body ends with its zero-size chunk.
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				trace.Stop()
				t.Fatal(err)
			}
			if l == "0\r\n" {
				_, _ = br.ReadString('\n')
				break
			}
		}
	}
	trace.Stop()

	fp, err := readFirstBytePaths(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(fp.streams) != streams {
		t.Fatalf("%d streams read from the trace, want %d", len(fp.streams), streams)
	}
	// The bare hop has read, request, sent, woken, upstream-head, written,
	// in that order; the gateway's own marks are absent.
	want := []string{"read", "request", "sent", "woken", "upstream-head", "written"}
	for _, s := range fp.streams {
		var last int64
		for i, p := range stagePoints {
			has := s[i] >= 0
			if has != slices.Contains(want, p) {
				t.Fatalf("point %s present %v in %v", p, has, s)
			}
			if has && p != "woken" {
				if s[i] < last {
					t.Fatalf("point %s at %d before the previous one (%d): %v", p, s[i], last, s)
				}
				last = s[i]
			}
		}
	}
	var got []string
	for _, r := range fp.stages() {
		got = append(got, r.from+">"+r.to)
		if r.from != "sent" && (r.n != streams || r.p50 <= 0 || r.p25 > r.p50 || r.p50 > r.p75) {
			t.Errorf("%s", r)
		}
	}
	if s := strings.Join(got, " "); s != "read>request request>sent sent>woken woken>upstream-head upstream-head>written read>sent woken>written" {
		t.Fatalf("stages %s", s)
	}
}
