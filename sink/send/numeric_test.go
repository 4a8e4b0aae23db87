package send

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/pgoutbox/relay/sink/policy/classify"
)

// TestSendNumericHosts checks that the shorthand IPv4 forms browsers and
// inet_aton accept reach the address they name, with the Host a browser
// would send, and are never handed to the resolver (which would fail on
// every attempt); forbidden ones are refused by the guard for good.
func TestSendNumericHosts(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var hosts []string
	srv, hits := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hosts = append(hosts, r.Host)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	s := loopbackSender(t, Config{})
	for _, host := range []string{"127.1", "127.0.1", "2130706433", "0x7f000001", "0X7F.1", "0177.0.0.1", "127.0.0.1."} {
		res := s.Send(context.Background(), Request{URL: "http://" + host + ":" + port + "/hook?x=1", AllowHTTP: true})
		if res.Err != nil || res.StatusCode != http.StatusNoContent {
			t.Errorf("%s: Send = %+v, want 204", host, res)
		}
	}
	mu.Lock()
	for _, h := range hosts {
		if h != "127.0.0.1:"+port {
			t.Errorf("receiver saw Host %q, want the canonical 127.0.0.1:%s", h, port)
		}
	}
	mu.Unlock()
	before := hits.Load()

	// Without an allow list the guard refuses them like 127.0.0.1, for good.
	strict := strictSender(t)
	for _, host := range []string{"127.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.0.0.1.", "0"} {
		res := strict.Send(context.Background(), Request{URL: "http://" + host + ":" + port + "/hook", AllowHTTP: true})
		var fe *ForbiddenAddressError
		if !errors.As(res.Err, &fe) {
			t.Errorf("%s: Send err = %v, want *ForbiddenAddressError", host, res.Err)
			continue
		}
		if want := map[bool]string{true: ClassUnspecified, false: ClassLoopback}[host == "0"]; fe.Class != want {
			t.Errorf("%s: refused as %s, want %s", host, fe.Class, want)
		}
		if v := classify.Classify(res.StatusCode, res.Err); v != classify.VerdictFail {
			t.Errorf("%s: verdict %v, want failed (not retried)", host, v)
		}
	}
	// A host that ends in a number without being an address is refused at
	// once, as browsers refuse it, instead of being resolved.
	for _, host := range []string{"1.2.3.4.5", "256.0.0.1", "foo.123"} {
		res := s.Send(context.Background(), Request{URL: "http://" + host + ":" + port + "/hook", AllowHTTP: true})
		if !errors.Is(res.Err, ErrInvalidURL) {
			t.Errorf("%s: Send err = %v, want ErrInvalidURL", host, res.Err)
		}
		if v := classify.Classify(res.StatusCode, res.Err); v != classify.VerdictFail {
			t.Errorf("%s: verdict %v, want failed", host, v)
		}
	}
	if n := hits.Load(); n != before {
		t.Errorf("receiver got %d more requests, want none", n-before)
	}
}
