package deploy_test

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgoutbox/relay/internal/pgcluster"
	"github.com/pgoutbox/relay/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// repoRoot is the module's root, where the Dockerfile and Makefile are.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// podmanRun are the options that let podman run a container on these
// machines: runc (crun refuses their cgroup layout), the host's network
// (the test's PostgreSQL and receiver listen on 127.0.0.1) and ulimits
// within what the machine permits.
var podmanRun = []string{"run", "--rm", "--runtime", "runc", "--network", "host",
	"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"}

// TestContainerImage builds the image with `make image` (the static binary
// of `make build`, FROM scratch) and checks what it holds; then, where a
// container runtime works, runs it against the test PostgreSQL on the host
// network and sees an event delivered. It builds once for the whole test.
func TestContainerImage(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed (scripts/install-deps.sh installs it: apt-get install -y podman runc): image build and run skipped")
	}
	root := repoRoot(t)
	tag := fmt.Sprintf("localhost/relay-test:%d", os.Getpid())
	stage := t.TempDir()
	build := exec.Command("make", "-s", "image", "IMAGE="+tag)
	build.Dir = root
	build.Env = append(os.Environ(), "IMAGE_STAGE="+stage, "CONTAINER_ENGINE=podman")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("podman", "rmi", "-f", tag).Run() })

	// The binary is static and the image is what the Dockerfile says.
	f, err := elf.Open(filepath.Join(stage, "relay"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the image's relay binary asks for a dynamic loader; scratch has none")
		}
	}
	f.Close()
	for _, name := range []string{"ca-certificates.crt", "passwd", "group"} {
		if st, err := os.Stat(filepath.Join(stage, name)); err != nil || st.Size() == 0 {
			t.Fatalf("build context lacks %s: %v", name, err)
		}
	}
	out, err := exec.Command("podman", "image", "inspect", tag).Output()
	if err != nil {
		t.Fatalf("podman image inspect: %v", err)
	}
	var inspect []struct {
		Size   int64
		Config struct {
			User       string
			Entrypoint []string
			Cmd        []string
		}
		RootFS struct{ Layers []string }
	}
	if err := json.Unmarshal(out, &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("inspect: %v %s", err, out)
	}
	img := inspect[0]
	if img.Config.User != "65532:65532" || strings.Join(img.Config.Entrypoint, " ") != "/relay run" {
		t.Fatalf("image config: user %q, entrypoint %q", img.Config.User, img.Config.Entrypoint)
	}
	t.Logf("image %s: %.1f MB, %d layers, user %s, entrypoint %v", tag, float64(img.Size)/1e6, len(img.RootFS.Layers), img.Config.User, img.Config.Entrypoint)

	// Can a container run here at all? relay version is the probe.
	version, err := exec.Command("podman", append(append([]string{}, podmanRun...), "--entrypoint", "/relay", tag, "version")...).CombinedOutput()
	if err != nil {
		t.Skipf("the image was built and checked, but no container runtime can run it on this machine, so the run is skipped: %v\n%s", err, version)
	}
	if !strings.HasPrefix(string(version), "relay ") || !strings.Contains(string(version), "go1.") {
		t.Fatalf("relay version in the container: %q", version)
	}
	if st, err := os.Stat(filepath.Join(root, ".git")); err == nil && st.IsDir() {
		// A plain checkout (not a worktree, which the toolchain does not
		// stamp): the commit must come through.
		head, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
		if err == nil && !strings.Contains(string(version), strings.TrimSpace(string(head))) {
			t.Errorf("relay version %q does not name commit %s", version, head)
		}
	}
	t.Logf("in the container: %s", strings.TrimSpace(string(version)))

	runDelivers(t, tag)
}

// runDelivers runs the image as the sidecar against the test database and
// receiver on the host network, with a delivery window in a time zone the
// image can only know from the binary's embedded zone database.
func runDelivers(t *testing.T, tag string) {
	db := pgtest.NewDB(t)
	var mu sync.Mutex
	var userAgent string
	got := make(chan string, 10)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		userAgent = r.Header.Get("User-Agent")
		mu.Unlock()
		got <- r.Header.Get("webhook-id")
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	db.Exec(t, `UPDATE relay.settings SET allow_http = true, window_time_zone = 'Asia/Kathmandu',
		window_start = (now() AT TIME ZONE 'Asia/Kathmandu')::time - interval '1 hour',
		window_end = (now() AT TIME ZONE 'Asia/Kathmandu')::time + interval '1 hour'`)
	db.Exec(t, `INSERT INTO relay.subscriptions (name, url, event_types) VALUES ('container', $1, '{*}')`, recv.URL)
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("relay-test-%d", os.Getpid())
	args := append(append([]string{}, podmanRun...), "--name", name,
		"-e", "RELAY_DATABASE_URL="+db.URL, "-e", "RELAY_SLOT="+db.Name,
		"-e", fmt.Sprintf("RELAY_ADMIN_ADDR=127.0.0.1:%d", port), "-e", "RELAY_ALLOW_CIDRS=127.0.0.0/8",
		"-e", "RELAY_LOG_FORMAT=json", tag)
	cmd := exec.Command("podman", args...)
	var logs bytes.Buffer
	var logMu sync.Mutex
	cmd.Stdout = lockedWriter{&logMu, &logs}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = exec.Command("podman", "rm", "-f", name).Run() })
	dump := func() string { logMu.Lock(); defer logMu.Unlock(); return logs.String() }

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("container exited (%v) before it was ready:\n%s", err, dump())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("container not ready within 60s:\n%s", dump())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var eventID string
	if err := db.Pool.QueryRow(context.Background(), `SELECT relay.emit('container.check', '{"from": "the image"}')::text`).Scan(&eventID); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-got:
		if id != eventID {
			t.Fatalf("receiver got %s, want %s", id, eventID)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("event not delivered within 30s by the container:\n%s", dump())
	}
	mu.Lock()
	ua := userAgent
	mu.Unlock()
	if !strings.HasPrefix(ua, "relay/") {
		t.Errorf("User-Agent %q", ua)
	}

	// podman stop sends SIGTERM: relay stops gracefully and exits 0.
	if out, err := exec.Command("podman", "stop", "-t", "30", name).CombinedOutput(); err != nil {
		t.Fatalf("podman stop: %v %s", err, out)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("container exit after SIGTERM: %v\n%s", err, dump())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("container still running after podman stop:\n%s", dump())
	}
	if !strings.Contains(dump(), "relay stopped") {
		t.Errorf("no graceful stop in the container's log:\n%s", dump())
	}
	t.Logf("delivered %s from the container (User-Agent %q)", eventID, ua)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
