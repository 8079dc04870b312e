// Command gen writes telcolb's dashboards, alert rules and monitoring
// manifests (package monitoring) under the module root.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/telcolb/telcolb/monitoring"
	"github.com/telcolb/telcolb/monitoring/metricsdoc"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := metricsdoc.ModuleRoot(".")
	if err != nil {
		return err
	}
	files, err := monitoring.Files()
	if err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(root, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[n], 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", n)
	}
	return nil
}
