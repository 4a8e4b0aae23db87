package send

import (
	"net/url"
	"strings"
)

// maskedPathChars is how much of the path MaskURL shows.
const maskedPathChars = 3

// MaskURL returns a webhook URL safe to show in logs and views: the scheme,
// the host (with its port) and the first three characters of the path after
// its leading slash, followed by "***". Webhook URLs often carry their
// secret in the path or the query, so userinfo, the rest of the path, the
// query and the fragment are never shown:
//
//	https://hooks.make.com/abc123xyz?token=s  →  https://hooks.make.com/abc***
//	https://user:pw@example.com:8443/         →  https://example.com:8443/***
//
// A string that does not parse as an absolute URL with a host gives "***".
func MaskURL(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "***"
	}
	path := strings.TrimPrefix(u.EscapedPath(), "/")
	// EscapedPath is ASCII, so bytes are characters.
	if len(path) > maskedPathChars {
		path = path[:maskedPathChars]
	}
	return u.Scheme + "://" + u.Host + "/" + path + "***"
}
