// Command telcolbctl drives the telcolb daemon's REST API:
//
//	telcolbctl [--server URL] [--token T | --token-file F] [-o table|wide|json] <verb> <resource> ...
//
// Verbs: create lb, apply -f, get lb|ct|ep, delete lb|ct, health.
package main

import (
	"os"

	"github.com/telcolb/telcolb/api"
)

func main() {
	os.Exit(run(os.Args[1:], env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv,
		defaultTokenFile: api.DefaultTokenFile}))
}
