package l4

import (
	"strings"
	"testing"
)

// A dump as the Go runtime prints it at SIGQUIT (shortened), after some
// log lines: three goroutines in two kinds, counted by their first telcolb
// frame, the runtime's own frames skipped, durations and arguments dropped.
const sigquitOutput = `time=2026-12-05T05:20:00Z level=INFO msg="shutting down"
SIGQUIT: quit
PC=0x47a1c1 m=0 sigcode=0

goroutine 0 gp=0x1 m=0 mp=0x2 [idle]:
runtime.futex(0x1, 0x80, 0x0)
	/usr/lib/go/src/runtime/sys_linux_amd64.s:557 +0x21

goroutine 1 gp=0xc000002380 m=nil [chan receive, 3 minutes]:
runtime.gopark(0x1?, 0x2?, 0x3?, 0x4?, 0x5?)
	/usr/lib/go/src/runtime/proc.go:435 +0xce
github.com/telcolb/telcolb/sctplb.(*Proxy).Close(0xc0001)
	/src/sctplb/proxy.go:210 +0x45
main.main()
	/src/cmd/telcolb/main.go:40 +0x99

goroutine 17 gp=0xc000003 m=nil [chan receive]:
runtime.gopark(0x1?, 0x2?, 0x3?, 0x4?, 0x5?)
	/usr/lib/go/src/runtime/proc.go:435 +0xce
github.com/telcolb/telcolb/sctplb.(*Proxy).Close(0xc0002)
	/src/sctplb/proxy.go:210 +0x45
created by github.com/telcolb/telcolb/cmd/telcolb/app.(*proxyManager).stop in goroutine 1
	/src/cmd/telcolb/app/proxymanager.go:90 +0x11

goroutine 20 gp=0xc000004 m=nil [select]:
runtime.gopark(0x1?, 0x2?, 0x3?, 0x4?, 0x5?)
	/usr/lib/go/src/runtime/proc.go:435 +0xce
net/http.(*Server).Serve(0xc0003, {0x1, 0x2})
	/usr/lib/go/src/net/http/server.go:3360 +0x30

rax    0xca
rip    0x47a1c1
`

func TestGoroutineSummary(t *testing.T) {
	got := GoroutineSummary(sigquitOutput, 10)
	want := []string{
		"   2 [chan receive] github.com/telcolb/telcolb/sctplb.(*Proxy).Close",
		"   1 [idle] runtime.futex",
		"   1 [select] net/http.(*Server).Serve",
	}
	if got != strings.Join(want, "\n")+"\n" {
		t.Errorf("summary:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if s := GoroutineSummary(sigquitOutput, 1); !strings.Contains(s, "... 2 kinds more") {
		t.Errorf("summary bounded to 1 kind:\n%s", s)
	}
	if s := GoroutineSummary("no dump here\n", 10); s != "" {
		t.Errorf("summary of output without a dump: %q", s)
	}
}
