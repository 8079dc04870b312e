package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProbeReadyFailsWhileSyncingLiveDoesNot: the readiness probe fails on
// the 503 of a syncing node, the liveness probe does not; both send the
// token, expand ${VAR} in the address, and fail on anything else.
func TestProbeReadyFailsWhileSyncingLiveDoesNot(t *testing.T) {
	code := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/health" || r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(code)
	}))
	defer srv.Close()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PROBE_TEST_ADDR", strings.TrimPrefix(srv.URL, "http://"))
	probe := func(kind, tokenFile string) int {
		return runProbe([]string{kind, "--api-address=${PROBE_TEST_ADDR}", "--token-file=" + tokenFile}, io.Discard)
	}
	for _, tt := range []struct {
		code                int
		token               string
		wantReady, wantLive int
	}{
		{http.StatusOK, tok, 0, 0},
		{http.StatusServiceUnavailable, tok, 1, 0},
		{http.StatusInternalServerError, tok, 1, 1},
		{http.StatusOK, "", 1, 1}, // no token: 401
	} {
		code = tt.code
		if got := probe("ready", tt.token); got != tt.wantReady {
			t.Errorf("HTTP %d token %q: probe ready exits %d, want %d", tt.code, tt.token, got, tt.wantReady)
		}
		if got := probe("live", tt.token); got != tt.wantLive {
			t.Errorf("HTTP %d token %q: probe live exits %d, want %d", tt.code, tt.token, got, tt.wantLive)
		}
	}
	if got := runProbe([]string{"started"}, io.Discard); got != 2 {
		t.Errorf("probe started: exit %d, want 2 (usage)", got)
	}
	srv.Close()
	if got := probe("live", tok); got != 1 {
		t.Errorf("daemon gone: probe live exits %d, want 1", got)
	}
}
