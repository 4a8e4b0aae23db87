package admin

import (
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"
)

// This file holds what the server does to every request before a handler
// runs: the security headers of every response, the Host check of the
// unauthenticated routes that reveal something, the refusal of malformed
// query strings, and the static file server that lists no directories.

// cspBase is the Content-Security-Policy of every response but its
// frame-ancestors directive: the console only ever loads its own files and
// talks to this server's /api, so nothing else is allowed. frame-ancestors
// only works as a header (browsers ignore it in a <meta> element), which is
// why the server sends the policy rather than index.html alone.
const cspBase = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; object-src 'none'"

// ContentSecurityPolicy returns the policy relay serves, with
// frame-ancestors limited to the given origins ('none' when there are
// none).
func ContentSecurityPolicy(frameAncestors []string) string {
	fa := "'none'"
	if len(frameAncestors) > 0 {
		fa = strings.Join(frameAncestors, " ")
	}
	return cspBase + "; frame-ancestors " + fa
}

// setSecurityHeaders sets the headers every response carries. No page of
// relay may be framed (clickjacking: a hostile page could overlay the
// console and have an operator click Delete); Referrer-Policy keeps URLs
// (which may carry filters, never tokens) from leaking to other sites.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", ContentSecurityPolicy(nil))
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// AllowFraming lets the response being written be shown in a frame by the
// origins of Config.FrameAncestors (and by no other), for the pages meant to
// be embedded in an application (the owner portal). It must be called
// before the handler writes its header. With no FrameAncestors configured
// it changes nothing: framing stays refused.
func (s *Server) AllowFraming(w http.ResponseWriter) {
	if len(s.cfg.FrameAncestors) == 0 {
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy(s.cfg.FrameAncestors))
	// X-Frame-Options cannot name origins; browsers that know CSP use
	// frame-ancestors and ignore it, the others must not see DENY here.
	h.Del("X-Frame-Options")
	h.Del("Cross-Origin-Resource-Policy")
}

// ParseOrigins checks a list of origins allowed to frame relay's pages
// (https://app.example.com, http://localhost:3000): a scheme and a host, an
// optional port, nothing else. It returns them normalised (lowercase, no
// trailing slash), for Config.FrameAncestors.
func ParseOrigins(list []string) ([]string, error) {
	var out []string
	for _, raw := range list {
		o := strings.TrimSpace(raw)
		if o == "" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil ||
			strings.ContainsAny(o, " ;,'\"") {
			return nil, fmt.Errorf("origin %q: want a scheme and host such as https://app.example.com", raw)
		}
		out = append(out, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	return out, nil
}

// hostAllowed reports whether the Host of a request is one this server may
// answer its unauthenticated informative routes (/metrics,
// /api/openapi.json) to. A page on a hostile site whose name is rebound in
// DNS to 127.0.0.1 (DNS rebinding) reaches the server with its own name in
// Host; IP literals and localhost cannot be produced that way, so they are
// always accepted, and so are the listen address's host and
// Config.AllowedHosts.
func (s *Server) hostAllowed(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if host == "localhost" {
		return true
	}
	for _, h := range s.allowedHosts {
		if host == h {
			return true
		}
	}
	return false
}

// normaliseHosts lowercases the configured names and adds the listen
// address's host when it is a name.
func normaliseHosts(addr string, extra []string) []string {
	var out []string
	if h, _, err := net.SplitHostPort(addr); err == nil && h != "" {
		if _, err := netip.ParseAddr(h); err != nil {
			out = append(out, strings.ToLower(h))
		}
	}
	for _, h := range extra {
		if h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), "."); h != "" {
			out = append(out, h)
		}
	}
	return out
}

// checkHost wraps a public informative route with hostAllowed.
func (s *Server) checkHost(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.hostAllowed(r) {
			writeError(w, r, http.StatusMisdirectedRequest, "host_not_allowed",
				fmt.Sprintf("this server does not answer for host %q; use its address, or add the name with --admin-host (RELAY_ADMIN_HOSTS)", r.Host), "")
			return
		}
		next(w, r)
	}
}

// staticFiles serves the console's files, but answers 404 for directories
// other than the root (http.FileServer would list their files) and for any
// path that does not name a file.
func staticFiles(files fs.FS) http.Handler {
	fileServer := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := path.Clean("/" + r.URL.Path)
		if p != "/" {
			st, err := fs.Stat(files, strings.TrimPrefix(p, "/"))
			if err != nil || st.IsDir() {
				http.NotFound(w, r)
				return
			}
		}
		fileServer.ServeHTTP(w, r)
	})
}
