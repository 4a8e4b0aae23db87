package subscriptions

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pgoutbox/relay/internal/hostaddr"
)

var (
	eventTypeRE    = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)
	eventPatternRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?$`)
	headerNameRE   = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
	secretRE       = regexp.MustCompile(`^whsec_[A-Za-z0-9+/]{32,}={0,2}$`)
)

// maxPatternLength is the SQL limit on an event type or pattern.
const maxPatternLength = 200

// ValidEventType reports whether t is an event type: lowercase dotted words
// such as thread.created (relay.is_valid_event_type).
func ValidEventType(t string) bool {
	return len(t) <= maxPatternLength && eventTypeRE.MatchString(t)
}

// ValidEventPattern reports whether p is an exact event type, a prefix
// pattern such as thread.* or * (relay.is_valid_event_pattern).
func ValidEventPattern(p string) bool {
	return p == "*" || (len(p) <= maxPatternLength && eventPatternRE.MatchString(p))
}

// MatchPattern reports whether pattern matches eventType. "*" matches every
// type; "a.*" matches a.x and a.x.y but neither a itself nor ab.x; anything
// else matches only the identical type. It agrees with the SQL matching of
// fan-out (event_types && relay.event_type_candidates(type)).
func MatchPattern(pattern, eventType string) bool {
	if pattern == "*" {
		return true
	}
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok && strings.HasSuffix(prefix, ".") {
		return len(eventType) > len(prefix) && strings.HasPrefix(eventType, prefix)
	}
	return pattern == eventType
}

// MatchAny reports whether any of patterns matches eventType.
func MatchAny(patterns []string, eventType string) bool {
	for _, p := range patterns {
		if MatchPattern(p, eventType) {
			return true
		}
	}
	return false
}

// AddressCheck tells whether a webhook may reach an address: the Check of
// the sender's dial-time guard (send.AddressGuard.Check), so that creation
// refuses exactly what delivery would refuse, with the same message.
type AddressCheck func(netip.Addr) error

var (
	localhostV4 = netip.MustParseAddr("127.0.0.1")
	localhostV6 = netip.IPv6Loopback()
)

// ValidateURL is the friendly early check of a webhook URL, run before a
// subscription is written. It returns a *ValidationError with Field "url"
// when raw
//   - is not an absolute URL with a host, or is longer than 2000 characters;
//   - does not use https:// (http:// passes only when allowHTTP is true);
//   - names a literal IP address that check refuses (loopback, private,
//     link-local, … unless allowed), with check's message. The shorthand
//     IPv4 forms browsers and inet_aton accept (127.1, 2130706433,
//     0x7f000001, 0177.0.0.1, 0, a trailing dot) are judged by the address
//     they name (see package hostaddr);
//   - names localhost or a *.localhost host while check refuses both
//     127.0.0.1 and ::1;
//   - has a host that ends in a number but is no IPv4 address (1.2.3.4.5),
//     which browsers refuse too.
//
// A nil check accepts every address. Host names are not resolved: the
// dial-time guard, which checks every resolved address, is the real defence
// against SSRF (and DNS rebinding); this check only turns obvious mistakes
// into a clear error at once.
func ValidateURL(raw string, allowHTTP bool, check AddressCheck) error {
	if raw == "" {
		return invalid("url", "url must not be empty")
	}
	if utf8.RuneCountInString(raw) > MaxURLLength {
		return invalid("url", fmt.Sprintf("url must be at most %d characters", MaxURLLength))
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return invalid("url", "url must not contain spaces or control characters")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return invalid("url", "url must be an absolute https:// URL")
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !allowHTTP {
			return invalid("url", "url must use https:// (http:// is accepted only when relay.settings.allow_http is true)")
		}
	default:
		return invalid("url", "url must use https://")
	}
	host := u.Hostname()
	if host == "" {
		return invalid("url", "url has no host name")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return invalid("url", "url has an invalid port")
		}
	}
	addr, literal, err := hostaddr.Parse(host)
	if err != nil {
		return invalid("url", fmt.Sprintf("url host %s is not a valid address: it ends in a number but is no IPv4 address", strconv.QuoteToASCII(host)))
	}
	if check == nil {
		return nil
	}
	if literal {
		if err := check(addr); err != nil {
			msg := "url: " + err.Error()
			if s := strings.TrimSuffix(host, "."); addr.Is4() && s != addr.String() {
				msg = fmt.Sprintf("url: %s is a shorthand of %s; %v", host, addr, err)
			}
			return invalid("url", msg)
		}
		return nil
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		err4, err6 := check(localhostV4), check(localhostV6)
		if err4 != nil && err6 != nil {
			return invalid("url", fmt.Sprintf("url points to localhost: %v", err4))
		}
	}
	return nil
}

// Validate checks the parameters as the SQL trigger will, so most mistakes
// are reported before a round trip and without a half-written row. It does
// not check URL beyond emptiness: that needs the caller's policy, see
// ValidateURL. Time zones are left to the database, whose list is the
// reference.
func (p *CreateParams) Validate() error {
	if err := validateOwner(p.Owner); err != nil {
		return err
	}
	if err := validateName(p.Name); err != nil {
		return err
	}
	if p.URL == "" {
		return invalid("url", "url must not be empty")
	}
	if err := validateEventTypes(p.EventTypes); err != nil {
		return err
	}
	if p.Secret != "" && !secretRE.MatchString(p.Secret) {
		return invalid("secret", "secret must be whsec_ followed by base64 of at least 24 bytes")
	}
	if p.Format != "" {
		if err := validateFormat(p.Format); err != nil {
			return err
		}
	}
	if err := validateHeaders(p.Headers); err != nil {
		return err
	}
	if err := validateTemplate(p.Template); err != nil {
		return err
	}
	if p.TimeoutMS != 0 {
		if err := validateTimeout(p.TimeoutMS); err != nil {
			return err
		}
	}
	if err := validateSchedule(p.RetrySchedule); err != nil {
		return err
	}
	if p.MaxInFlight != 0 {
		if err := validateMaxInFlight(p.MaxInFlight); err != nil {
			return err
		}
	}
	if p.Window != nil {
		if err := validateWindow(*p.Window, false); err != nil {
			return err
		}
	}
	if p.OutsideWindow != "" {
		if err := validateOutsideWindow(p.OutsideWindow); err != nil {
			return err
		}
		if p.OutsideWindow == OutsideWindowSend && p.Window != nil {
			return invalid("outside_window", "outside_window cannot be send with a window of its own (send goes out whatever the windows say): drop the window, or use defer or skip")
		}
	}
	return validateFilterText(p.Filter)
}

// Validate checks the fields that are set, like CreateParams.Validate.
func (p *UpdateParams) Validate() error {
	if p.Name != nil {
		if err := validateName(*p.Name); err != nil {
			return err
		}
	}
	if p.URL != nil && *p.URL == "" {
		return invalid("url", "url must not be empty")
	}
	if p.EventTypes != nil {
		if err := validateEventTypes(*p.EventTypes); err != nil {
			return err
		}
	}
	if p.Format != nil {
		if err := validateFormat(*p.Format); err != nil {
			return err
		}
	}
	if p.Headers != nil {
		if err := validateHeaders(*p.Headers); err != nil {
			return err
		}
	}
	if err := validateTemplate(p.Template); err != nil {
		return err
	}
	if err := validateDisabledReason(p.DisabledReason); err != nil {
		return err
	}
	if p.TimeoutMS != nil {
		if err := validateTimeout(*p.TimeoutMS); err != nil {
			return err
		}
	}
	if p.RetrySchedule != nil {
		if err := validateSchedule(*p.RetrySchedule); err != nil {
			return err
		}
	}
	if p.MaxInFlight != nil {
		if err := validateMaxInFlight(*p.MaxInFlight); err != nil {
			return err
		}
	}
	if p.Window != nil {
		if err := validateWindow(*p.Window, true); err != nil {
			return err
		}
	}
	if p.OutsideWindow != nil {
		if err := validateOutsideWindow(*p.OutsideWindow); err != nil {
			return err
		}
		if *p.OutsideWindow == OutsideWindowSend && p.Window != nil && (p.Window.Start != "" || p.Window.End != "") {
			return invalid("outside_window", "outside_window cannot be send with a window of its own (send goes out whatever the windows say): drop the window, or use defer or skip")
		}
	}
	if p.Filter != nil {
		return validateFilterText(*p.Filter)
	}
	return nil
}

func validateOutsideWindow(v string) error {
	if !ValidOutsideWindow(v) {
		return invalid("outside_window", fmt.Sprintf("outside_window must be one of defer, send, skip (got %q)", v))
	}
	return nil
}

// validateFilterText checks what can be checked without PostgreSQL, whose
// jsonpath parser is the reference (Store.CheckFilter).
func validateFilterText(f string) error {
	if n := utf8.RuneCountInString(f); n > MaxFilterLength {
		return invalid("filter", fmt.Sprintf("filter must be at most %d characters (got %d)", MaxFilterLength, n))
	}
	if strings.ContainsRune(f, 0) {
		return invalid("filter", "filter must not contain NUL characters")
	}
	return nil
}

func validateName(name string) error {
	if strings.TrimSpace(name) == "" {
		return invalid("name", "name must not be empty")
	}
	if n := utf8.RuneCountInString(name); n > MaxNameLength {
		return invalid("name", fmt.Sprintf("name must be at most %d characters (got %d)", MaxNameLength, n))
	}
	return checkText("name", "name", name, allowNone)
}

func validateOwner(owner *string) error {
	if owner == nil {
		return nil
	}
	if strings.TrimSpace(*owner) == "" {
		return invalid("owner", "owner must be null (operator) or a non-empty string")
	}
	return checkText("owner", "owner", *owner, allowNone)
}

// validateTemplate checks a slack or discord message template: multi-line
// text of at most MaxTemplateLength characters.
func validateTemplate(tmpl *string) error {
	if tmpl == nil {
		return nil
	}
	if n := utf8.RuneCountInString(*tmpl); n > MaxTemplateLength {
		return invalid("template", fmt.Sprintf("template must be at most %d characters (got %d)", MaxTemplateLength, n))
	}
	return checkText("template", "template", *tmpl, allowTemplate)
}

// validateDisabledReason checks the free-text reason recorded when a
// subscription is disabled by hand.
func validateDisabledReason(r *string) error {
	if r == nil {
		return nil
	}
	if n := utf8.RuneCountInString(*r); n > MaxReasonLength {
		return invalid("disabled_reason", fmt.Sprintf("disabled_reason must be at most %d characters (got %d)", MaxReasonLength, n))
	}
	return checkText("disabled_reason", "disabled_reason", *r, allowNone)
}

func validateEventTypes(types []string) error {
	if len(types) == 0 {
		return invalid("event_types", "event_types must list at least one event type or pattern (thread.created, thread.* or *)")
	}
	for _, t := range types {
		if !ValidEventPattern(t) {
			return invalid("event_types", fmt.Sprintf("event_types: %q is not an event type or pattern (use thread.created, thread.* or *)", t))
		}
	}
	return nil
}

func validateFormat(f string) error {
	switch f {
	case FormatJSON, FormatSlack, FormatDiscord:
		return nil
	}
	return invalid("format", fmt.Sprintf("format must be one of json, slack, discord (got %q)", f))
}

var reservedHeaders = map[string]bool{
	"content-type": true, "content-length": true, "host": true,
	"user-agent": true, "transfer-encoding": true, "connection": true,
}

// validateHeaders checks custom headers: at most MaxHeaders, names that are
// HTTP tokens of at most MaxHeaderNameLength characters and not set by
// relay, values on one line of at most MaxHeaderValueLength characters
// without control characters (HTAB is allowed, as in HTTP).
func validateHeaders(h map[string]string) error {
	if len(h) > MaxHeaders {
		return invalid("headers", fmt.Sprintf("headers may hold at most %d headers (got %d)", MaxHeaders, len(h)))
	}
	// In name order, so the error names the same header every time.
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := h[k]
		if !headerNameRE.MatchString(k) {
			return invalid("headers", fmt.Sprintf("headers: %s is not a valid header name", strconv.QuoteToASCII(k)))
		}
		if len(k) > MaxHeaderNameLength {
			return invalid("headers", fmt.Sprintf("headers: a header name may be at most %d characters (%.20q… has %d)", MaxHeaderNameLength, k, len(k)))
		}
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "webhook-") || strings.HasPrefix(lk, "x-relay-") || reservedHeaders[lk] {
			return invalid("headers", fmt.Sprintf("headers: %q is set by relay and cannot be overridden", k))
		}
		if strings.ContainsAny(v, "\r\n") {
			return invalid("headers", fmt.Sprintf("headers: the value of %q must be a single-line string", k))
		}
		if n := utf8.RuneCountInString(v); n > MaxHeaderValueLength {
			return invalid("headers", fmt.Sprintf("headers: the value of %q may be at most %d characters (got %d)", k, MaxHeaderValueLength, n))
		}
		if err := checkText("headers", fmt.Sprintf("headers: the value of %q", k), v, allowTab); err != nil {
			return err
		}
	}
	return nil
}

func validateTimeout(ms int) error {
	if ms < MinTimeoutMS || ms > MaxTimeoutMS {
		return invalid("timeout_ms", fmt.Sprintf("timeout_ms must be between %d and %d (got %d)", MinTimeoutMS, MaxTimeoutMS, ms))
	}
	return nil
}

func validateSchedule(s []time.Duration) error {
	if len(s) > MaxRetryDelays {
		return invalid("retry_schedule", fmt.Sprintf("retry_schedule may hold at most %d delays (got %d)", MaxRetryDelays, len(s)))
	}
	for _, d := range s {
		// The database stores microseconds; anything shorter rounds to zero.
		if d < time.Microsecond {
			return invalid("retry_schedule", fmt.Sprintf("retry_schedule: every delay must be a positive interval (got %s)", d))
		}
		if d > MaxRetryDelay {
			return invalid("retry_schedule", fmt.Sprintf("retry_schedule: a delay may be at most 7 days (got %s)", d))
		}
	}
	return nil
}

func validateMaxInFlight(n int) error {
	if n < 1 || n > 256 {
		return invalid("max_in_flight", fmt.Sprintf("max_in_flight must be between 1 and 256 (got %d)", n))
	}
	return nil
}

// validateWindow checks the times; clearing (both empty) is allowed on
// update only.
func validateWindow(w Window, allowClear bool) error {
	if w.Start == "" && w.End == "" && allowClear {
		return nil
	}
	if (w.Start == "") != (w.End == "") {
		return invalid("window_start", "window start and end must both be set or both be empty")
	}
	if _, err := ParseTimeOfDay(w.Start); err != nil {
		return invalid("window_start", fmt.Sprintf("window start %q is not a time of day (HH:MM)", w.Start))
	}
	if _, err := ParseTimeOfDay(w.End); err != nil {
		return invalid("window_end", fmt.Sprintf("window end %q is not a time of day (HH:MM)", w.End))
	}
	return nil
}

// ParseTimeOfDay parses "HH:MM" or "HH:MM:SS" (24-hour clock) into the time
// since midnight.
func ParseTimeOfDay(s string) (time.Duration, error) {
	for _, layout := range []string{"15:04", "15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute + time.Duration(t.Second())*time.Second, nil
		}
	}
	return 0, fmt.Errorf("%q is not a time of day (HH:MM)", s)
}
