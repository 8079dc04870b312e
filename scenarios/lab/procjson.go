package lab

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
)

// LastJSON decodes into v the last line of p's stdout that carries
// "event":event: the simulators report their state as JSON lines, and the
// last one of a kind is the current one.
func (p *Proc) LastJSON(event string, v any) error {
	var found string
	sc := bufio.NewScanner(strings.NewReader(p.Stdout()))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"event":"`+event+`"`) {
			found = sc.Text()
		}
	}
	if found == "" {
		return fmt.Errorf("no %s line; stdout:\n%s\nstderr:\n%s", event, p.Stdout(), p.Stderr())
	}
	if err := json.Unmarshal([]byte(found), v); err != nil {
		return fmt.Errorf("%s line: %w", event, err)
	}
	return nil
}
