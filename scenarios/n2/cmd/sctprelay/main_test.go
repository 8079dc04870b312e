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
		{[]string{"--listen", "nowhere", "--upstream", "10.0.0.1:1"}, "--listen"},
		{[]string{"--listen", "10.0.0.1:38412", "--upstream", ":38412"}, "--upstream"},
		{[]string{"--bogus"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		if code := run(tt.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("run(%q) = %d, stderr %q; want 2 mentioning %q", tt.args, code, errb.String(), tt.want)
		}
	}
}
