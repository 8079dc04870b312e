package app

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestProfilingServesTheRuntimeProfiles: on its loopback listener the
// daemon serves Go's profile index and each profile (the allocations one
// in pprof's gzipped protobuf, what `go tool pprof` reads); it stops
// serving when its context ends.
func TestProfilingServesTheRuntimeProfiles(t *testing.T) {
	ln, err := ListenProfiling("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ServeProfiling(ctx, ln, testLogger(t))
	base := "http://" + ln.Addr().String()
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	if code, b := get("/debug/pprof/"); code != http.StatusOK || !bytes.Contains(b, []byte("allocs")) || !bytes.Contains(b, []byte("goroutine")) {
		t.Fatalf("index: %d %.200q, want 200 listing allocs and goroutine", code, b)
	}
	if code, b := get("/debug/pprof/allocs"); code != http.StatusOK || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("allocs: %d, %d bytes starting %x, want 200 and a gzipped profile", code, len(b), b[:min(len(b), 4)])
	}
	if code, b := get("/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(string(b), "ServeProfiling") {
		t.Fatalf("goroutines: %d, want 200 naming the profiling server's own goroutine", code)
	}
	if code, _ := get("/debug/pprof/nothing-of-the-kind"); code != http.StatusNotFound {
		t.Fatalf("unknown profile: %d, want 404", code)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(base + "/debug/pprof/")
		if err != nil {
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("still serving profiles after its context ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestProfilingOnlyOnLoopback: the profiles carry no token, so an address
// off loopback is refused, naming the setting.
func TestProfilingOnlyOnLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:6060", "[::]:6060", "192.0.2.1:6060", ":6060", "node1:6060"} {
		if ln, err := ListenProfiling(addr); err == nil || !strings.Contains(err.Error(), "profiling-address") || !strings.Contains(err.Error(), "loopback") {
			if ln != nil {
				ln.Close()
			}
			t.Errorf("ListenProfiling(%q) = %v, want a refusal naming profiling-address and loopback", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0"} {
		ln, err := ListenProfiling(addr)
		if err != nil {
			t.Errorf("ListenProfiling(%q): %v", addr, err)
			continue
		}
		ln.Close()
	}
}
