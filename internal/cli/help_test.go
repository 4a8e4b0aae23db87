package cli_test

import (
	"regexp"
	"strings"
	"testing"
)

// TestHelpIsAligned checks that relay --help lists the commands in one
// aligned column and hides the internal helper processes.
func TestHelpIsAligned(t *testing.T) {
	t.Parallel()
	code, out, _ := runCLI(t, nil, "--help")
	if code != 0 {
		t.Fatalf("relay --help: exit %d", code)
	}
	_, list, ok := strings.Cut(out, "Commands:\n")
	if !ok {
		t.Fatalf("no command list:\n%s", out)
	}
	list, _, _ = strings.Cut(list, "\n\n")
	line := regexp.MustCompile(`^  (\S+)( +)(\S.*)$`)
	col := -1
	n := 0
	for _, l := range strings.Split(list, "\n") {
		m := line.FindStringSubmatchIndex(l)
		if m == nil {
			t.Fatalf("line %q is not 'name  summary'", l)
		}
		if start := m[6]; col < 0 {
			col = start
		} else if start != col {
			t.Errorf("summary of %q starts at column %d, others at %d:\n%s", l[m[2]:m[3]], start, col, list)
		}
		if strings.HasPrefix(l[m[6]:], "internal:") {
			t.Errorf("internal command listed: %q", l)
		}
		n++
	}
	if n < 10 || !strings.Contains(list, "  run ") || !strings.Contains(list, "  tokens ") {
		t.Errorf("command list looks incomplete:\n%s", list)
	}
}
