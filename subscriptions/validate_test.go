package subscriptions_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/relay/sink/send"
	"github.com/pgoutbox/relay/subscriptions"
)

func TestMatchPattern(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, typ string
		want         bool
	}{
		{"*", "thread.created", true},
		{"*", "a", true},
		{"thread.created", "thread.created", true},
		{"thread.created", "thread.created.x", false},
		{"thread.created", "thread", false},
		{"thread.*", "thread.created", true},
		{"thread.*", "thread.created.by.bot", true},
		{"thread.*", "thread", false},
		{"thread.*", "threads.created", false},
		{"thread.*", "thread.", false},
		{"thread.*", "message.thread.created", false},
		{"a.b.*", "a.b.c", true},
		{"a.b.*", "a.bc.d", false},
		{"a.b.*", "a.b", false},
		{"message.sent", "message.sent", true},
		{"message.sent", "message.sen", false},
		{"", "", true}, // degenerate: exact match of the empty string
	}
	for _, c := range cases {
		if got := subscriptions.MatchPattern(c.pattern, c.typ); got != c.want {
			t.Errorf("MatchPattern(%q, %q) = %v, want %v", c.pattern, c.typ, got, c.want)
		}
	}
	if !subscriptions.MatchAny([]string{"x.y", "thread.*"}, "thread.archived") || subscriptions.MatchAny(nil, "a") {
		t.Error("MatchAny")
	}
}

func TestValidEventPattern(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"*", "a", "thread.created", "thread.*", "a_b.c1.*"} {
		if !subscriptions.ValidEventPattern(p) {
			t.Errorf("%q should be a valid pattern", p)
		}
	}
	for _, p := range []string{"", "Thread", "thread.*.x", "thread*", ".a", "a..b", "*.a", "1a", strings.Repeat("a", 201)} {
		if subscriptions.ValidEventPattern(p) {
			t.Errorf("%q should be refused", p)
		}
	}
	if subscriptions.ValidEventType("thread.*") || !subscriptions.ValidEventType("thread.created") {
		t.Error("ValidEventType")
	}
}

func TestValidateURL(t *testing.T) {
	t.Parallel()
	loop := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	ten := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	cases := []struct {
		url       string
		allowHTTP bool
		allow     []netip.Prefix
		wantErr   string // "" = accepted
	}{
		{"https://hooks.example.com/abc", false, nil, ""},
		{"https://hooks.example.com:8443/abc?x=1#f", false, nil, ""},
		{"HTTPS://Hooks.Example.com/", false, nil, ""},
		{"https://user:pw@hooks.example.com/", false, nil, ""},
		{"https://93.184.216.34/hook", false, nil, ""},
		{"https://[2606:2800:220:1::1]/hook", false, nil, ""},
		{"", false, nil, "must not be empty"},
		{"http://hooks.example.com/", false, nil, "must use https://"},
		{"http://hooks.example.com/", true, nil, ""},
		{"ftp://hooks.example.com/", true, nil, "must use https://"},
		{"hooks.example.com/x", false, nil, "absolute"},
		{"/relative", false, nil, "absolute"},
		{"mailto:a@b.c", false, nil, "absolute"},
		{"https:///path", false, nil, "no host"},
		{"https://hooks.example .com/", false, nil, "spaces"},
		{"https://hooks.example.com:99999/", false, nil, "invalid port"},
		{"https://localhost/x", false, nil, "localhost"},
		{"https://LOCALHOST./x", false, nil, "localhost"},
		{"https://api.localhost/x", false, nil, "localhost"},
		{"https://localhost/x", false, loop, ""},
		{"https://notlocalhost.com/x", false, nil, ""},
		{"https://127.0.0.1/x", false, nil, "loopback"},
		{"https://127.0.0.1:8080/x", false, loop, ""},
		{"https://[::1]/x", false, nil, "loopback"},
		{"https://[::ffff:127.0.0.1]/x", false, nil, "loopback"},
		{"https://10.1.2.3/x", false, nil, "private"},
		{"https://10.1.2.3/x", false, ten, ""},
		{"https://10.2.2.3/x", false, ten, "private"},
		{"https://172.16.0.1/x", false, nil, "private"},
		{"https://192.168.1.1/x", false, nil, "private"},
		{"https://169.254.169.254/latest/meta-data", false, nil, "link-local"},
		{"https://100.64.0.1/x", false, nil, "CGNAT"},
		{"https://[fd00::1]/x", false, nil, "unique-local"},
		{"https://[fe80::1%25eth0]/x", false, nil, "link-local"},
		{"https://0.0.0.0/x", false, nil, "unspecified"},
		{"https://[::]/x", false, nil, "unspecified"},
		{"https://224.0.0.1/x", false, nil, "multicast"},
		{"https://" + strings.Repeat("a", 2000) + ".com/", false, nil, "at most 2000"},
		// Shorthand IPv4 forms name the address browsers and inet_aton
		// read in them.
		{"https://127.1/x", false, nil, "url: 127.1 is a shorthand of 127.0.0.1; address 127.0.0.1 is loopback; refused (allow it with --allow-cidr)"},
		{"https://2130706433/x", false, nil, "2130706433 is a shorthand of 127.0.0.1; address 127.0.0.1 is loopback"},
		{"https://0x7f000001/x", false, nil, "loopback"},
		{"https://0177.0.0.1/x", false, nil, "loopback"},
		{"https://0/x", false, nil, "0 is a shorthand of 0.0.0.0; address 0.0.0.0 is unspecified"},
		{"https://127.0.0.1./x", false, nil, "url: address 127.0.0.1 is loopback; refused"},
		{"https://0xa9fea9fe/latest/meta-data", false, nil, "link-local"},
		{"https://10.258/x", false, nil, "10.258 is a shorthand of 10.0.1.2; address 10.0.1.2 is private"},
		{"https://10.1.2.3/x", false, nil, "url: address 10.1.2.3 is private; refused (allow it with --allow-cidr)"},
		{"https://[64:ff9b::7f00:1]/x", false, nil, "embeds IPv4 127.0.0.1"}, // NAT64, as the guard sees it
		{"https://127.1:8080/x", false, loop, ""},
		{"https://134744072/x", false, nil, ""}, // 8.8.8.8
		{"https://1.2.3.4.5/x", false, nil, "not a valid address"},
		{"https://256.1.1.1/x", false, nil, "not a valid address"},
		{"https://foo.123/x", false, nil, "not a valid address"},
	}
	for _, c := range cases {
		cidrs := make([]string, len(c.allow))
		for i, p := range c.allow {
			cidrs[i] = p.String()
		}
		guard, err := send.NewAddressGuard(cidrs)
		if err != nil {
			t.Fatal(err)
		}
		err = subscriptions.ValidateURL(c.url, c.allowHTTP, guard.Check)
		if c.wantErr == "" {
			if err != nil {
				t.Errorf("ValidateURL(%q) = %v, want nil", c.url, err)
			}
			continue
		}
		var ve *subscriptions.ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("ValidateURL(%q) = %v, want a *ValidationError", c.url, err)
			continue
		}
		if ve.Field != "url" || !strings.Contains(ve.Message, c.wantErr) {
			t.Errorf("ValidateURL(%q) = field %q %q, want url and %q", c.url, ve.Field, ve.Message, c.wantErr)
		}
	}
}

func TestCreateParamsValidate(t *testing.T) {
	t.Parallel()
	good := func() subscriptions.CreateParams {
		return subscriptions.CreateParams{Name: "n", URL: "https://a.example.com/", EventTypes: []string{"a.b"}}
	}
	empty := ""
	cases := []struct {
		name   string
		mutate func(*subscriptions.CreateParams)
		field  string
	}{
		{"empty owner", func(p *subscriptions.CreateParams) { p.Owner = &empty }, "owner"},
		{"blank name", func(p *subscriptions.CreateParams) { p.Name = "  " }, "name"},
		{"long name", func(p *subscriptions.CreateParams) { p.Name = strings.Repeat("é", 201) }, "name"},
		{"no url", func(p *subscriptions.CreateParams) { p.URL = "" }, "url"},
		{"no events", func(p *subscriptions.CreateParams) { p.EventTypes = nil }, "event_types"},
		{"bad pattern", func(p *subscriptions.CreateParams) { p.EventTypes = []string{"a.*.b"} }, "event_types"},
		{"bad secret", func(p *subscriptions.CreateParams) { p.Secret = "hunter2" }, "secret"},
		{"bad format", func(p *subscriptions.CreateParams) { p.Format = "xml" }, "format"},
		{"reserved header", func(p *subscriptions.CreateParams) { p.Headers = map[string]string{"Webhook-Id": "x"} }, "headers"},
		{"bad header name", func(p *subscriptions.CreateParams) { p.Headers = map[string]string{"a b": "x"} }, "headers"},
		{"multi-line header", func(p *subscriptions.CreateParams) { p.Headers = map[string]string{"x-a": "1\r\nx-b: 2"} }, "headers"},
		{"control in header", func(p *subscriptions.CreateParams) { p.Headers = map[string]string{"x-a": "a\x1b[31m"} }, "headers"},
		{"C1 in header", func(p *subscriptions.CreateParams) { p.Headers = map[string]string{"x-a": "a\u009bb"} }, "headers"},
		{"NUL in header", func(p *subscriptions.CreateParams) { p.Headers = map[string]string{"x-a": "a\x00"} }, "headers"},
		{"too many headers", func(p *subscriptions.CreateParams) {
			p.Headers = map[string]string{}
			for i := range 21 {
				p.Headers["x-h"+strings.Repeat("a", i)] = "v"
			}
		}, "headers"},
		{"long header value", func(p *subscriptions.CreateParams) { p.Headers = map[string]string{"x-a": strings.Repeat("v", 4097)} }, "headers"},
		{"long header name", func(p *subscriptions.CreateParams) { p.Headers = map[string]string{strings.Repeat("x", 129): "v"} }, "headers"},
		{"ESC in name", func(p *subscriptions.CreateParams) { p.Name = "bell\u0007esc\u001b[31mred" }, "name"},
		{"NUL in name", func(p *subscriptions.CreateParams) { p.Name = "a\x00b" }, "name"},
		{"DEL in name", func(p *subscriptions.CreateParams) { p.Name = "a\x7fb" }, "name"},
		{"C1 CSI in name", func(p *subscriptions.CreateParams) { p.Name = "a\u009b31mb" }, "name"},
		{"tab in name", func(p *subscriptions.CreateParams) { p.Name = "a\tb" }, "name"},
		{"invalid UTF-8 name", func(p *subscriptions.CreateParams) { p.Name = "a\xffb" }, "name"},
		{"ESC in owner", func(p *subscriptions.CreateParams) { o := "al\x1bice"; p.Owner = &o }, "owner"},
		{"ESC in template", func(p *subscriptions.CreateParams) { t := "New {{type}}\x1b]0;x\x07"; p.Template = &t }, "template"},
		{"long template", func(p *subscriptions.CreateParams) { t := strings.Repeat("x", 10001); p.Template = &t }, "template"},
		{"timeout", func(p *subscriptions.CreateParams) { p.TimeoutMS = 999 }, "timeout_ms"},
		{"negative retry", func(p *subscriptions.CreateParams) { p.RetrySchedule = []time.Duration{-time.Second} }, "retry_schedule"},
		{"long retry", func(p *subscriptions.CreateParams) { p.RetrySchedule = []time.Duration{8 * 24 * time.Hour} }, "retry_schedule"},
		{"many retries", func(p *subscriptions.CreateParams) { p.RetrySchedule = make([]time.Duration, 21) }, "retry_schedule"},
		{"in flight", func(p *subscriptions.CreateParams) { p.MaxInFlight = 300 }, "max_in_flight"},
		{"half window", func(p *subscriptions.CreateParams) { p.Window = &subscriptions.Window{Start: "22:00"} }, "window_start"},
		{"bad window end", func(p *subscriptions.CreateParams) { p.Window = &subscriptions.Window{Start: "22:00", End: "25:00"} }, "window_end"},
	}
	for _, c := range cases {
		p := good()
		c.mutate(&p)
		err := p.Validate()
		var ve *subscriptions.ValidationError
		if !errors.As(err, &ve) || ve.Field != c.field {
			t.Errorf("%s: Validate() = %v, want a ValidationError on %s", c.name, err, c.field)
		}
	}
	p := good()
	p.RetrySchedule = []time.Duration{}
	p.Window = &subscriptions.Window{Start: "22:00", End: "06:00:30", TimeZone: "Europe/Paris"}
	p.Headers = map[string]string{"X-Team": "core", "X-Tabbed": "a\tb", "X-Long": strings.Repeat("v", 4096)}
	p.Name = "Équipe — support ✓"
	tmpl := "New thread:\n\t{{data.title}}\r\n" + strings.Repeat("x", 9000)
	p.Template = &tmpl
	if err := p.Validate(); err != nil {
		t.Fatalf("good params refused: %v", err)
	}
}

// TestControlCharacterMessages checks that refusals name the character
// without echoing it (an ESC in an error message would reach the terminal
// anyway).
func TestControlCharacterMessages(t *testing.T) {
	t.Parallel()
	name := "bell\u0007esc\u001b[31mred"
	p := subscriptions.CreateParams{Name: name, URL: "https://a.example.com/", EventTypes: []string{"a.b"}}
	err := p.Validate()
	if err == nil || err.Error() != "name must not contain control characters (found U+0007)" {
		t.Fatalf("Validate() = %v", err)
	}
	reason := "gone\x1b[2J"
	u := subscriptions.UpdateParams{Enabled: new(bool), DisabledReason: &reason}
	if err := u.Validate(); err == nil || !strings.Contains(err.Error(), "U+001B") {
		t.Fatalf("UpdateParams.Validate() = %v", err)
	}
}
