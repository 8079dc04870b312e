// Package agent is the command channel between a test and a VM of the VM
// lab: the guest runs Serve on a serial port (no network needed, so a test
// may cut every NIC and still collect output), the host side is a Client on
// the other end of that port (a qemu chardev socket).
//
// The protocol is one JSON object per line in each direction. The guest
// first sends a Hello; then every Request carries an ID, runs concurrently
// with the others, and gets exactly one Response with that ID. A Request
// with Cancel set kills the process of the request it names.
package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Hello is the first line the guest sends, once it is ready for requests.
type Hello struct {
	Ready bool `json:"ready"`
	// UptimeMs is the guest's uptime (kernel start to agent ready).
	UptimeMs int64  `json:"uptimeMs"`
	Kernel   string `json:"kernel"`
}

// Request asks the guest to run Argv (or, with Cancel, to kill the process
// of request ID).
type Request struct {
	ID     uint64   `json:"id"`
	Argv   []string `json:"argv,omitempty"`
	Env    []string `json:"env,omitempty"`
	Dir    string   `json:"dir,omitempty"`
	Stdin  []byte   `json:"stdin,omitempty"`
	Cancel bool     `json:"cancel,omitempty"`
}

// Response is the outcome of one Request.
type Response struct {
	ID     uint64 `json:"id"`
	Exit   int    `json:"exit"`
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	// Err says why the command could not run or was killed (Exit is -1).
	Err string `json:"err,omitempty"`
}

// maxLine bounds one protocol line (a Response carries a whole output).
const maxLine = 64 << 20

// Serve runs the guest side on rw until reading fails. hello is sent first.
func Serve(ctx context.Context, rw io.ReadWriter, hello Hello) error {
	var wmu sync.Mutex
	enc := json.NewEncoder(rw)
	send := func(v any) error {
		wmu.Lock()
		defer wmu.Unlock()
		return enc.Encode(v)
	}
	if err := send(hello); err != nil {
		return fmt.Errorf("agent: hello: %w", err)
	}
	var mu sync.Mutex
	running := map[uint64]*exec.Cmd{}
	sc := bufio.NewScanner(rw)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		// Noise before the host connected (or line discipline echo) is not
		// JSON: skip it rather than die, the host repeats nothing.
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var req Request
		if err := json.Unmarshal(line, &req); err != nil {
			_ = send(Response{ID: req.ID, Exit: -1, Err: fmt.Sprintf("bad request: %v", err)})
			continue
		}
		if req.Cancel {
			mu.Lock()
			if c := running[req.ID]; c != nil && c.Process != nil {
				_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			}
			mu.Unlock()
			continue
		}
		if len(req.Argv) == 0 {
			_ = send(Response{ID: req.ID, Exit: -1, Err: "empty argv"})
			continue
		}
		cmd := exec.CommandContext(ctx, req.Argv[0], req.Argv[1:]...)
		cmd.Env = append([]string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/root"}, req.Env...)
		cmd.Dir = req.Dir
		cmd.Stdin = bytes.NewReader(req.Stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		// Own process group, so a cancel reaches a shell's children too.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			_ = send(Response{ID: req.ID, Exit: -1, Err: err.Error()})
			continue
		}
		mu.Lock()
		running[req.ID] = cmd
		mu.Unlock()
		go func(id uint64) {
			err := cmd.Wait()
			mu.Lock()
			delete(running, id)
			mu.Unlock()
			r := Response{ID: id, Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
			var ee *exec.ExitError
			switch {
			case err == nil:
			case errors.As(err, &ee) && ee.Exited():
				r.Exit = ee.ExitCode()
			default:
				r.Exit, r.Err = -1, err.Error()
			}
			_ = send(r)
		}(req.ID)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("agent: read: %w", err)
	}
	return io.EOF
}

// Result is what a command run in the guest produced.
type Result struct {
	Exit           int
	Stdout, Stderr string
}

// Client is the host side of the channel.
type Client struct {
	rw io.ReadWriteCloser

	wmu sync.Mutex
	enc *json.Encoder

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan Response
	err     error // set once reading failed: every later call fails with it
	done    chan struct{}
}

// Dial waits for the guest's Hello on rw (a connected chardev socket) and
// returns a Client reading responses in the background.
func Dial(ctx context.Context, rw io.ReadWriteCloser) (*Client, Hello, error) {
	c := &Client{rw: rw, enc: json.NewEncoder(rw), pending: map[uint64]chan Response{}, done: make(chan struct{})}
	br := bufio.NewReaderSize(rw, 64<<10)
	helloCh := make(chan Hello, 1)
	go c.readLoop(br, helloCh)
	select {
	case h := <-helloCh:
		return c, h, nil
	case <-c.done:
		return nil, Hello{}, fmt.Errorf("agent: no hello: %w", c.err)
	case <-ctx.Done():
		_ = rw.Close()
		return nil, Hello{}, fmt.Errorf("agent: waiting for the guest's hello: %w", ctx.Err())
	}
}

func (c *Client) readLoop(br *bufio.Reader, helloCh chan<- Hello) {
	helloSeen := false
	var err error
	for {
		var line []byte
		line, err = readLine(br)
		if err != nil {
			break
		}
		line = bytes.TrimSpace(line)
		// Before the agent runs, the port may carry garbage; skip non-JSON.
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		if !helloSeen {
			var h Hello
			if json.Unmarshal(line, &h) == nil && h.Ready {
				helloSeen = true
				helloCh <- h
			}
			continue
		}
		var r Response
		if e := json.Unmarshal(line, &r); e != nil {
			err = fmt.Errorf("agent: bad response %q: %w", truncate(line), e)
			break
		}
		c.mu.Lock()
		ch := c.pending[r.ID]
		delete(c.pending, r.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
	c.mu.Lock()
	c.err = fmt.Errorf("agent: channel closed: %w", err)
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
	close(c.done)
}

func readLine(br *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		part, isPrefix, err := br.ReadLine()
		if err != nil {
			return nil, err
		}
		buf = append(buf, part...)
		if len(buf) > maxLine {
			return nil, fmt.Errorf("agent: line over %d bytes", maxLine)
		}
		if !isPrefix {
			return buf, nil
		}
	}
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// Run runs argv in the guest and returns its output and exit status. The
// error is non-nil only when the command could not be run to completion
// (channel gone, not found, killed by ctx); a non-zero exit is in Result.
func (c *Client) Run(ctx context.Context, stdin []byte, env []string, argv ...string) (Result, error) {
	ch := make(chan Response, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return Result{Exit: -1}, err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	if err := c.send(Request{ID: id, Argv: argv, Env: env, Stdin: stdin}); err != nil {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return Result{Exit: -1}, err
	}
	select {
	case r, ok := <-ch:
		if !ok {
			c.mu.Lock()
			err := c.err
			c.mu.Unlock()
			return Result{Exit: -1}, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
		}
		res := Result{Exit: r.Exit, Stdout: string(r.Stdout), Stderr: string(r.Stderr)}
		if r.Err != "" {
			return res, fmt.Errorf("guest: %s: %s", strings.Join(argv, " "), r.Err)
		}
		return res, nil
	case <-ctx.Done():
		_ = c.send(Request{ID: id, Cancel: true})
		// The killed command still answers; wait briefly so its output is
		// not lost for the caller's diagnostics.
		select {
		case r, ok := <-ch:
			if ok {
				return Result{Exit: -1, Stdout: string(r.Stdout), Stderr: string(r.Stderr)},
					fmt.Errorf("guest: %s: %w", strings.Join(argv, " "), ctx.Err())
			}
		case <-time.After(5 * time.Second):
			c.mu.Lock()
			delete(c.pending, id)
			c.mu.Unlock()
		}
		return Result{Exit: -1}, fmt.Errorf("guest: %s: %w", strings.Join(argv, " "), ctx.Err())
	}
}

func (c *Client) send(r Request) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.enc.Encode(r); err != nil {
		return fmt.Errorf("agent: send: %w", err)
	}
	return nil
}

// Close closes the channel; pending calls fail.
func (c *Client) Close() error {
	err := c.rw.Close()
	<-c.done
	return err
}
