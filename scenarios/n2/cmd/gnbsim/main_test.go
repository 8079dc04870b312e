package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestBadFlagsExitTwoWithTheReason(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--connect", "nowhere"}, "--connect"},
		{[]string{"--connect", "10.0.0.1:38412", "--bind", "x"}, "--bind"},
		{[]string{"--connect", "10.0.0.1:38412", "--gnb-id", "4194304"}, "--gnb-id < 2^22"},
		{[]string{"--connect", "10.0.0.1:38412", "--bench", "speed"}, `--bench "speed"`},
		{[]string{"--connect", "10.0.0.1:38412", "--resume", "--bench", "latency"}, "exclude each other"},
		{[]string{"--connect", "10.0.0.1:38412", "--heartbeat", "-1s"}, "--heartbeat"},
		{[]string{"--bogus"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		if code := run(tt.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("run(%q) = %d, stderr %q; want 2 mentioning %q", tt.args, code, errb.String(), tt.want)
		}
	}
}
