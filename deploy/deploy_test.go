// Package deploy_test checks the deployment examples of deploy/ offline:
// each manifest decodes strictly (an unknown or misspelled field fails),
// names only settings relay really has, and fits the pieces it wires
// together; the systemd unit passes systemd-analyze verify and the alert
// rules pass promtool check and unit tests. image_test.go builds and runs
// the container image.
package deploy_test

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/pgoutbox/relay/internal/cli"
	"github.com/pgoutbox/relay/signer"
)

var envName = regexp.MustCompile(`env (RELAY_[A-Z_]+)`)

// relayEnv is the set of RELAY_* variables a relay command reads, taken
// from its --help, so an example cannot name a variable relay ignores.
func relayEnv(t *testing.T, command string) map[string]bool {
	t.Helper()
	var help bytes.Buffer
	c := &cli.CLI{Stdout: &help, Stderr: &help, Getenv: func(string) string { return "" }}
	if err := c.Run(context.Background(), []string{command, "--help"}); err != nil {
		t.Fatalf("relay %s --help: %v", command, err)
	}
	names := map[string]bool{}
	for _, m := range envName.FindAllStringSubmatch(help.String(), -1) {
		names[m[1]] = true
	}
	if len(names) < 2 {
		t.Fatalf("relay %s --help names only %v", command, names)
	}
	return names
}

func checkEnvNames(t *testing.T, where string, env map[string]string, known map[string]bool) {
	t.Helper()
	for k := range env {
		if !known[k] {
			t.Errorf("%s sets %s, which relay does not read", where, k)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// composeFile is the part of the Compose specification compose.yaml uses;
// decoding strictly into it fails on any other (or misspelled) key.
type composeFile struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]struct{}       `json:"volumes"`
}

type composeService struct {
	Image       string            `json:"image"`
	Command     []string          `json:"command"`
	Entrypoint  []string          `json:"entrypoint"`
	Environment map[string]string `json:"environment"`
	DependsOn   []string          `json:"depends_on"`
	Ports       []string          `json:"ports"`
	Volumes     []string          `json:"volumes"`
	Restart     string            `json:"restart"`
}

func TestComposeFile(t *testing.T) {
	var f composeFile
	if err := yaml.UnmarshalStrict(readFile(t, "compose.yaml"), &f); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	pg, relay, recv, sub := f.Services["postgres"], f.Services["relay"], f.Services["receiver"], f.Services["subscribe"]
	if pg.Image == "" || relay.Image == "" || recv.Image == "" || sub.Image == "" {
		t.Fatalf("services postgres, relay, subscribe and receiver are all needed: %+v", f.Services)
	}
	for name, s := range f.Services {
		for _, d := range s.DependsOn {
			if _, ok := f.Services[d]; !ok {
				t.Errorf("%s depends on unknown service %s", name, d)
			}
		}
		for _, v := range s.Volumes {
			if _, ok := f.Volumes[strings.SplitN(v, ":", 2)[0]]; !ok {
				t.Errorf("%s mounts undeclared volume %s", name, v)
			}
		}
	}

	// PostgreSQL runs with logical decoding.
	cmd := strings.Join(pg.Command, " ")
	for _, want := range []string{"wal_level=logical", "max_replication_slots=", "max_wal_senders="} {
		if !strings.Contains(cmd, want) {
			t.Errorf("postgres command %q lacks %s", cmd, want)
		}
	}

	// relay: the image make builds, real variables, a URL to that server.
	makefile := string(readFile(t, "../Makefile"))
	if !strings.Contains(makefile, "IMAGE   ?= "+relay.Image) || recv.Image != relay.Image {
		t.Errorf("relay and receiver run image %q/%q; make image builds the Makefile's IMAGE", relay.Image, recv.Image)
	}
	checkEnvNames(t, "compose relay", relay.Environment, relayEnv(t, "run"))
	u, err := url.Parse(relay.Environment["RELAY_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	if _, ok := f.Services[u.Hostname()]; !ok || u.Port() != "5432" || u.User.Username() != pg.Environment["POSTGRES_USER"] ||
		pw != pg.Environment["POSTGRES_PASSWORD"] || strings.TrimPrefix(u.Path, "/") != pg.Environment["POSTGRES_DB"] {
		t.Errorf("RELAY_DATABASE_URL %s does not match the postgres service %+v", u.Redacted(), pg.Environment)
	}
	if host, _, err := net.SplitHostPort(relay.Environment["RELAY_ADMIN_ADDR"]); err != nil || host != "0.0.0.0" {
		t.Errorf("RELAY_ADMIN_ADDR %q: the published port needs 0.0.0.0", relay.Environment["RELAY_ADMIN_ADDR"])
	}
	if len(relay.Environment["RELAY_ADMIN_TOKEN"]) < 16 {
		t.Error("RELAY_ADMIN_TOKEN shorter than the 16 characters relay asks for")
	}
	for _, c := range strings.Split(relay.Environment["RELAY_ALLOW_CIDRS"], ",") {
		if _, err := netip.ParsePrefix(c); err != nil {
			t.Errorf("RELAY_ALLOW_CIDRS: %v", err)
		}
	}

	// The receiver is relay receive; the subscription points at it with
	// the secret it verifies.
	if strings.Join(recv.Entrypoint, " ") != "/relay receive" {
		t.Errorf("receiver entrypoint %q", recv.Entrypoint)
	}
	checkEnvNames(t, "compose receiver", recv.Environment, relayEnv(t, "receive"))
	secret := recv.Environment["RELAY_RECEIVER_SECRET"]
	if _, err := signer.ParseSecret(secret); err != nil {
		t.Errorf("receiver secret: %v", err)
	}
	_, port, _ := net.SplitHostPort(recv.Environment["RELAY_RECEIVER_ADDR"])
	script := strings.Join(sub.Command, "\n")
	for _, want := range []string{"'http://receiver:" + port + "/hook'", "'" + secret + "'", "allow_http = true"} {
		if !strings.Contains(script, want) {
			t.Errorf("subscribe script lacks %s", want)
		}
	}
	if sub.Environment["PGHOST"] != u.Hostname() || sub.Environment["PGPASSWORD"] != pw {
		t.Errorf("subscribe connects elsewhere than relay: %v", sub.Environment)
	}
}

// kubeObjects decodes a multi-document manifest strictly into the
// k8s.io/api types its kinds name.
func kubeObjects(t *testing.T, path string) (secrets map[string]*corev1.Secret, deploys []*appsv1.Deployment, services []*corev1.Service) {
	t.Helper()
	secrets = map[string]*corev1.Secret{}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(readFile(t, path)), -1) {
		var meta struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("%s document %d: %v", path, i, err)
		}
		decode := func(obj any) {
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s document %d (%s): %v", path, i, meta.Kind, err)
			}
		}
		switch meta.APIVersion + " " + meta.Kind {
		case "v1 Secret":
			s := &corev1.Secret{}
			decode(s)
			secrets[s.Name] = s
		case "apps/v1 Deployment":
			d := &appsv1.Deployment{}
			decode(d)
			deploys = append(deploys, d)
		case "v1 Service":
			s := &corev1.Service{}
			decode(s)
			services = append(services, s)
		default:
			t.Fatalf("%s document %d: unexpected %s %s", path, i, meta.APIVersion, meta.Kind)
		}
	}
	return secrets, deploys, services
}

// checkRelayContainer holds the rules every relay container follows.
func checkRelayContainer(t *testing.T, where string, c corev1.Container, secrets map[string]*corev1.Secret) {
	t.Helper()
	known := relayEnv(t, "run")
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			s, ok := secrets[ref.Name]
			if !ok {
				t.Errorf("%s: %s from unknown Secret %s", where, e.Name, ref.Name)
			} else if _, ok := s.StringData[ref.Key]; !ok {
				t.Errorf("%s: %s from missing key %s of Secret %s", where, e.Name, ref.Key, ref.Name)
			}
		}
	}
	checkEnvNames(t, where, env, known)
	for _, name := range []string{"RELAY_DATABASE_URL", "RELAY_ADMIN_TOKEN"} {
		i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
		if i < 0 || c.Env[i].Value != "" || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.SecretKeyRef == nil {
			t.Errorf("%s: %s must come from a Secret", where, name)
		}
	}
	_, adminPort, err := net.SplitHostPort(env["RELAY_ADMIN_ADDR"])
	if err != nil || !strings.HasPrefix(env["RELAY_ADMIN_ADDR"], "0.0.0.0:") {
		t.Errorf("%s: RELAY_ADMIN_ADDR %q: the kubelet probes the pod address, so 0.0.0.0", where, env["RELAY_ADMIN_ADDR"])
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "admin" || c.Ports[0].ContainerPort == 0 || adminPort != strconv.Itoa(int(c.Ports[0].ContainerPort)) {
		t.Errorf("%s: port %+v does not match RELAY_ADMIN_ADDR %s", where, c.Ports, env["RELAY_ADMIN_ADDR"])
	}
	probe := func(p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "admin" {
			t.Errorf("%s: want an httpGet probe of %s on port admin, got %+v", where, path, p)
		}
	}
	probe(c.LivenessProbe, "/healthz")
	probe(c.ReadinessProbe, "/readyz")
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("%s: resource requests %v", where, c.Resources.Requests)
	}
	sc := c.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
		t.Errorf("%s: must run as the image's non-root user 65532", where)
	}
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--") && !relayFlag(t, a) {
			t.Errorf("%s: relay run has no flag %s", where, a)
		}
	}
}

// relayFlag tells whether relay run accepts flag.
func relayFlag(t *testing.T, flag string) bool {
	var help bytes.Buffer
	c := &cli.CLI{Stdout: &help, Stderr: &help, Getenv: func(string) string { return "" }}
	_ = c.Run(context.Background(), []string{"run", "--help"})
	return strings.Contains(help.String(), "  -"+strings.TrimLeft(strings.SplitN(flag, "=", 2)[0], "-")+" ")
}

func TestKubernetesSidecar(t *testing.T) {
	secrets, deploys, _ := kubeObjects(t, "kubernetes/sidecar.yaml")
	if len(deploys) != 1 {
		t.Fatalf("%d Deployments", len(deploys))
	}
	pod := deploys[0].Spec.Template.Spec
	i := slices.IndexFunc(pod.Containers, func(c corev1.Container) bool { return c.Name == "relay" })
	if i < 0 || len(pod.Containers) < 2 {
		t.Fatalf("want relay beside the application's container, got %d containers", len(pod.Containers))
	}
	checkRelayContainer(t, "sidecar", pod.Containers[i], secrets)
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds <= 30 {
		t.Error("the grace period must exceed relay's 30 s shutdown timeout")
	}
}

func TestKubernetesDeployment(t *testing.T) {
	secrets, deploys, services := kubeObjects(t, "kubernetes/deployment.yaml")
	if len(deploys) != 1 || len(services) != 1 {
		t.Fatalf("%d Deployments, %d Services", len(deploys), len(services))
	}
	d := deploys[0]
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas %v, want 2", d.Spec.Replicas)
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	checkRelayContainer(t, "deployment", pod.Containers[0], secrets)
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v || services[0].Spec.Selector[k] != v {
			t.Errorf("selector %s=%s does not match the pods or the Service", k, v)
		}
	}
	if services[0].Spec.Ports[0].TargetPort.String() != "admin" {
		t.Errorf("Service targets %s", services[0].Spec.Ports[0].TargetPort.String())
	}
}

var buildOnce struct {
	sync.Once
	err error
	out []byte
}

// builtRelay runs `make build` once per test binary and returns bin/relay.
func builtRelay(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	buildOnce.Do(func() {
		cmd := exec.Command("make", "-s", "build")
		cmd.Dir = root
		buildOnce.out, buildOnce.err = cmd.CombinedOutput()
	})
	if buildOnce.err != nil {
		t.Fatalf("make build: %v\n%s", buildOnce.err, buildOnce.out)
	}
	return filepath.Join(root, "bin", "relay")
}

func TestSystemdUnit(t *testing.T) {
	unit := string(readFile(t, "systemd/relay.service"))
	m := regexp.MustCompile(`(?m)^ExecStart=(\S+)(.*)$`).FindStringSubmatch(unit)
	if m == nil || m[1] != "/usr/local/bin/relay" {
		t.Fatalf("ExecStart: %v", m)
	}
	// Its arguments are a valid relay command line.
	args := append(strings.Fields(m[2]), "--help")
	c := &cli.CLI{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
	if code := cli.ExitCode(c.Run(context.Background(), args)); code != 0 || args[0] != "run" {
		t.Errorf("ExecStart arguments %q: exit %d", m[2], code)
	}
	// The environment file names only relay run's variables.
	env := map[string]string{}
	for _, line := range strings.Split(string(readFile(t, "systemd/relay.env")), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(strings.TrimSpace(line), "#") {
			env[k] = v
		}
	}
	checkEnvNames(t, "relay.env", env, relayEnv(t, "run"))
	if len(env) == 0 || env["RELAY_DATABASE_URL"] == "" {
		t.Errorf("relay.env: %v", env)
	}

	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed (scripts/install-deps.sh installs systemd): unit not verified")
	}
	// systemd-analyze verify also checks that ExecStart's binary exists:
	// point it at the one make builds.
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.service")
	if err := os.WriteFile(path, []byte(strings.Replace(unit, "ExecStart="+m[1], "ExecStart="+builtRelay(t), 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	// verify exits 0 on unknown keys and bad values and only warns: any
	// output is a finding.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestPrometheusRules(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("promtool is not installed (scripts/install-deps.sh installs prometheus): rules not checked")
	}
	for _, args := range [][]string{
		{"check", "rules", "relay-alerts.yaml"},
		{"test", "rules", "relay-alerts.test.yaml"},
	} {
		cmd := exec.Command("promtool", args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Every relay_ series the rules use is one relay exports.
	exported := string(readFile(t, "../internal/metrics/metrics.go"))
	rules := string(readFile(t, "prometheus/relay-alerts.yaml"))
	for _, name := range regexp.MustCompile(`relay_[a-z_]+`).FindAllString(rules, -1) {
		base := strings.TrimSuffix(strings.TrimSuffix(name, "_sum"), "_count")
		if !strings.Contains(exported, `"`+base+`"`) {
			t.Errorf("the rules use %s, which internal/metrics does not export", name)
		}
	}
}
