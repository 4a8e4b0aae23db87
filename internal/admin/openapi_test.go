package admin

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestOpenAPICoversRoutes checks that openapi.json is valid and describes
// every route the server registers, and nothing else.
func TestOpenAPICoversRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapiJSON, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	seen := map[string]bool{}
	for _, rt := range routes {
		ops, ok := doc.Paths[rt.pattern]
		if !ok {
			t.Errorf("openapi.json lacks path %s", rt.pattern)
			continue
		}
		if _, ok := ops[strings.ToLower(rt.method)]; !ok {
			t.Errorf("openapi.json lacks %s %s", rt.method, rt.pattern)
		}
		seen[strings.ToLower(rt.method)+" "+rt.pattern] = true
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			if !seen[method+" "+path] {
				t.Errorf("openapi.json describes %s %s, which the server does not serve", method, path)
			}
		}
	}
}

func TestMaskURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://hooks.make.com/abc123xyz?token=s": "https://hooks.make.com/abc***",
		"https://user:pw@example.com:8443/":        "https://example.com:8443/***",
		"https://a.example.com":                    "https://a.example.com/***",
		"not a url":                                "***",
	} {
		if got := maskURL(in); got != want {
			t.Errorf("maskURL(%q) = %q, want %q", in, got, want)
		}
	}
}
