package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/relay/sink/dispatch"
	"github.com/pgoutbox/relay/sink/send"
	"github.com/pgoutbox/relay/subscriptions"
)

func init() {
	register("subs", "list, add, show, update, remove, enable, disable, rotate or test webhook subscriptions", (*CLI).subs)
}

// subsAction is one "relay subs <action>".
type subsAction struct {
	name     string
	synopsis string
	summary  string
	run      func(c *CLI, ctx context.Context, a *subsAction, args []string) error
}

var subsActions []*subsAction

func init() {
	subsActions = []*subsAction{
		{"list", "subs list [--owner O] [--enabled|--disabled] [--event-type T] [--limit N] [--json]",
			"list subscriptions", (*CLI).subsList},
		{"add", "subs add --name N --url U --events a.b,c.* [--owner O] [--format json|slack|discord] [--header k=v]... [--timeout 10s] [--retry 1m,5m,15m] [--window 22:00-06:00 --tz Europe/Paris] [--outside-window defer|send|skip] [--filter JSONPATH] [--json]",
			"create a subscription and print its secret (shown only once)", (*CLI).subsAdd},
		{"show", "subs show ID [--json]",
			"show one subscription with its health and last 24 hours", (*CLI).subsShow},
		{"update", "subs update ID [--name N] [--url U] [--events a.b,c.*] [--format F] [--header k=v]... [--timeout D] [--retry D,D|none] [--window HH:MM-HH:MM|none] [--tz Z] [--outside-window W] [--filter JSONPATH|none] [--json]",
			"change a subscription (only the flags given)", (*CLI).subsUpdate},
		{"rm", "subs rm ID [--json]",
			"remove a subscription with its deliveries", (*CLI).subsRemove},
		{"enable", "subs enable ID [--json]",
			"enable a subscription and reset its failure count", (*CLI).subsEnable},
		{"disable", "subs disable ID [--reason R] [--json]",
			"disable a subscription (its deliveries wait)", (*CLI).subsDisable},
		{"rotate", "subs rotate ID [--grace 24h] [--json]",
			"give a subscription a new secret; the old one signs on for the grace period", (*CLI).subsRotate},
		{"test", "subs test ID [--allow-cidr CIDR]... [--json]",
			"send a webhook.test event to one subscription now and print the outcome", (*CLI).subsTest},
	}
}

func (c *CLI) subsUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: relay subs <action> [flags]\n\nActions:\n")
	for _, a := range subsActions {
		fmt.Fprintf(w, "  %-8s %s\n", a.name, a.summary)
	}
	fmt.Fprintf(w, "\nRun 'relay subs <action> --help' for an action's flags.\n")
}

func (c *CLI) subs(ctx context.Context, args []string) error {
	if len(args) == 0 {
		c.subsUsage(c.Stderr)
		return usageError("subs needs an action: list, add, show, update, rm, enable, disable, rotate or test")
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		c.subsUsage(c.Stdout)
		return nil
	}
	name := args[0]
	if name == "remove" || name == "delete" {
		name = "rm"
	}
	for _, a := range subsActions {
		if a.name == name {
			return a.run(c, ctx, a, args[1:])
		}
	}
	c.subsUsage(c.Stderr)
	return usageError("unknown subs action %q", args[0])
}

// subsCommon are the flags every subs action has.
type subsCommon struct {
	cli    *CLI
	fs     *flag.FlagSet
	dbURL  *string
	asJSON *bool
}

func (c *CLI) subsFlags(a *subsAction) *subsCommon {
	fs := c.newFlagSet("subs "+a.name, a.synopsis)
	return &subsCommon{cli: c, fs: fs, dbURL: c.databaseURLFlag(fs), asJSON: jsonFlag(fs)}
}

// parseWithID parses the flags and the one positional subscription id.
func (sc *subsCommon) parseWithID(args []string) (int64, error) {
	if err := parse(sc.fs, args); err != nil {
		return 0, err
	}
	if sc.fs.NArg() != 1 {
		sc.fs.Usage()
		return 0, usageError("%s needs exactly one subscription id", sc.fs.Name())
	}
	return parseIDArg("subscription id", sc.fs.Arg(0))
}

func (sc *subsCommon) store(ctx context.Context) (*subscriptions.Store, func(), error) {
	pool, err := sc.cli.connectDB(ctx, *sc.dbURL)
	if err != nil {
		return nil, nil, err
	}
	return subscriptions.NewStore(pool), pool.Close, nil
}

func subName(id int64) string { return fmt.Sprintf("subscription %d", id) }

// subView is a subscription as the CLI prints it in JSON: the URL masked,
// header values hidden, the retry schedule as durations people read, the
// secret only right after add.
type subView struct {
	subscriptions.Subscription
	URL           string               `json:"url"`
	Headers       map[string]string    `json:"headers"`
	RetrySchedule []string             `json:"retry_schedule"`
	Secret        string               `json:"secret,omitempty"`
	Stats24h      *subscriptions.Stats `json:"stats_24h,omitempty"`
}

func newSubView(s subscriptions.Subscription) subView {
	v := subView{Subscription: s, URL: send.MaskURL(s.URL), Headers: map[string]string{}, RetrySchedule: []string{}}
	for k := range s.Headers {
		v.Headers[k] = "***"
	}
	for _, d := range s.RetrySchedule {
		v.RetrySchedule = append(v.RetrySchedule, durationText(d))
	}
	if v.EventTypes == nil {
		v.EventTypes = []string{}
	}
	return v
}

func (c *CLI) subsList(ctx context.Context, a *subsAction, args []string) error {
	sc := c.subsFlags(a)
	owner := sc.fs.String("owner", "", "only this owner's subscriptions (and not the operator's)")
	enabled := sc.fs.Bool("enabled", false, "only enabled subscriptions")
	disabled := sc.fs.Bool("disabled", false, "only disabled subscriptions")
	eventType := sc.fs.String("event-type", "", "only subscriptions that receive this event type")
	limit := sc.fs.Int("limit", 0, "at most this many (0: all)")
	if err := parse(sc.fs, args); err != nil {
		return err
	}
	if sc.fs.NArg() != 0 {
		return usageError("subs list takes no arguments (got %q)", sc.fs.Arg(0))
	}
	p := subscriptions.ListParams{EventType: *eventType, Limit: *limit}
	switch {
	case *enabled && *disabled:
		return usageError("--enabled and --disabled exclude each other")
	case *enabled:
		p.Enabled = enabled
	case *disabled:
		f := false
		p.Enabled = &f
	}
	if *owner != "" {
		p.Owner = owner
	}
	if p.EventType != "" && !subscriptions.ValidEventType(p.EventType) {
		return usageError("invalid --event-type %q: want lowercase dotted words such as thread.created", p.EventType)
	}
	if *limit < 0 {
		return usageError("invalid --limit %d: want 0 or more", *limit)
	}
	st, done, err := sc.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	subs, err := st.List(ctx, p)
	if err != nil {
		return storeError(err, "")
	}
	if *sc.asJSON {
		views := make([]subView, len(subs))
		for i, s := range subs {
			views[i] = newSubView(s)
		}
		return printJSON(c.Stdout, views)
	}
	if len(subs) == 0 {
		fmt.Fprintln(c.Stdout, "no subscriptions")
		return nil
	}
	t := newTable(c.Stdout, "ID", "OWNER", "NAME", "URL", "EVENTS", "FORMAT", "STATE", "FAILURES")
	for _, s := range subs {
		state := "enabled"
		if !s.Enabled {
			state = "disabled"
		}
		t.row(s.ID, ownerText(s.Owner), truncate(s.Name, 40), send.MaskURL(s.URL),
			truncate(strings.Join(s.EventTypes, ","), 40), s.Format, state, s.ConsecutiveFailures)
	}
	return t.flush()
}

// subSettings are the flags shared by add and update.
type subSettings struct {
	name, url, events, format, template *string
	headers                             stringsFlag
	timeout, retry, window, tz          *string
	outsideWindow, filter               *string
	maxInFlight, rateBurst              *int
	rateLimit, ordering                 *string
	ignoreGlobalWindow                  *bool
	allowCIDRs                          stringsFlag
}

func (c *CLI) defineSubSettings(fs *flag.FlagSet) *subSettings {
	s := &subSettings{
		name:               fs.String("name", "", "a name people recognise"),
		url:                fs.String("url", "", "the https:// URL to POST to"),
		events:             fs.String("events", "", "comma-separated event types or patterns: thread.created, thread.*, *"),
		format:             fs.String("format", "", "body format: json, slack or discord (default json)"),
		template:           fs.String("template", "", "text template for slack and discord messages"),
		timeout:            fs.String("timeout", "", "how long to wait for an answer, 1s to 60s (default 10s)"),
		retry:              fs.String("retry", "", "comma-separated delays between attempts, e.g. 1m,5m,15m; none for no retry (default 1m,5m,15m)"),
		window:             fs.String("window", "", "daily delivery window HH:MM-HH:MM in --tz, may cross midnight (22:00-06:00)"),
		tz:                 fs.String("tz", "", "time zone of --window, an IANA name such as Europe/Paris (default UTC)"),
		maxInFlight:        fs.Int("max-in-flight", 0, "requests in flight at once to this subscription, 1 to 256 (default 8)"),
		rateLimit:          fs.String("rate-limit", "", "requests per second across every relay, e.g. 1 or 0.5; none for unlimited (default: 1 for slack, unlimited otherwise)"),
		rateBurst:          fs.Int("rate-burst", 0, "requests that may go at once after a quiet spell (default one second of --rate-limit)"),
		ordering:           fs.String("ordering", "", "none, or key: deliveries of events sharing a key go one at a time, in commit order (default none)"),
		ignoreGlobalWindow: fs.Bool("ignore-global-window", false, "deliver outside the global window of relay.settings"),
		outsideWindow:      fs.String("outside-window", "", "while a window is closed: defer (wait, the default), send (go out anyway) or skip (end the delivery as skipped)"),
		filter:             fs.String("filter", "", `payload filter, a PostgreSQL jsonpath: $.amount ? (@ > 100) or $.channel == "email"`),
	}
	fs.Var(&s.headers, "header", "custom header name=value (repeatable)")
	fs.Var(&s.allowCIDRs, "allow-cidr", "accept URLs in this address range, e.g. 10.0.0.0/8 (repeatable; env RELAY_ALLOW_CIDRS)")
	return s
}

// allowPrefixes parses --allow-cidr values, falling back to
// RELAY_ALLOW_CIDRS (comma-separated) when none is given.
func (c *CLI) allowPrefixes(flags []string) ([]string, []netip.Prefix, error) {
	raw := flags
	if len(raw) == 0 {
		raw = splitList(c.getenv("RELAY_ALLOW_CIDRS"))
	}
	var cidrs []string
	var out []netip.Prefix
	for _, r := range raw {
		for _, s := range splitList(r) {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				a, aerr := netip.ParseAddr(s)
				if aerr != nil {
					return nil, nil, usageError("invalid --allow-cidr %q: want a prefix such as 10.0.0.0/8 or fd00::/8", s)
				}
				a = a.WithZone("")
				p = netip.PrefixFrom(a, a.BitLen())
			}
			cidrs = append(cidrs, s)
			out = append(out, p.Masked())
		}
	}
	return cidrs, out, nil
}

func parseHeaders(list []string) (map[string]string, error) {
	h := map[string]string{}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, usageError("invalid --header %q: want name=value", kv)
		}
		h[strings.TrimSpace(k)] = v
	}
	return h, nil
}

func parseTimeout(s string) (int, error) {
	d, err := parseDurationArg(s)
	if err != nil {
		return 0, usageError("invalid --timeout: %v", err)
	}
	if d < time.Millisecond {
		return 0, usageError("invalid --timeout %q: want a positive duration such as 10s", s)
	}
	return int(d / time.Millisecond), nil
}

func parseRetry(s string) ([]time.Duration, error) {
	out := []time.Duration{}
	if t := strings.TrimSpace(s); t == "" || t == "none" {
		return out, nil
	}
	for _, p := range splitList(s) {
		d, err := parseDurationArg(p)
		if err != nil {
			return nil, usageError("invalid --retry: %v", err)
		}
		out = append(out, d)
	}
	return out, nil
}

// parseWindow reads HH:MM-HH:MM.
func parseWindow(s string) (start, end string, err error) {
	start, end, ok := strings.Cut(strings.TrimSpace(s), "-")
	start, end = strings.TrimSpace(start), strings.TrimSpace(end)
	if ok {
		_, err1 := subscriptions.ParseTimeOfDay(start)
		_, err2 := subscriptions.ParseTimeOfDay(end)
		ok = err1 == nil && err2 == nil
	}
	if !ok {
		return "", "", usageError("invalid --window %q: want HH:MM-HH:MM, e.g. 22:00-06:00", s)
	}
	return start, end, nil
}

func parseEvents(s string) ([]string, error) {
	ev := splitList(s)
	if len(ev) == 0 {
		return nil, usageError("--events needs at least one event type or pattern (thread.created, thread.* or *)")
	}
	return ev, nil
}

// changes reads the settings flags given on the command line, parsed and
// checked, into the fields of an UpdateParams: a field is set only when
// its flag was. subs update writes them as they are; subs add turns them
// into CreateParams (see create). zoneOnly reports --tz without --window:
// the zone of the current window changes.
func (ss *subSettings) changes(set map[string]bool) (p subscriptions.UpdateParams, n int, zoneOnly bool, err error) {
	if set["name"] {
		p.Name, n = ss.name, n+1
	}
	if set["url"] {
		u := strings.TrimSpace(*ss.url)
		p.URL, n = &u, n+1
	}
	if set["events"] {
		ev, err := parseEvents(*ss.events)
		if err != nil {
			return p, 0, false, err
		}
		p.EventTypes, n = &ev, n+1
	}
	if set["format"] {
		p.Format, n = ss.format, n+1
	}
	if set["template"] {
		p.Template, n = ss.template, n+1
	}
	if len(ss.headers) > 0 {
		h, err := parseHeaders(ss.headers)
		if err != nil {
			return p, 0, false, err
		}
		p.Headers, n = &h, n+1
	}
	if set["timeout"] {
		ms, err := parseTimeout(*ss.timeout)
		if err != nil {
			return p, 0, false, err
		}
		p.TimeoutMS, n = &ms, n+1
	}
	if set["retry"] {
		r, err := parseRetry(*ss.retry)
		if err != nil {
			return p, 0, false, err
		}
		p.RetrySchedule, n = &r, n+1
	}
	if set["max-in-flight"] {
		p.MaxInFlight, n = ss.maxInFlight, n+1
	}
	if set["rate-limit"] {
		r, err := parseRateLimit(*ss.rateLimit)
		if err != nil {
			return p, 0, false, err
		}
		p.RateLimit, n = &r, n+1
	}
	if set["rate-burst"] {
		p.RateBurst, n = ss.rateBurst, n+1
	}
	if set["ordering"] {
		p.Ordering, n = ss.ordering, n+1
	}
	if set["ignore-global-window"] {
		p.IgnoreGlobalWindow, n = ss.ignoreGlobalWindow, n+1
	}
	if set["outside-window"] {
		p.OutsideWindow, n = ss.outsideWindow, n+1
	}
	if set["filter"] {
		// "none" removes the filter.
		f := strings.TrimSpace(*ss.filter)
		if f == "none" {
			f = ""
		}
		p.Filter, n = &f, n+1
	}
	switch {
	case set["window"]:
		// "none" (or empty) removes the window.
		w := &subscriptions.Window{TimeZone: *ss.tz}
		if t := strings.TrimSpace(*ss.window); t != "none" && t != "" {
			if w.Start, w.End, err = parseWindow(t); err != nil {
				return p, 0, false, err
			}
		}
		p.Window, n = w, n+1
	case set["tz"]:
		p.Window, n, zoneOnly = &subscriptions.Window{TimeZone: *ss.tz}, n+1, true
	}
	return p, n, zoneOnly, nil
}

// create is what subs add makes of changes: unset fields take the
// defaults of CreateParams.
func create(u subscriptions.UpdateParams) subscriptions.CreateParams {
	var p subscriptions.CreateParams
	p.Name, p.URL, p.EventTypes = deref(u.Name), deref(u.URL), deref(u.EventTypes)
	p.Format, p.MaxInFlight, p.IgnoreGlobalWindow = deref(u.Format), deref(u.MaxInFlight), deref(u.IgnoreGlobalWindow)
	p.Headers, p.TimeoutMS, p.Window = deref(u.Headers), deref(u.TimeoutMS), u.Window
	p.OutsideWindow, p.Filter, p.Ordering = deref(u.OutsideWindow), deref(u.Filter), deref(u.Ordering)
	// 0 means "remove" to update; to a new subscription, "the default".
	if u.RateLimit != nil && *u.RateLimit != 0 {
		p.RateLimit = u.RateLimit
	}
	if u.RateBurst != nil && *u.RateBurst != 0 {
		p.RateBurst = u.RateBurst
	}
	if u.Template != nil && *u.Template != "" {
		p.Template = u.Template
	}
	if u.RetrySchedule != nil {
		p.RetrySchedule = *u.RetrySchedule
	}
	return p
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// checkURL runs the friendly URL check before anything is written: https
// (http only when relay.settings.allow_http), no internal addresses unless
// allowed.
func checkURL(ctx context.Context, st *subscriptions.Store, raw string, allow []netip.Prefix) error {
	allowHTTP, err := st.AllowHTTP(ctx)
	if err != nil {
		return err
	}
	cidrs := make([]string, len(allow))
	for i, p := range allow {
		cidrs[i] = p.String()
	}
	guard, err := send.NewAddressGuard(cidrs)
	if err != nil {
		return usageError("%v", err)
	}
	return storeError(subscriptions.ValidateURL(raw, allowHTTP, guard.Check), "")
}

func (c *CLI) subsAdd(ctx context.Context, a *subsAction, args []string) error {
	sc := c.subsFlags(a)
	ss := c.defineSubSettings(sc.fs)
	owner := sc.fs.String("owner", "", "the tenant whose events this subscription receives (default: none, an operator subscription that receives every owner's events)")
	secret := sc.fs.String("secret", "", "use this whsec_… secret instead of a generated one")
	disabled := sc.fs.Bool("disabled", false, "create the subscription disabled")
	if err := parse(sc.fs, args); err != nil {
		return err
	}
	if sc.fs.NArg() != 0 {
		return usageError("subs add takes no arguments (got %q); use --name, --url and --events", sc.fs.Arg(0))
	}
	for _, req := range []struct{ flag, val string }{{"name", *ss.name}, {"url", *ss.url}, {"events", *ss.events}} {
		if strings.TrimSpace(req.val) == "" {
			sc.fs.Usage()
			return usageError("subs add needs --%s", req.flag)
		}
	}
	set := flagsSet(sc.fs)
	if set["tz"] && !set["window"] {
		return usageError("--tz needs --window")
	}
	if set["window"] {
		// A new subscription has no window to remove.
		if _, _, err := parseWindow(*ss.window); err != nil {
			return err
		}
	}
	changes, _, _, err := ss.changes(set)
	if err != nil {
		return err
	}
	p := create(changes)
	p.Secret = *secret
	if *owner != "" {
		p.Owner = owner
	}
	if *disabled {
		f := false
		p.Enabled = &f
	}
	_, allow, err := c.allowPrefixes(ss.allowCIDRs)
	if err != nil {
		return err
	}
	st, done, err := sc.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := checkURL(ctx, st, p.URL, allow); err != nil {
		return err
	}
	s, err := st.Create(ctx, p)
	if err != nil {
		return storeError(err, "")
	}
	if *sc.asJSON {
		v := newSubView(s)
		v.Secret = s.Secret
		return printJSON(c.Stdout, v)
	}
	fmt.Fprintf(c.Stdout, "created subscription %d %q for %s\n", s.ID, s.Name, ownerText(s.Owner))
	fmt.Fprintf(c.Stdout, "  url:    %s\n  events: %s\n", safeText(send.MaskURL(s.URL)), safeText(strings.Join(s.EventTypes, ", ")))
	fmt.Fprintf(c.Stdout, "secret: %s\n", s.Secret)
	fmt.Fprintf(c.Stdout, "Store the secret now: it is not shown again ('relay subs rotate %d' makes a new one).\n", s.ID)
	return nil
}

func (c *CLI) subsShow(ctx context.Context, a *subsAction, args []string) error {
	sc := c.subsFlags(a)
	id, err := sc.parseWithID(args)
	if err != nil {
		return err
	}
	st, done, err := sc.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	s, err := st.Get(ctx, id, nil)
	if err != nil {
		return storeError(err, subName(id))
	}
	stats, err := st.Stats(ctx, id, nil, 24*time.Hour)
	if err != nil {
		return storeError(err, subName(id))
	}
	if *sc.asJSON {
		v := newSubView(s)
		v.Stats24h = &stats.Stats
		return printJSON(c.Stdout, v)
	}
	c.printSub(s, &stats.Stats)
	return nil
}

// printSub prints one subscription as "field: value" lines.
func (c *CLI) printSub(s subscriptions.Subscription, stats *subscriptions.Stats) {
	t := newTable(c.Stdout)
	t.row("id:", s.ID)
	t.row("name:", s.Name)
	t.row("owner:", ownerText(s.Owner))
	t.row("url:", send.MaskURL(s.URL))
	t.row("events:", strings.Join(s.EventTypes, ", "))
	if s.Enabled {
		t.row("enabled:", "yes")
	} else {
		t.row("enabled:", "no ("+orDash(s.DisabledReason)+")")
	}
	t.row("format:", s.Format)
	if s.Template != nil {
		t.row("template:", truncate(*s.Template, 60))
	}
	if len(s.Headers) > 0 {
		names := make([]string, 0, len(s.Headers))
		for k := range s.Headers {
			names = append(names, k+": ***")
		}
		sort.Strings(names)
		t.row("headers:", strings.Join(names, ", "))
	}
	t.row("timeout:", durationText(time.Duration(s.TimeoutMS)*time.Millisecond))
	if len(s.RetrySchedule) == 0 {
		t.row("retries:", "none")
	} else {
		r := make([]string, len(s.RetrySchedule))
		for i, d := range s.RetrySchedule {
			r[i] = durationText(d)
		}
		t.row("retries:", strings.Join(r, ", ")+" after the first attempt")
	}
	t.row("max in flight:", s.MaxInFlight)
	t.row("pace:", paceText(s))
	t.row("ordering:", s.Ordering)
	switch {
	case s.CircuitOpenedAt != nil:
		t.row("circuit:", "open since "+s.CircuitOpenedAt.UTC().Format(time.RFC3339)+": one probe per interval")
	case s.HeldUntil != nil && s.HeldUntil.After(time.Now()):
		reason := "held"
		if s.HoldReason != nil {
			reason = *s.HoldReason
		}
		t.row("held:", reason+" until "+s.HeldUntil.UTC().Format(time.RFC3339))
	}
	window := "always"
	if w := s.Window(); w != nil {
		window = w.Start + "-" + w.End + " " + w.TimeZone
	}
	if s.IgnoreGlobalWindow {
		window += " (ignores the global window)"
	}
	t.row("window:", window)
	t.row("outside window:", s.OutsideWindow)
	if s.Filter != nil {
		t.row("filter:", truncate(*s.Filter, 100))
	}
	secrets := "1"
	if n := len(s.PreviousSecrets); n > 0 {
		last := s.PreviousSecrets[0].ExpiresAt
		for _, p := range s.PreviousSecrets {
			if p.ExpiresAt.After(last) {
				last = p.ExpiresAt
			}
		}
		secrets = fmt.Sprintf("1 + %d previous still signing until %s", n, timeText(last))
	}
	t.row("secrets:", secrets)
	health := fmt.Sprintf("%d consecutive failures", s.ConsecutiveFailures)
	if s.FailingSince != nil {
		health += ", failing since " + timeText(*s.FailingSince)
	}
	t.row("health:", health)
	t.row("last success:", timePtrText(s.LastSuccessAt))
	t.row("last failure:", timePtrText(s.LastFailureAt))
	if s.LastError != nil {
		t.row("last error:", truncate(*s.LastError, 100))
	}
	if stats != nil {
		line := fmt.Sprintf("%d deliveries, %d succeeded, %d failed, %d pending", stats.Deliveries, stats.Succeeded, stats.Failed, stats.Pending)
		if stats.SuccessRate != nil {
			line += fmt.Sprintf(" (%.1f%% success)", *stats.SuccessRate*100)
		}
		if stats.P50DurationMS != nil && stats.P95DurationMS != nil {
			line += fmt.Sprintf(", p50 %.0f ms, p95 %.0f ms", *stats.P50DurationMS, *stats.P95DurationMS)
		}
		t.row("last 24h:", line)
		backlog := fmt.Sprint(stats.Backlog)
		if stats.OldestPendingSeconds != nil {
			backlog += ", oldest " + durationText(time.Duration(*stats.OldestPendingSeconds*float64(time.Second)))
		}
		t.row("backlog:", backlog)
	}
	t.row("created:", timeText(s.CreatedAt))
	t.row("updated:", timeText(s.UpdatedAt))
	t.flush()
}

func (c *CLI) subsUpdate(ctx context.Context, a *subsAction, args []string) error {
	sc := c.subsFlags(a)
	ss := c.defineSubSettings(sc.fs)
	clearHeaders := sc.fs.Bool("clear-headers", false, "remove every custom header")
	id, err := sc.parseWithID(args)
	if err != nil {
		return err
	}
	if *clearHeaders && len(ss.headers) > 0 {
		return usageError("--clear-headers and --header exclude each other")
	}
	p, changes, windowNeedsCurrent, err := ss.changes(flagsSet(sc.fs))
	if err != nil {
		return err
	}
	if *clearHeaders {
		h := map[string]string{}
		p.Headers, changes = &h, changes+1
	}
	if changes == 0 {
		sc.fs.Usage()
		return usageError("subs update needs at least one change (--name, --url, --events, …)")
	}
	_, allow, err := c.allowPrefixes(ss.allowCIDRs)
	if err != nil {
		return err
	}
	st, done, err := sc.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	if windowNeedsCurrent {
		cur, err := st.Get(ctx, id, nil)
		if err != nil {
			return storeError(err, subName(id))
		}
		if w := cur.Window(); w != nil {
			p.Window.Start, p.Window.End = w.Start, w.End
		}
	}
	if p.URL != nil {
		if err := checkURL(ctx, st, *p.URL, allow); err != nil {
			return err
		}
	}
	s, err := st.Update(ctx, id, nil, p)
	if err != nil {
		return storeError(err, subName(id))
	}
	if *sc.asJSON {
		return printJSON(c.Stdout, newSubView(s))
	}
	fmt.Fprintf(c.Stdout, "updated subscription %d\n", s.ID)
	c.printSub(s, nil)
	return nil
}

func (c *CLI) subsRemove(ctx context.Context, a *subsAction, args []string) error {
	sc := c.subsFlags(a)
	id, err := sc.parseWithID(args)
	if err != nil {
		return err
	}
	st, done, err := sc.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := st.Delete(ctx, id, nil); err != nil {
		return storeError(err, subName(id))
	}
	if *sc.asJSON {
		return printJSON(c.Stdout, map[string]any{"id": id, "removed": true})
	}
	fmt.Fprintf(c.Stdout, "removed subscription %d with its deliveries\n", id)
	return nil
}

func (c *CLI) subsEnable(ctx context.Context, a *subsAction, args []string) error {
	return c.subsSetEnabled(ctx, a, args, true)
}

func (c *CLI) subsDisable(ctx context.Context, a *subsAction, args []string) error {
	return c.subsSetEnabled(ctx, a, args, false)
}

func (c *CLI) subsSetEnabled(ctx context.Context, a *subsAction, args []string, enable bool) error {
	sc := c.subsFlags(a)
	var reason *string
	if !enable {
		reason = sc.fs.String("reason", "", "why, recorded as the disabled reason (default \""+subscriptions.DefaultDisabledReason+"\")")
	}
	id, err := sc.parseWithID(args)
	if err != nil {
		return err
	}
	st, done, err := sc.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	r := ""
	if reason != nil {
		r = *reason
	}
	s, err := st.SetEnabled(ctx, id, nil, enable, r)
	if err != nil {
		return storeError(err, subName(id))
	}
	if *sc.asJSON {
		return printJSON(c.Stdout, newSubView(s))
	}
	if enable {
		fmt.Fprintf(c.Stdout, "subscription %d enabled\n", id)
	} else {
		fmt.Fprintf(c.Stdout, "subscription %d disabled: %s (its deliveries wait until 'relay subs enable %d')\n", id, orDash(s.DisabledReason), id)
	}
	return nil
}

func (c *CLI) subsRotate(ctx context.Context, a *subsAction, args []string) error {
	sc := c.subsFlags(a)
	graceArg := sc.fs.String("grace", "24h", "how long the old secret keeps signing as a second signature (0 drops it now, at most 30d)")
	id, err := sc.parseWithID(args)
	if err != nil {
		return err
	}
	grace, err := parseDurationArg(*graceArg)
	if err != nil {
		return usageError("invalid --grace: %v", err)
	}
	st, done, err := sc.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	secret, err := st.RotateSecret(ctx, id, nil, grace)
	if err != nil {
		return storeError(err, subName(id))
	}
	var until *time.Time
	if grace > 0 {
		u := time.Now().Add(grace)
		until = &u
	}
	if *sc.asJSON {
		return printJSON(c.Stdout, map[string]any{"id": id, "secret": secret, "previous_secret_valid_until": until})
	}
	fmt.Fprintf(c.Stdout, "new secret for subscription %d: %s\n", id, secret)
	if until != nil {
		fmt.Fprintf(c.Stdout, "The previous secret keeps signing for %s (until %s): update the receiver before then.\n", durationText(grace), timeText(*until))
	} else {
		fmt.Fprintln(c.Stdout, "The previous secret no longer signs.")
	}
	return nil
}

// testView is the JSON of subs test.
type testView struct {
	SubscriptionID int64  `json:"subscription_id"`
	Delivered      bool   `json:"delivered"`
	StatusCode     int    `json:"status_code,omitempty"`
	DurationMS     int64  `json:"duration_ms"`
	Error          string `json:"error,omitempty"`
	EventID        string `json:"event_id"`
	DeliveryID     int64  `json:"delivery_id"`
}

func (c *CLI) subsTest(ctx context.Context, a *subsAction, args []string) error {
	sc := c.subsFlags(a)
	var allowFlags stringsFlag
	sc.fs.Var(&allowFlags, "allow-cidr", "let the request reach this address range, e.g. 127.0.0.0/8 (repeatable; env RELAY_ALLOW_CIDRS)")
	id, err := sc.parseWithID(args)
	if err != nil {
		return err
	}
	cidrs, _, err := c.allowPrefixes(allowFlags)
	if err != nil {
		return err
	}
	guard, err := send.NewAddressGuard(cidrs)
	if err != nil {
		return usageError("%v", err)
	}
	pool, err := c.connectDB(ctx, *sc.dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	sender := send.New(send.Config{Guard: guard, UserAgent: userAgent()})
	defer sender.CloseIdleConnections()
	d, err := dispatch.New(dispatch.Config{Pool: pool, Sender: sender, Logger: zerolog.Nop()})
	if err != nil {
		return err
	}
	res, err := d.Test(ctx, id)
	if errors.Is(err, dispatch.ErrSubscriptionNotFound) {
		return &ExitError{Code: 1, Err: fmt.Errorf("%s not found", subName(id))}
	}
	if err != nil {
		return fmt.Errorf("testing subscription %d: %w", id, err)
	}
	if *sc.asJSON {
		if err := printJSON(c.Stdout, testView{
			SubscriptionID: id, Delivered: res.Delivered, StatusCode: res.StatusCode, DurationMS: res.DurationMS,
			Error: res.Error, EventID: res.EventID, DeliveryID: res.DeliveryID,
		}); err != nil {
			return err
		}
	} else if res.Delivered {
		fmt.Fprintf(c.Stdout, "delivered: %d in %d ms\n", res.StatusCode, res.DurationMS)
	} else {
		reason := res.Error
		if reason == "" {
			reason = fmt.Sprintf("HTTP %d", res.StatusCode)
		}
		fmt.Fprintf(c.Stdout, "failed: %s (after %d ms)\n", safeText(reason), res.DurationMS)
	}
	if !res.Delivered {
		return &ExitError{Code: 1, Err: fmt.Errorf("test delivery %d to subscription %d failed", res.DeliveryID, id)}
	}
	return nil
}

// parseRateLimit reads --rate-limit: requests per second, or none (0:
// unlimited).
func parseRateLimit(v string) (float64, error) {
	v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "/s"))
	if v == "none" || v == "unlimited" {
		return 0, nil
	}
	r, err := strconv.ParseFloat(v, 64)
	if err != nil || r <= 0 || r > 10000 || r != r {
		return 0, usageError("invalid --rate-limit %q: want requests per second above 0 and at most 10000 (e.g. 1 or 0.5), or none", v)
	}
	return r, nil
}

// paceText describes a subscription's rate limit.
func paceText(s subscriptions.Subscription) string {
	if s.RateLimit == nil {
		return "unlimited"
	}
	burst := max(1, int(*s.RateLimit))
	if s.RateBurst != nil {
		burst = *s.RateBurst
	}
	return strconv.FormatFloat(*s.RateLimit, 'f', -1, 64) + "/s, burst " + strconv.Itoa(burst)
}
