package sink_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/pgoutbox/relay/"

// goListDeps returns, for each package matched by pattern, the packages it
// imports directly (Imports) and transitively (Deps), test files excluded.
func goListDeps(t *testing.T, pattern string) map[string]struct{ Imports, Deps []string } {
	t.Helper()
	goTool, err := exec.LookPath("go") // go test puts its own go first in PATH
	if err != nil {
		t.Fatalf("the go tool is needed to check imports: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-json=ImportPath,Imports,Deps", pattern).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pattern, err)
	}
	pkgs := map[string]struct{ Imports, Deps []string }{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct {
			ImportPath    string
			Imports, Deps []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[strings.TrimPrefix(p.ImportPath, module)] = struct{ Imports, Deps []string }{p.Imports, p.Deps}
	}
	return pkgs
}

// The folders of sink show the flow, and the imports follow it: pure
// packages touch neither PostgreSQL nor HTTP, and no stage reaches back
// upstream. A change that breaks this should change the design first.
func TestPackageLayout(t *testing.T) {
	t.Parallel()
	pkgs := goListDeps(t, "github.com/pgoutbox/relay/sink/...")
	pure := []string{"sink/policy/classify", "sink/policy/retry", "sink/policy/window", "sink/policy/backpressure", "sink/format"}
	// What each sink package may import of the module (its own
	// subpackages aside); anything else of relay is refused.
	allowed := map[string][]string{
		"sink":                     {},
		"sink/policy/classify":     {},
		"sink/policy/retry":        {},
		"sink/policy/window":       {},
		"sink/policy/backpressure": {"sink/policy/retry"},
		"sink/format":              {},
		"sink/send":                {"internal/hostaddr"}, // pure: how browsers read numeric hosts
		"sink/record":              {"sink/policy/backpressure", "sink/policy/classify"},
		"sink/dispatch": {"signer", "sink/format", "sink/policy/backpressure", "sink/policy/classify", "sink/policy/retry", "sink/policy/window", "sink/record", "sink/send",
			"internal/telemetry/eventtrace"},
		"sink/fanout": {"outbox", "sink/dispatch", "internal/telemetry/eventtrace"},
	}
	for name := range pkgs {
		if _, ok := allowed[name]; !ok {
			t.Errorf("package %s is not in this test's map of the sink: add it with what it may import", name)
		}
	}
	for name, may := range allowed {
		p, ok := pkgs[name]
		if !ok {
			t.Errorf("package %s is gone: update this test", name)
			continue
		}
		for _, imp := range p.Imports {
			if rel, ok := strings.CutPrefix(imp, module); ok && !slices.Contains(may, rel) {
				t.Errorf("%s imports %s, which it may not (it may import %v)", name, rel, may)
			}
		}
		if slices.Contains(pure, name) {
			for _, dep := range p.Deps {
				if dep == "net/http" || strings.HasPrefix(dep, "github.com/jackc/") {
					t.Errorf("%s is a pure package but depends on %s", name, dep)
				}
			}
		}
	}
	// Only the sender speaks HTTP, and it knows nothing of PostgreSQL.
	for _, dep := range pkgs["sink/send"].Deps {
		if strings.HasPrefix(dep, "github.com/jackc/") {
			t.Errorf("sink/send depends on %s", dep)
		}
	}
	// Recording is database work only.
	if slices.Contains(pkgs["sink/record"].Deps, "net/http") {
		t.Errorf("sink/record depends on net/http")
	}
}
