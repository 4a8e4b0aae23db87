package send

import "testing"

func TestMaskURL(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"https://hooks.make.com/abc123xyz?token=s":                                  "https://hooks.make.com/abc***",
		"https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXX": "https://hooks.slack.com/ser***",
		"https://hooks.example.com/":                                                "https://hooks.example.com/***",
		"https://hooks.example.com":                                                 "https://hooks.example.com/***",
		"https://hooks.example.com?secret=1":                                        "https://hooks.example.com/***",
		"https://user:password@example.com:8443/hook#frag":                          "https://example.com:8443/hoo***",
		"http://127.0.0.1:8080/x":                                                   "http://127.0.0.1:8080/x***",
		"https://[::1]:8443/webhook":                                                "https://[::1]:8443/web***",
		"HTTPS://Example.COM/Path":                                                  "https://Example.COM/Pat***",
		"https://example.com/%E2%82%AC-euro":                                        "https://example.com/%E2***",
		"https://example.com/é-path":                                                "https://example.com/%C3***",
		"  https://example.com/trimmed  ":                                           "https://example.com/tri***",
		"":                                                                          "***",
		"not a url":                                                                 "***",
		"/relative/path":                                                            "***",
		"mailto:ops@example.com":                                                    "***",
		"https://exa mple.com/x":                                                    "***",
		"http://[::1":                                                               "***",
		"://missing-scheme.com/x":                                                   "***",
	}
	for in, want := range cases {
		if got := MaskURL(in); got != want {
			t.Errorf("MaskURL(%q) = %q, want %q", in, got, want)
		}
	}
}
