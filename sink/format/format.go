// Package format renders the body of a webhook request from an event:
// the Standard Webhooks JSON envelope, and the Slack and Discord chat
// messages with their message templates. It is pure: bytes in, bytes out,
// nothing of PostgreSQL or HTTP.
package format

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Body formats, as stored in relay.subscriptions.format.
const (
	JSON    = "json"
	Slack   = "slack"
	Discord = "discord"
)

// ErrUnknownFormat is wrapped by RenderBody for a format it does not know.
// A delivery that hits it cannot succeed on retry: it is permanent (see
// classify.IsPermanent).
var ErrUnknownFormat error = permanentError("unknown format")

// permanentError is an error no retry can cure.
type permanentError string

func (e permanentError) Error() string { return string(e) }

// Permanent reports true: see classify.IsPermanent.
func (permanentError) Permanent() bool { return true }

// Limits of the chat formats: Slack section text (3000), Discord content
// (2000), embed title (256), embed description (4096), field value (1024).
// Longer text is cut and ends with "…".
const (
	slackTextLimit        = 3000
	discordContentLimit   = 2000
	discordTitleLimit     = 256
	discordDescLimit      = 4096
	discordFieldLimit     = 1024
	fallbackPayloadLimit  = 500
	discordPayloadLimit   = 1000
	timestampLayoutSecond = "2006-01-02T15:04:05Z"
	timestampLayoutMilli  = "2006-01-02T15:04:05.000Z"
)

// EventView is what a body is rendered from: one outbox event.
type EventView struct {
	EventID string
	Type    string
	// Owner and Key are nil for SQL NULL (rendered as JSON null).
	Owner *string
	Key   *string
	// Timestamp is when the event was written (outbox created_at).
	Timestamp time.Time
	// Payload is the event's JSON object, as Postgres' jsonb text. It is
	// copied into json bodies verbatim and is not validated; empty means {}.
	Payload json.RawMessage
}

// RenderBody renders the request body of one delivery.
//
// format "json" (or "") gives the Standard Webhooks envelope, with keys in
// this order:
//
//	{"id":"…","type":"…","timestamp":"…","owner":…,"key":…,"data":<payload>}
//
// timestamp is RFC 3339 in UTC, with seconds ("2026-02-04T10:30:00Z"), or
// with milliseconds when the sub-second part is at least a millisecond
// ("2026-02-04T10:30:00.123Z"); finer digits are dropped. owner and key are
// null when absent. The payload is copied verbatim, without parsing, because
// this is the hot path; template is ignored for json.
//
// "slack" gives {"text", "blocks"} and "discord" gives {"content", "embeds"}
// with a human sentence for the event (see defaultText), or, when template
// is not empty, the template rendered by RenderTemplate. Any other format is
// an error wrapping ErrUnknownFormat.
func RenderBody(format string, ev EventView, template string) ([]byte, error) {
	switch format {
	case JSON, "":
		return AppendJSONBody(make([]byte, 0, len(ev.Payload)+len(ev.EventID)+len(ev.Type)+128), ev), nil
	case Slack:
		return renderSlack(ev, template)
	case Discord:
		return renderDiscord(ev, template)
	}
	return nil, fmt.Errorf("%w %q: want json, slack or discord", ErrUnknownFormat, format)
}

// AppendJSONBody appends the json-format body of ev to dst and returns the
// extended slice, so a caller can reuse buffers. See RenderBody.
func AppendJSONBody(dst []byte, ev EventView) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendJSONString(dst, ev.EventID)
	dst = append(dst, `,"type":`...)
	dst = appendJSONString(dst, ev.Type)
	dst = append(dst, `,"timestamp":"`...)
	dst = appendTimestamp(dst, ev.Timestamp)
	dst = append(dst, `","owner":`...)
	dst = appendJSONNullableString(dst, ev.Owner)
	dst = append(dst, `,"key":`...)
	dst = appendJSONNullableString(dst, ev.Key)
	dst = append(dst, `,"data":`...)
	if p := bytes.TrimSpace(ev.Payload); len(p) > 0 {
		dst = append(dst, p...)
	} else {
		dst = append(dst, '{', '}')
	}
	return append(dst, '}')
}

func appendTimestamp(dst []byte, t time.Time) []byte {
	t = t.UTC().Truncate(time.Millisecond)
	if t.Nanosecond() == 0 {
		return t.AppendFormat(dst, timestampLayoutSecond)
	}
	return t.AppendFormat(dst, timestampLayoutMilli)
}

func formatTimestamp(t time.Time) string { return string(appendTimestamp(nil, t)) }

func appendJSONNullableString(dst []byte, s *string) []byte {
	if s == nil {
		return append(dst, "null"...)
	}
	return appendJSONString(dst, *s)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Like encoding/json it escapes
// control characters, U+2028 and U+2029, and replaces invalid UTF-8 with
// U+FFFD; unlike it, it leaves <, > and & alone (no HTML here).
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// decodePayload parses the payload for the chat formats, keeping numbers
// as written. An empty or invalid payload gives nil.
func decodePayload(p json.RawMessage) any {
	if len(bytes.TrimSpace(p)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil
	}
	return v
}

// compactPayload returns the payload as one line of JSON ("" for an empty
// payload or {}); an invalid payload is returned as its trimmed text.
func compactPayload(p json.RawMessage) string {
	p = bytes.TrimSpace(p)
	if len(p) == 0 {
		return ""
	}
	var b bytes.Buffer
	if err := json.Compact(&b, p); err != nil {
		return string(p)
	}
	if b.String() == "{}" {
		return ""
	}
	return b.String()
}

// defaultText is the human sentence the chat formats show for an event:
//
//	thread.created             New thread: <title>
//	message.sent               New message in thread <thread_id>
//	analysis.completed         Analysis completed for thread <thread_id>: <concepts_count> concepts
//	webhook.test               Test event from relay
//	relay.subscription.failing Webhook subscription "<subscription_name>" is failing: <consecutive_failures> consecutive failed deliveries (last error: <last_error>)
//	relay.subscription.disabled Webhook subscription "<subscription_name>" was disabled: <reason>
//	anything else              <type> event: <payload as compact JSON, cut at 500 characters>
//
// For the relay.subscription.* events the name is read from
// subscription_name, else name, else subscription_id; the reason from
// reason, else disabled_reason. Missing parts are left out.
func defaultText(ev EventView, data any) string {
	f := func(path string) string { return lookupString(data, path) }
	switch ev.Type {
	case "thread.created":
		if t := f("title"); t != "" {
			return "New thread: " + t
		}
		if id := f("thread_id"); id != "" {
			return "New thread " + id
		}
		return "New thread"
	case "message.sent":
		return joinNonEmpty("New message in thread", f("thread_id"))
	case "analysis.completed":
		s := joinNonEmpty("Analysis completed for thread", f("thread_id"))
		if n := f("concepts_count"); n != "" {
			s += ": " + n + " concepts"
		}
		return s
	case "webhook.test":
		return "Test event from relay"
	case "relay.subscription.failing":
		s := "Webhook subscription " + subscriptionLabel(data) + " is failing"
		if n := f("consecutive_failures"); n != "" {
			s += ": " + n + " consecutive failed deliveries"
		}
		if e := f("last_error"); e != "" {
			s += " (last error: " + e + ")"
		}
		return s
	case "relay.subscription.disabled":
		s := "Webhook subscription " + subscriptionLabel(data) + " was disabled"
		if r := firstNonEmpty(f("reason"), f("disabled_reason")); r != "" {
			s += ": " + r
		}
		return s
	}
	s := ev.Type + " event"
	if c := compactPayload(ev.Payload); c != "" {
		s += ": " + truncateRunes(c, fallbackPayloadLimit)
	}
	return s
}

func subscriptionLabel(data any) string {
	if n := firstNonEmpty(lookupString(data, "subscription_name"), lookupString(data, "name")); n != "" {
		return `"` + n + `"`
	}
	if id := lookupString(data, "subscription_id"); id != "" {
		return id
	}
	return "(unnamed)"
}

func joinNonEmpty(a, b string) string {
	if b == "" {
		return a
	}
	return a + " " + b
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// truncateRunes cuts s to at most n characters, the last being "…" when
// something was cut.
func truncateRunes(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n || utf8.RuneCountInString(s) <= n { // bytes >= runes
		return s
	}
	count := 0
	for i := range s {
		if count == n-1 {
			return s[:i] + "…"
		}
		count++
	}
	return s
}

// lookup walks a dotted path ("a.b.0.c") through decoded JSON; numeric
// segments index arrays. It reports false when any step is missing.
func lookup(data any, path string) (any, bool) {
	cur := data
	for seg := range strings.SplitSeq(path, ".") {
		switch v := cur.(type) {
		case map[string]any:
			next, ok := v[seg]
			if !ok {
				return nil, false
			}
			cur = next
		case []any:
			i, err := parseIndex(seg)
			if err != nil || i >= len(v) {
				return nil, false
			}
			cur = v[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

func parseIndex(s string) (int, error) {
	if !isDigits(s) || len(s) > 9 {
		return 0, errors.New("not an index")
	}
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n, nil
}

func lookupString(data any, path string) string {
	v, ok := lookup(data, path)
	if !ok {
		return ""
	}
	return valueString(v)
}

// valueString renders one JSON value as template text: strings as they are,
// numbers as written, booleans as true/false, null as empty, and objects or
// arrays as compact JSON.
func valueString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		if x {
			return "true"
		}
		return "false"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

// RenderTemplate expands a user-written message template. It is a plain
// substitution language, not text/template: each {{name}} (spaces inside
// the braces allowed) is replaced by
//
//	{{id}} {{type}} {{owner}} {{key}} {{timestamp}}   the event's own fields
//	{{data}}                                        the whole payload, compact JSON
//	{{data.a.b}} or {{a.b}}                          a payload field; numeric parts index arrays
//
// A field that is missing or null renders as empty; an object or array
// renders as compact JSON. An unclosed "{{" is kept literally. escape, when
// not nil, is applied to substituted values only, so the template's own
// text (a Slack link such as <https://x|here>, say) passes through.
func RenderTemplate(template string, ev EventView, escape func(string) string) string {
	return renderTemplate(template, ev, decodePayload(ev.Payload), escape)
}

func renderTemplate(tmpl string, ev EventView, data any, escape func(string) string) string {
	var b strings.Builder
	b.Grow(len(tmpl) + 64)
	rest := tmpl
	for {
		open := strings.Index(rest, "{{")
		if open < 0 {
			break
		}
		closeAt := strings.Index(rest[open+2:], "}}")
		if closeAt < 0 {
			break
		}
		b.WriteString(rest[:open])
		v := templateValue(strings.TrimSpace(rest[open+2:open+2+closeAt]), ev, data)
		if escape != nil {
			v = escape(v)
		}
		b.WriteString(v)
		rest = rest[open+2+closeAt+2:]
	}
	b.WriteString(rest)
	return b.String()
}

func templateValue(name string, ev EventView, data any) string {
	switch name {
	case "id":
		return ev.EventID
	case "type":
		return ev.Type
	case "owner":
		return deref(ev.Owner)
	case "key":
		return deref(ev.Key)
	case "timestamp":
		return formatTimestamp(ev.Timestamp)
	case "data":
		return compactPayload(ev.Payload)
	case "":
		return ""
	}
	if p, ok := strings.CutPrefix(name, "data."); ok {
		name = p
	}
	return lookupString(data, name)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// slackEscape escapes the three characters Slack's mrkdwn treats as control
// characters.
var slackEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace

type slackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type slackBlock struct {
	Type     string      `json:"type"`
	Text     *slackText  `json:"text,omitempty"`
	Elements []slackText `json:"elements,omitempty"`
}

type slackMessage struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks"`
}

func renderSlack(ev EventView, template string) ([]byte, error) {
	data := decodePayload(ev.Payload)
	var text string
	if template != "" {
		text = renderTemplate(template, ev, data, slackEscape)
	} else {
		text = slackEscape(defaultText(ev, data))
	}
	text = truncateRunes(text, slackTextLimit)
	ctx := "relay · `" + slackEscape(ev.Type) + "` · " + slackEscape(ev.EventID)
	if ev.Owner != nil && *ev.Owner != "" {
		ctx += " · owner " + slackEscape(*ev.Owner)
	}
	msg := slackMessage{
		Text: text,
		Blocks: []slackBlock{
			{Type: "section", Text: &slackText{Type: "mrkdwn", Text: text}},
			{Type: "context", Elements: []slackText{{Type: "mrkdwn", Text: truncateRunes(ctx, slackTextLimit)}}},
		},
	}
	return json.Marshal(msg)
}

type discordField struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Inline bool   `json:"inline"`
}

type discordEmbed struct {
	Title       string         `json:"title"`
	Description string         `json:"description,omitempty"`
	Fields      []discordField `json:"fields,omitempty"`
	Timestamp   string         `json:"timestamp"`
}

type discordAllowedMentions struct {
	Parse []string `json:"parse"`
}

type discordMessage struct {
	Content         string                 `json:"content"`
	Embeds          []discordEmbed         `json:"embeds"`
	AllowedMentions discordAllowedMentions `json:"allowed_mentions"`
}

// renderDiscord builds a Discord webhook message. allowed_mentions is empty
// so text from a payload can never ping @everyone or a role.
func renderDiscord(ev EventView, template string) ([]byte, error) {
	data := decodePayload(ev.Payload)
	var text string
	if template != "" {
		text = renderTemplate(template, ev, data, nil)
	} else {
		text = defaultText(ev, data)
	}
	embed := discordEmbed{
		Title:     truncateRunes(ev.Type, discordTitleLimit),
		Timestamp: formatTimestamp(ev.Timestamp),
	}
	if c := compactPayload(ev.Payload); c != "" {
		c = strings.ReplaceAll(truncateRunes(c, discordPayloadLimit), "```", "`\u200b``")
		embed.Description = truncateRunes("```json\n"+c+"\n```", discordDescLimit)
	}
	addField := func(name, value string) {
		if value != "" {
			embed.Fields = append(embed.Fields, discordField{Name: name, Value: truncateRunes(value, discordFieldLimit), Inline: true})
		}
	}
	addField("Event ID", ev.EventID)
	addField("Owner", deref(ev.Owner))
	addField("Key", deref(ev.Key))
	msg := discordMessage{
		Content:         truncateRunes(text, discordContentLimit),
		Embeds:          []discordEmbed{embed},
		AllowedMentions: discordAllowedMentions{Parse: []string{}},
	}
	return json.Marshal(msg)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
