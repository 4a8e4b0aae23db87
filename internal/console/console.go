// Package console holds relay's web console: static files embedded in the
// binary and served by the admin server at /. The page talks only to the
// admin API; there is no build step.
package console

import (
	"embed"
	"io/fs"
)

//go:embed static
var files embed.FS

// Files returns the console's files, rooted at the static directory.
func Files() fs.FS {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}
