// Package buildinfo says which relay a binary is: its module version, the
// commit it was built from and the Go release that compiled it. It reads
// them from the build information the Go toolchain stamps into every binary
// (runtime/debug.ReadBuildInfo), so `relay version`, the User-Agent of
// deliveries, /healthz and the relay_build_info metric always agree.
//
// The toolchain records the commit only when it builds from a checkout with
// VCS stamping on (`go build -buildvcs=true`, which `make build` passes);
// `go install github.com/pgoutbox/relay/cmd/relay@v1.2.3` records the module
// version. A release build may also set the version with
// -ldflags "-X github.com/pgoutbox/relay/internal/buildinfo.version=v1.2.3".
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// version overrides the module version when set at link time.
var version string

// Unknown stands for what the binary does not record (a test binary, or a
// build without VCS stamping).
const Unknown = "unknown"

// Info describes one build.
type Info struct {
	// Version is the module version: a release tag such as v1.2.3, a
	// pseudo-version such as v0.0.0-20260101120000-0123456789ab derived from
	// the commit, or "(devel)" for a build that knows neither.
	Version string `json:"version"`
	// Commit is the full VCS revision, or Unknown.
	Commit string `json:"commit"`
	// Modified is true when the work tree had uncommitted changes.
	Modified bool `json:"modified"`
	// GoVersion is the Go release that built the binary, such as go1.26.8.
	GoVersion string `json:"go_version"`
}

var (
	once sync.Once
	info Info
)

// Read returns the running binary's build information.
func Read() Info {
	once.Do(func() { info = fromBuildInfo(debug.ReadBuildInfo()) })
	return info
}

// fromBuildInfo extracts Info; ok is false when the binary carries no
// build information at all.
func fromBuildInfo(bi *debug.BuildInfo, ok bool) Info {
	in := Info{Version: "(devel)", Commit: Unknown, GoVersion: runtime.Version()}
	if ok {
		if v := bi.Main.Version; v != "" {
			in.Version = v
		}
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				in.Commit = s.Value
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
	}
	if version != "" {
		in.Version = version
	}
	return in
}

// ShortCommit is the first 12 characters of the commit, with "-dirty" when
// the tree was modified, or Unknown.
func (in Info) ShortCommit() string {
	if in.Commit == Unknown || in.Commit == "" {
		return Unknown
	}
	c := in.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if in.Modified {
		c += "-dirty"
	}
	return c
}

// UserAgent is the User-Agent of deliveries: relay/<version>, then the
// commit and Go release in a comment, e.g.
// "relay/v1.2.3 (commit 0123456789ab; go1.26.8)". Receivers that match on
// the product token see relay/<version> first, as DESIGN.md promises.
func (in Info) UserAgent() string {
	return fmt.Sprintf("relay/%s (commit %s; %s)", strings.Trim(in.Version, "()"), in.ShortCommit(), in.GoVersion)
}

// String is the line `relay version` prints.
func (in Info) String() string {
	return fmt.Sprintf("relay %s (commit %s, %s, %s/%s)", in.Version, in.ShortCommit(), in.GoVersion, runtime.GOOS, runtime.GOARCH)
}
