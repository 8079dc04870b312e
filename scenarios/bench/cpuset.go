package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/telcolb/telcolb/scenarios/lab"
)

// A node of its own in a namespace lab: every namespace shares one kernel,
// so the CPU a node spends cannot be read from a process's times alone
// (its packets are handled in softirq context, charged to whatever runs).
// Giving one CPU to the node and the other to everything else makes that
// CPU's busy time the node's cost: its daemon pinned there, the receive
// side of its interfaces steered there (RPS), and every other interface's
// receive steered away, so the node's transmit hands each packet to the
// other CPU's backlog instead of running the next hop's stack itself.

// CPUBusy is the time cpu has spent not idle since boot (user, nice,
// system, irq, softirq and steal of /proc/stat). The idle time of a
// tickless CPU is accounted exactly, so the busy time is exact to the
// 10 ms unit /proc/stat prints, whatever the load.
func CPUBusy(cpu int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("bench: read /proc/stat: %w", err)
	}
	return ParseCPUBusy(string(b), cpu)
}

// ParseCPUBusy reads cpu's busy time from /proc/stat's text (USER_HZ ticks
// of 10 ms, the unit Linux prints whatever its HZ).
func ParseCPUBusy(stat string, cpu int) (time.Duration, error) {
	prefix := fmt.Sprintf("cpu%d ", cpu)
	for _, line := range strings.Split(stat, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 9 {
			return 0, fmt.Errorf("bench: /proc/stat %q: fewer than 8 counters", line)
		}
		var busy uint64
		// The most ticks a Duration holds.
		const most = uint64(math.MaxInt64 / int64(10*time.Millisecond))
		// user nice system idle iowait irq softirq steal: idle and iowait
		// are not busy.
		for i, name := range []string{"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"} {
			v, err := strconv.ParseUint(f[1+i], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("bench: /proc/stat cpu%d %s %q: %w", cpu, name, f[1+i], err)
			}
			if name != "idle" && name != "iowait" {
				if v > most-busy {
					return 0, fmt.Errorf("bench: /proc/stat cpu%d: busy ticks past %d", cpu, most)
				}
				busy += v
			}
		}
		return time.Duration(busy) * 10 * time.Millisecond, nil
	}
	return 0, fmt.Errorf("bench: no cpu%d line in /proc/stat", cpu)
}

// ProcessCPU is the CPU time pid's threads have spent, user and system
// (/proc/<pid>/stat's utime and stime, in 10 ms units): what its own code
// and system calls cost, without the softirq work CPUBusy also counts.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: read process %d's stat: %w", pid, err)
	}
	return ParseProcessCPU(string(b))
}

// ParseProcessCPU reads utime + stime from a /proc/<pid>/stat line. The
// command name (field 2) is in parentheses and may hold spaces and
// parentheses itself: the fields are counted from the last ')'.
func ParseProcessCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: process stat %.40q: no command name", stat)
	}
	// After the name: state (field 3) ... utime (14), stime (15).
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: process stat: %d fields after the command name, want 13", len(f))
	}
	const most = uint64(math.MaxInt64 / int64(10*time.Millisecond))
	var sum uint64
	for j, name := range []string{"utime", "stime"} {
		v, err := strconv.ParseUint(f[11+j], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: process stat %s %q: %w", name, f[11+j], err)
		}
		if v > most-sum {
			return 0, fmt.Errorf("bench: process stat: CPU ticks past %d", most)
		}
		sum += v
	}
	return time.Duration(sum) * 10 * time.Millisecond, nil
}

// PinProcess sets the CPU affinity of every thread of pid to cpus. Threads
// started later inherit it from the thread that starts them.
func PinProcess(pid int, cpus ...int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return fmt.Errorf("bench: threads of %d: %w", pid, err)
	}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		// A thread that exited meanwhile is no error.
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("bench: pin thread %d of %d to %v: %w", tid, pid, cpus, err)
		}
	}
	return nil
}

// Children are the processes whose parent is pid.
func Children(pid int) ([]int, error) {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, fmt.Errorf("bench: list /proc: %w", err)
	}
	var out []int
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		rest := string(b)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil && ppid == pid {
			if c, err := strconv.Atoi(filepath.Base(filepath.Dir(s))); err == nil {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// SteerReceive sets the RPS CPU mask of every receive queue of every
// interface of h: the packets its interfaces receive are then handled on
// those CPUs, whichever CPU sent them. `ip netns exec` mounts the
// namespace's own /sys.
func SteerReceive(ctx context.Context, h *lab.Host, cpus ...int) error {
	mask := 0
	for _, c := range cpus {
		mask |= 1 << c
	}
	script := fmt.Sprintf(`set -e; n=0; for q in /sys/class/net/*/queues/rx-*/rps_cpus; do echo %x > "$q"; n=$((n+1)); done; echo "$n"`, mask)
	out, err := h.Exec(ctx, "sh", "-c", script)
	if err != nil {
		return fmt.Errorf("bench: steer %s's receive to %v: %w", h.Name, cpus, err)
	}
	if strings.TrimSpace(string(out)) == "0" {
		return fmt.Errorf("bench: %s has no receive queue to steer", h.Name)
	}
	return nil
}
