package sctplb

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/telcolb/telcolb/sctplb/transport/memory"
)

func TestAMFControlRefusesWhatItCannotDo(t *testing.T) {
	n := memory.New(memory.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	p, err := New(Config{Transport: n, Listen: ep("10.0.0.1", 38412), AMFs: []AMFEndpoint{{Name: "a", Address: ep("10.1.0.1", 38412)}}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	tests := []struct {
		name    string
		do      func() error
		wantErr string
	}{
		{"add without address", func() error { return p.AddAMF(cctx, AMFEndpoint{Name: "b"}) }, "address and port required"},
		{"add a configured name", func() error { return p.AddAMF(cctx, AMFEndpoint{Name: "a", Address: ep("10.1.0.2", 38412)}) }, "already configured"},
		{"remove unknown", func() error { return p.RemoveAMF(cctx, "zz") }, "not configured"},
		{"remove the last", func() error { return p.RemoveAMF(cctx, "a") }, "last one"},
		{"add", func() error { return p.AddAMF(cctx, AMFEndpoint{Name: "b", Address: ep("10.1.0.2", 38412)}) }, ""},
		{"remove", func() error { return p.RemoveAMF(cctx, "a") }, ""},
		{"remove again", func() error { return p.RemoveAMF(cctx, "a") }, "not configured"},
	}
	for _, tt := range tests {
		err := tt.do()
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.wantErr)
		}
	}
	if got := p.Stats().AMFs; len(got) != 1 || got[0].Name != "b" {
		t.Errorf("Stats().AMFs = %+v, want only b", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := p.AddAMF(cctx, AMFEndpoint{Name: "c", Address: ep("10.1.0.3", 38412)}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("AddAMF after Run = %v, want ErrNotRunning", err)
	}
}
