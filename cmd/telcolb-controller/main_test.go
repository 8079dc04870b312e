package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFlagsAndPools(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pools.yaml")
	if err := os.WriteFile(file, []byte("pools:\n- name: n2\n  addresses: [\"10.9.0.0/29\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		pools   int
		wantErr string
	}{
		{"flags and file merge", []string{"--daemons=http://a:1", "--cidr-pools=defaultPool=10.0.0.0/24", "--cidr6-pools=defaultPool=2001:db8::/120", "--pool-file=" + file}, 2, ""},
		{"no daemons", []string{"--cidr-pools=defaultPool=10.0.0.0/24"}, 0, "--daemons or --daemon-service"},
		{"no pools", []string{"--daemon-service=kube-system/telcolb", "--enable-crds=false"}, 0, "no pools"},
		{"no flag pools with IPPool objects", []string{"--daemon-service=kube-system/telcolb"}, 0, ""},
		{"bad v4 pool", []string{"--daemons=http://a:1", "--cidr-pools=p=2001:db8::/120"}, 0, "--cidr-pools"},
		{"missing file", []string{"--daemons=http://a:1", "--pool-file=" + filepath.Join(dir, "nope")}, 0, "--pool-file"},
		{"unknown flag", []string{"--nope"}, 0, "not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parseFlags(tt.args)
			if err == nil {
				ps, perr := pools(f)
				err = perr
				if err == nil && len(ps) != tt.pools {
					t.Fatalf("pools = %+v", ps)
				}
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestSplitDaemons(t *testing.T) {
	urls, nodes := splitDaemons("http://10.0.0.1:8091, node-b=http://10.0.0.2:8091,,")
	if len(urls) != 2 || urls[0] != "http://10.0.0.1:8091" || urls[1] != "http://10.0.0.2:8091" {
		t.Fatalf("urls = %q", urls)
	}
	if len(nodes) != 1 || nodes["http://10.0.0.2:8091"] != "node-b" {
		t.Fatalf("nodes = %v", nodes)
	}
}

func TestDaemonTLSFlags(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--daemon-ca-file=" + filepath.Join(dir, "missing")}, "--daemon-ca-file"},
		{[]string{"--daemon-ca-file=" + notPEM}, "not a whole PEM certificate"},
		{[]string{"--daemon-ca-file=" + notPEM, "--daemon-insecure-skip-verify"}, "exclude each other"},
		{[]string{"--daemon-insecure-skip-verify", "--daemon-tls-server-name=x"}, ""},
	} {
		f, err := parseFlags(append([]string{"--daemons=https://a:1"}, tt.args...))
		if err != nil {
			t.Fatal(err)
		}
		hc, err := f.daemonHTTPClient()
		if tt.wantErr == "" && (err != nil || hc == nil) || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%q: %v, want %q", tt.args, err, tt.wantErr)
		}
	}
}
