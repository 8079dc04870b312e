// Command telcolb-vmagent is the guest side of the VM lab's command channel
// (scenarios/vm/agent): the initramfs's /init execs it once modules are
// loaded; it runs the host's commands and answers on a serial port.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/telcolb/telcolb/scenarios/vm/agent"
)

func main() {
	port := flag.String("port", "/dev/ttyS1", "serial port shared with the host")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	f, err := os.OpenFile(*port, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		log.Error("open port", "port", *port, "err", err)
		os.Exit(1)
	}
	if err := makeRaw(int(f.Fd())); err != nil {
		log.Error("raw mode", "port", *port, "err", err)
		os.Exit(1)
	}
	hello := agent.Hello{Ready: true, UptimeMs: uptimeMs(), Kernel: release()}
	err = agent.Serve(context.Background(), f, hello)
	log.Error("agent stopped", "err", err)
	os.Exit(1)
}

// makeRaw turns off every line-discipline transformation (echo, CR/LF
// mapping, signals): the channel carries JSON lines byte for byte.
func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("tcgets: %w", err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CBAUD
	t.Cflag |= unix.CS8 | unix.CLOCAL | unix.CREAD | unix.B115200
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("tcsets: %w", err)
	}
	return nil
}

func uptimeMs() int64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	s, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return int64(s * 1000)
}

func release() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
