package format

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pgoutbox/relay/sink/policy/classify"
)

func strptr(s string) *string { return &s }

func testEvent() EventView {
	return EventView{
		EventID:   "0190a5b2-7c3e-7def-8a12-3456789abcde",
		Type:      "thread.created",
		Owner:     strptr("user-42"),
		Key:       strptr("thread-7"),
		Timestamp: time.Date(2026, 2, 4, 11, 30, 0, 0, time.FixedZone("CET", 3600)),
		Payload:   json.RawMessage(`{"thread_id": 7, "title": "Hello <world> & \"friends\"", "tags": ["a", "b"], "meta": {"n": 12345678901234567890}}`),
	}
}

func decodeObject(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("output is not a JSON object: %v\n%s", err, b)
	}
	return m
}

func TestRenderBodyJSON(t *testing.T) {
	t.Parallel()
	ev := testEvent()
	got, err := RenderBody("json", ev, "{{ignored}}")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"0190a5b2-7c3e-7def-8a12-3456789abcde","type":"thread.created","timestamp":"2026-02-04T10:30:00Z","owner":"user-42","key":"thread-7","data":` +
		`{"thread_id": 7, "title": "Hello <world> & \"friends\"", "tags": ["a", "b"], "meta": {"n": 12345678901234567890}}}`
	if string(got) != want {
		t.Errorf("body =\n%s\nwant\n%s", got, want)
	}
	m := decodeObject(t, got)
	if m["id"] != ev.EventID || m["type"] != "thread.created" || m["owner"] != "user-42" || m["key"] != "thread-7" {
		t.Errorf("fields = %v", m)
	}
	data := m["data"].(map[string]any)
	if data["title"] != `Hello <world> & "friends"` || data["meta"].(map[string]any)["n"].(json.Number) != "12345678901234567890" {
		t.Errorf("data not verbatim: %v", data)
	}
	if d, err := RenderBody("", ev, ""); err != nil || !bytes.Equal(d, got) {
		t.Errorf(`format "" should be json: %s, %v`, d, err)
	}
}

func TestRenderBodyJSONEdges(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		ev   EventView
		want string
	}{
		{
			name: "null owner and key, empty payload, milliseconds",
			ev:   EventView{EventID: "e1", Type: "a.b", Timestamp: time.Date(2026, 2, 4, 10, 30, 0, 123456789, time.UTC)},
			want: `{"id":"e1","type":"a.b","timestamp":"2026-02-04T10:30:00.123Z","owner":null,"key":null,"data":{}}`,
		},
		{
			name: "sub-millisecond dropped",
			ev:   EventView{EventID: "e2", Type: "a.b", Timestamp: time.Date(2026, 2, 4, 10, 30, 0, 999, time.UTC), Payload: json.RawMessage(" {\"x\":1}\n")},
			want: `{"id":"e2","type":"a.b","timestamp":"2026-02-04T10:30:00Z","owner":null,"key":null,"data":{"x":1}}`,
		},
		{
			name: "escaping in owner and key",
			ev:   EventView{EventID: "e3", Type: "a.b", Owner: strptr("a\"b\\c\n\t\x01<&>\u2028é"), Key: strptr("bad\xffutf8"), Timestamp: time.Unix(0, 0)},
			want: `{"id":"e3","type":"a.b","timestamp":"1970-01-01T00:00:00Z","owner":"a\"b\\c\n\t\u0001<&>\u2028é","key":"bad\ufffdutf8","data":{}}`,
		},
	}
	for _, tc := range cases {
		got, err := RenderBody(JSON, tc.ev, "")
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
		if !json.Valid(got) {
			t.Errorf("%s: invalid JSON %s", tc.name, got)
		}
	}
}

// appendJSONString must agree with encoding/json on every string (apart
// from HTML escaping, which it does not do).
func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	inputs := []string{"", "plain", "quote\"back\\slash", "\x00\x1f\x7f", "é中😀", "\u2028\u2029", "bad\xff\xfe", "\xed\xa0\x80", "tab\tnl\ncr\r", "\b\f"}
	for _, s := range inputs {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		got := string(appendJSONString(nil, s))
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Errorf("appendJSONString(%q) = %s: invalid: %v", s, got, err)
			continue
		}
		var wantBack string
		_ = json.Unmarshal(want.Bytes(), &wantBack)
		if back != wantBack {
			t.Errorf("appendJSONString(%q) decodes to %q, encoding/json to %q", s, back, wantBack)
		}
	}
}

func TestRenderBodySlack(t *testing.T) {
	t.Parallel()
	got, err := RenderBody(Slack, testEvent(), "")
	if err != nil {
		t.Fatal(err)
	}
	m := decodeObject(t, got)
	wantText := "New thread: Hello &lt;world&gt; &amp; \"friends\""
	if m["text"] != wantText {
		t.Errorf("text = %q, want %q", m["text"], wantText)
	}
	blocks := m["blocks"].([]any)
	if len(blocks) != 2 {
		t.Fatalf("blocks = %v", blocks)
	}
	section := blocks[0].(map[string]any)
	if section["type"] != "section" {
		t.Errorf("first block = %v", section)
	}
	st := section["text"].(map[string]any)
	if st["type"] != "mrkdwn" || st["text"] != wantText {
		t.Errorf("section text = %v", st)
	}
	ctx := blocks[1].(map[string]any)
	el := ctx["elements"].([]any)[0].(map[string]any)
	if ctx["type"] != "context" || el["type"] != "mrkdwn" ||
		!strings.Contains(el["text"].(string), "`thread.created`") ||
		!strings.Contains(el["text"].(string), "0190a5b2-7c3e-7def-8a12-3456789abcde") {
		t.Errorf("context block = %v", ctx)
	}
}

func TestRenderBodyDiscord(t *testing.T) {
	t.Parallel()
	ev := testEvent()
	ev.Type = "message.sent"
	ev.Payload = json.RawMessage(`{"thread_id": "t-9", "message_id": 3, "agent": "@everyone"}`)
	got, err := RenderBody(Discord, ev, "")
	if err != nil {
		t.Fatal(err)
	}
	m := decodeObject(t, got)
	if m["content"] != "New message in thread t-9" {
		t.Errorf("content = %q", m["content"])
	}
	embeds := m["embeds"].([]any)
	if len(embeds) != 1 {
		t.Fatalf("embeds = %v", embeds)
	}
	e := embeds[0].(map[string]any)
	if e["title"] != "message.sent" || e["timestamp"] != "2026-02-04T10:30:00Z" {
		t.Errorf("embed = %v", e)
	}
	if d := e["description"].(string); !strings.HasPrefix(d, "```json\n") || !strings.Contains(d, `"thread_id":"t-9"`) {
		t.Errorf("description = %q", d)
	}
	fields := e["fields"].([]any)
	names := []string{}
	for _, f := range fields {
		fm := f.(map[string]any)
		names = append(names, fm["name"].(string)+"="+fm["value"].(string))
	}
	if strings.Join(names, ",") != "Event ID=0190a5b2-7c3e-7def-8a12-3456789abcde,Owner=user-42,Key=thread-7" {
		t.Errorf("fields = %v", names)
	}
	am := m["allowed_mentions"].(map[string]any)
	if p := am["parse"].([]any); len(p) != 0 {
		t.Errorf("allowed_mentions = %v", am)
	}
}

func TestDefaultText(t *testing.T) {
	t.Parallel()
	long := `{"blob":"` + strings.Repeat("x", 800) + `"}`
	cases := []struct {
		typ, payload, want string
	}{
		{"thread.created", `{"thread_id":7,"title":"Plans"}`, "New thread: Plans"},
		{"thread.created", `{"thread_id":7}`, "New thread 7"},
		{"message.sent", `{"thread_id":7,"message_id":3}`, "New message in thread 7"},
		{"analysis.completed", `{"thread_id":"t1","concepts_count":12}`, "Analysis completed for thread t1: 12 concepts"},
		{"analysis.completed", `{"thread_id":"t1"}`, "Analysis completed for thread t1"},
		{"webhook.test", `{}`, "Test event from relay"},
		{"relay.subscription.failing", `{"subscription_name":"Slack alerts","consecutive_failures":5,"last_error":"timeout after 10s"}`,
			`Webhook subscription "Slack alerts" is failing: 5 consecutive failed deliveries (last error: timeout after 10s)`},
		{"relay.subscription.failing", `{"subscription_id":"42"}`, `Webhook subscription 42 is failing`},
		{"relay.subscription.disabled", `{"name":"Zapier","reason":"endpoint answered 410 Gone"}`,
			`Webhook subscription "Zapier" was disabled: endpoint answered 410 Gone`},
		{"relay.subscription.disabled", `{}`, `Webhook subscription (unnamed) was disabled`},
		{"invoice.paid", `{ "amount" : 12.50, "currency": "EUR" }`, `invoice.paid event: {"amount":12.50,"currency":"EUR"}`},
		{"invoice.paid", `{}`, `invoice.paid event`},
		{"invoice.paid", `not json`, `invoice.paid event: not json`},
	}
	for _, tc := range cases {
		ev := EventView{Type: tc.typ, Payload: json.RawMessage(tc.payload)}
		if got := defaultText(ev, decodePayload(ev.Payload)); got != tc.want {
			t.Errorf("defaultText(%s, %s) = %q, want %q", tc.typ, tc.payload, got, tc.want)
		}
	}
	ev := EventView{Type: "blob.stored", Payload: json.RawMessage(long)}
	got := defaultText(ev, decodePayload(ev.Payload))
	suffix := strings.TrimPrefix(got, "blob.stored event: ")
	if n := utf8.RuneCountInString(suffix); n != 500 || !strings.HasSuffix(suffix, "…") {
		t.Errorf("long payload: %d characters (%q…), want 500 ending in …", n, suffix[:20])
	}
}

func TestRenderTemplate(t *testing.T) {
	t.Parallel()
	ev := testEvent()
	ev.Payload = json.RawMessage(`{"title":"Plans","user":{"name":"Ann","roles":["admin","dev"]},"n":3,"ok":true,"none":null,"type":"inner"}`)
	cases := []struct{ tmpl, want string }{
		{"{{title}}", "Plans"},
		{"{{ data.title }} by {{data.user.name}}", "Plans by Ann"},
		{"{{user.name}}", "Ann"},
		{"{{data.user.roles.1}}", "dev"},
		{"{{data.user.roles.9}}", ""},
		{"{{data.user.roles}}", `["admin","dev"]`},
		{"{{data.user}}", `{"name":"Ann","roles":["admin","dev"]}`},
		{"{{n}}/{{ok}}/{{none}}/{{missing}}/{{a.b.c}}", "3/true///"},
		{"{{type}} vs {{data.type}}", "thread.created vs inner"},
		{"{{id}}", "0190a5b2-7c3e-7def-8a12-3456789abcde"},
		{"{{owner}}:{{key}}", "user-42:thread-7"},
		{"{{timestamp}}", "2026-02-04T10:30:00Z"},
		{"{{data}}", `{"title":"Plans","user":{"name":"Ann","roles":["admin","dev"]},"n":3,"ok":true,"none":null,"type":"inner"}`},
		{"no fields", "no fields"},
		{"open {{title", "open {{title"},
		{"{{}}x", "x"},
		{"}} {{title}} {{", "}} Plans {{"},
	}
	for _, tc := range cases {
		if got := RenderTemplate(tc.tmpl, ev, nil); got != tc.want {
			t.Errorf("RenderTemplate(%q) = %q, want %q", tc.tmpl, got, tc.want)
		}
	}
	ev.Owner = nil
	if got := RenderTemplate("[{{owner}}]", ev, nil); got != "[]" {
		t.Errorf("nil owner rendered %q", got)
	}
}

func TestRenderBodyWithTemplate(t *testing.T) {
	t.Parallel()
	ev := testEvent()
	ev.Payload = json.RawMessage(`{"title":"a <b> & c","url":"https://app.example.com/t/7"}`)
	tmpl := "*{{title}}* — <{{url}}|open> ({{type}})"

	slack, err := RenderBody(Slack, ev, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	m := decodeObject(t, slack)
	want := "*a &lt;b&gt; &amp; c* — <https://app.example.com/t/7|open> (thread.created)"
	if m["text"] != want {
		t.Errorf("slack text = %q, want %q", m["text"], want)
	}

	discord, err := RenderBody(Discord, ev, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	m = decodeObject(t, discord)
	want = "*a <b> & c* — <https://app.example.com/t/7|open> (thread.created)"
	if m["content"] != want {
		t.Errorf("discord content = %q, want %q", m["content"], want)
	}
}

func TestRenderBodyLimits(t *testing.T) {
	t.Parallel()
	ev := testEvent()
	ev.Payload = json.RawMessage(`{"title":"` + strings.Repeat("é", 5000) + `"}`)
	slack, _ := RenderBody(Slack, ev, "")
	if n := utf8.RuneCountInString(decodeObject(t, slack)["text"].(string)); n != slackTextLimit {
		t.Errorf("slack text is %d characters, want %d", n, slackTextLimit)
	}
	discord, _ := RenderBody(Discord, ev, "")
	m := decodeObject(t, discord)
	if n := utf8.RuneCountInString(m["content"].(string)); n != discordContentLimit {
		t.Errorf("discord content is %d characters, want %d", n, discordContentLimit)
	}
}

func TestRenderBodyUnknownFormat(t *testing.T) {
	t.Parallel()
	_, err := RenderBody("xml", testEvent(), "")
	if !errors.Is(err, ErrUnknownFormat) || !strings.Contains(err.Error(), `"xml"`) {
		t.Errorf("err = %v", err)
	}
	// No retry renders it: the attempt fails at once.
	if v := classify.Classify(0, fmt.Errorf("rendering xml body: %w", err)); v != classify.VerdictFail {
		t.Errorf("Classify(unknown format) = %v, want failed", v)
	}
}

func TestTruncateRunes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		s    string
		n    int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 5, "hello"},
		{"hello!", 5, "hell…"},
		{"ééééé", 5, "ééééé"},
		{"éééééé", 5, "éééé…"},
		{"abc", 0, ""},
		{"abc", 1, "…"},
	}
	for _, tc := range cases {
		if got := truncateRunes(tc.s, tc.n); got != tc.want {
			t.Errorf("truncateRunes(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}

func BenchmarkRenderBodyJSON(b *testing.B) {
	payload := []byte(`{"thread_id":"0190a5b2-7c3e-7def-8a12-3456789abcde","title":"`)
	payload = append(payload, bytes.Repeat([]byte("x"), 500-len(payload)-2)...)
	payload = append(payload, '"', '}')
	if len(payload) != 500 {
		b.Fatalf("payload is %d bytes", len(payload))
	}
	ev := testEvent()
	ev.Payload = payload
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := RenderBody(JSON, ev, ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRenderBodySlack(b *testing.B) {
	ev := testEvent()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := RenderBody(Slack, ev, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// Whatever the event, chat bodies stay within what Slack and Discord
// accept (Slack: text fallback, at most 50 blocks, section text ≤ 3,000;
// Discord: content ≤ 2,000, at most 10 embeds, description ≤ 4,096, field
// values ≤ 1,024, title ≤ 256, 6,000 in all embeds), cut with a marker.
func TestRenderBodyChatLimitsOnHugeEvents(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 20000)
	owner, key := strings.Repeat("o", 5000), strings.Repeat("k", 5000)
	fields := map[string]string{}
	for i := 0; i < 300; i++ {
		fields[fmt.Sprintf("f%03d", i)] = strings.Repeat("v", 200)
	}
	fields["title"] = long
	payload, _ := json.Marshal(fields)
	ev := testEvent()
	ev.Owner, ev.Key, ev.Payload = &owner, &key, payload
	for _, template := range []string{"", "{{title}} {{title}} {{data.f001}}"} {
		slack, err := RenderBody(Slack, ev, template)
		if err != nil {
			t.Fatal(err)
		}
		var sm struct {
			Text   string `json:"text"`
			Blocks []struct {
				Text     *struct{ Text string }  `json:"text"`
				Elements []struct{ Text string } `json:"elements"`
			} `json:"blocks"`
		}
		if err := json.Unmarshal(slack, &sm); err != nil {
			t.Fatal(err)
		}
		if sm.Text == "" || utf8.RuneCountInString(sm.Text) > slackTextLimit || !strings.HasSuffix(sm.Text, "…") {
			t.Errorf("slack text fallback: %d characters, cut with a marker: %v", utf8.RuneCountInString(sm.Text), strings.HasSuffix(sm.Text, "…"))
		}
		if len(sm.Blocks) == 0 || len(sm.Blocks) > 50 {
			t.Errorf("slack blocks = %d", len(sm.Blocks))
		}
		for _, b := range sm.Blocks {
			if b.Text != nil && utf8.RuneCountInString(b.Text.Text) > 3000 {
				t.Errorf("slack section text of %d characters", utf8.RuneCountInString(b.Text.Text))
			}
			for _, e := range b.Elements {
				if utf8.RuneCountInString(e.Text) > 3000 {
					t.Errorf("slack context text of %d characters", utf8.RuneCountInString(e.Text))
				}
			}
		}
		discord, err := RenderBody(Discord, ev, template)
		if err != nil {
			t.Fatal(err)
		}
		var dm struct {
			Content string `json:"content"`
			Embeds  []struct {
				Title       string `json:"title"`
				Description string `json:"description"`
				Fields      []struct{ Name, Value string }
			} `json:"embeds"`
		}
		if err := json.Unmarshal(discord, &dm); err != nil {
			t.Fatal(err)
		}
		if utf8.RuneCountInString(dm.Content) > 2000 || !strings.HasSuffix(dm.Content, "…") {
			t.Errorf("discord content: %d characters", utf8.RuneCountInString(dm.Content))
		}
		if len(dm.Embeds) > 10 {
			t.Errorf("discord embeds = %d", len(dm.Embeds))
		}
		total := 0
		for _, e := range dm.Embeds {
			total += utf8.RuneCountInString(e.Title) + utf8.RuneCountInString(e.Description)
			if utf8.RuneCountInString(e.Title) > 256 || utf8.RuneCountInString(e.Description) > 4096 || len(e.Fields) > 25 {
				t.Errorf("discord embed over its limits: title %d, description %d, fields %d",
					utf8.RuneCountInString(e.Title), utf8.RuneCountInString(e.Description), len(e.Fields))
			}
			for _, f := range e.Fields {
				total += utf8.RuneCountInString(f.Name) + utf8.RuneCountInString(f.Value)
				if utf8.RuneCountInString(f.Value) > 1024 || utf8.RuneCountInString(f.Name) > 256 {
					t.Errorf("discord field %q of %d characters", f.Name, utf8.RuneCountInString(f.Value))
				}
			}
		}
		if total > 6000 {
			t.Errorf("discord embeds hold %d characters in all, over 6000", total)
		}
	}
}
