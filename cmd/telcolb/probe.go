package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// `telcolb probe ready|live` is the Kubernetes probe of a daemon (exec
// probes: the API needs the bearer token, which an httpGet probe cannot
// send from a Secret). ready: GET /v1/health answers 200 (not 503
// "syncing": the node waits for its HA peers' bulk resync). live: the API
// answers /v1/health at all (200 or 503): a syncing daemon is alive.
func runProbe(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("api-address", "127.0.0.1:8091", "the daemon's API host:port; ${VAR} is expanded from the environment (exec probes get no shell)")
	tokenFile := fs.String("token-file", "", "the API bearer token file")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if len(args) == 0 || (args[0] != "ready" && args[0] != "live") {
		fmt.Fprintln(stderr, "usage: telcolb probe ready|live [--api-address=HOST:PORT] [--token-file=FILE] [--timeout=3s]")
		return 2
	}
	kind := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "telcolb probe: unexpected arguments %q\n", fs.Args())
		return 2
	}
	code, err := probeHealth(os.ExpandEnv(*addr), *tokenFile, *timeout)
	if err != nil {
		fmt.Fprintln(stderr, "telcolb probe:", err)
		return 1
	}
	switch {
	case code == http.StatusOK:
		return 0
	case code == http.StatusServiceUnavailable && kind == "live":
		return 0
	case code == http.StatusServiceUnavailable:
		fmt.Fprintln(stderr, "telcolb probe: not ready (HA resync pending)")
		return 1
	}
	fmt.Fprintf(stderr, "telcolb probe: GET /v1/health: HTTP %d\n", code)
	return 1
}

func probeHealth(addr, tokenFile string, timeout time.Duration) (int, error) {
	if addr == "" || strings.HasPrefix(addr, ":") {
		return 0, fmt.Errorf("api address %q: want host:port", addr)
	}
	var token string
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return 0, fmt.Errorf("token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/health", nil)
	if err != nil {
		return 0, fmt.Errorf("api address %q: %w", addr, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET /v1/health: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode == http.StatusUnauthorized {
		return resp.StatusCode, errors.New("GET /v1/health: 401, check --token-file")
	}
	return resp.StatusCode, nil
}
