package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/pgoutbox/relay", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	in := fromBuildInfo(bi, true)
	if in.Version != "v1.2.3" || in.GoVersion != "go1.26.8" || !in.Modified || in.ShortCommit() != "0123456789ab-dirty" {
		t.Fatalf("%+v", in)
	}
	if ua := in.UserAgent(); ua != "relay/v1.2.3 (commit 0123456789ab-dirty; go1.26.8)" {
		t.Fatalf("user agent %q", ua)
	}
	if s := in.String(); !strings.HasPrefix(s, "relay v1.2.3 (commit 0123456789ab-dirty, go1.26.8, ") {
		t.Fatalf("version line %q", s)
	}
}

func TestFromBuildInfoWithoutVCSOrVersion(t *testing.T) {
	in := fromBuildInfo(&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true)
	if in.Version != "(devel)" || in.Commit != Unknown || in.ShortCommit() != Unknown || in.GoVersion == "" {
		t.Fatalf("%+v", in)
	}
	// A User-Agent product version may not hold parentheses.
	if ua := in.UserAgent(); !strings.HasPrefix(ua, "relay/devel (commit unknown; go") {
		t.Fatalf("user agent %q", ua)
	}
	if in := fromBuildInfo(nil, false); in.Version != "(devel)" || in.Commit != Unknown {
		t.Fatalf("no build info: %+v", in)
	}
}

func TestLinkTimeVersionWins(t *testing.T) {
	old := version
	version = "v9.9.9"
	defer func() { version = old }()
	if in := fromBuildInfo(&debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20260101000000-abcdef"}}, true); in.Version != "v9.9.9" {
		t.Fatalf("%+v", in)
	}
}
