package send

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestAddressGuardCheck(t *testing.T) {
	t.Parallel()
	cases := []struct {
		addr     string
		class    string // "" means allowed
		embedded string
	}{
		// Public addresses pass.
		{"93.184.216.34", "", ""},
		{"8.8.8.8", "", ""},
		{"2606:2800:220:1:248:1893:25c8:1946", "", ""},
		{"::ffff:93.184.216.34", "", ""},
		{"64:ff9b::808:808", "", ""},
		{"172.32.0.1", "", ""},  // just past 172.16/12
		{"100.128.0.1", "", ""}, // just past 100.64/10
		{"11.0.0.1", "", ""},
		// IPv4 classes.
		{"127.0.0.1", ClassLoopback, ""},
		{"127.255.255.254", ClassLoopback, ""},
		{"10.0.0.1", ClassPrivate, ""},
		{"172.16.0.1", ClassPrivate, ""},
		{"172.31.255.255", ClassPrivate, ""},
		{"192.168.1.1", ClassPrivate, ""},
		{"169.254.169.254", ClassLinkLocal, ""},
		{"169.254.0.1", ClassLinkLocal, ""},
		{"100.64.1.1", ClassCGNAT, ""},
		{"100.127.255.255", ClassCGNAT, ""},
		{"224.0.0.1", ClassMulticast, ""},
		{"239.255.255.250", ClassMulticast, ""},
		{"0.0.0.0", ClassUnspecified, ""},
		{"0.1.2.3", ClassThisNetwork, ""},
		{"255.255.255.255", ClassBroadcast, ""},
		{"240.0.0.1", ClassReserved, ""},
		// IPv6 classes.
		{"::1", ClassLoopback, ""},
		{"::", ClassUnspecified, ""},
		{"fe80::1", ClassLinkLocal, ""},
		{"fe80::1%eth0", ClassLinkLocal, ""},
		{"fd00::1", ClassUniqueLocal, ""},
		{"fc00::1", ClassUniqueLocal, ""},
		{"fec0::1", ClassSiteLocal, ""},
		{"ff02::1", ClassMulticast, ""},
		// IPv4 embedded in IPv6.
		{"::ffff:127.0.0.1", ClassLoopback, "127.0.0.1"},
		{"::ffff:10.1.2.3", ClassPrivate, "10.1.2.3"},
		{"::ffff:169.254.169.254", ClassLinkLocal, "169.254.169.254"},
		{"::ffff:0.0.0.0", ClassUnspecified, "0.0.0.0"},
		{"::127.0.0.1", ClassLoopback, "127.0.0.1"},
		{"::192.168.0.1", ClassPrivate, "192.168.0.1"},
		{"64:ff9b::127.0.0.1", ClassLoopback, "127.0.0.1"},
		{"64:ff9b::a9fe:a9fe", ClassLinkLocal, "169.254.169.254"},
		{"2002:7f00:1::", ClassLoopback, "127.0.0.1"},
	}
	g, err := NewAddressGuard(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.addr, func(t *testing.T) {
			t.Parallel()
			err := g.Check(netip.MustParseAddr(tc.addr))
			if tc.class == "" {
				if err != nil {
					t.Fatalf("Check(%s) = %v, want allowed", tc.addr, err)
				}
				return
			}
			var fe *ForbiddenAddressError
			if !errors.As(err, &fe) {
				t.Fatalf("Check(%s) = %v, want *ForbiddenAddressError", tc.addr, err)
			}
			if !errors.Is(err, ErrForbiddenAddress) {
				t.Errorf("errors.Is(err, ErrForbiddenAddress) = false")
			}
			if fe.Class != tc.class {
				t.Errorf("class = %q, want %q", fe.Class, tc.class)
			}
			var want netip.Addr
			if tc.embedded != "" {
				want = netip.MustParseAddr(tc.embedded)
			}
			if fe.Embedded != want {
				t.Errorf("embedded = %v, want %v", fe.Embedded, want)
			}
			if !strings.Contains(err.Error(), "refused (allow it with --allow-cidr)") {
				t.Errorf("message %q lacks the hint", err)
			}
		})
	}
}

func TestForbiddenAddressErrorMessage(t *testing.T) {
	t.Parallel()
	g, _ := NewAddressGuard(nil)
	for addr, want := range map[string]string{
		"127.0.0.1":        "address 127.0.0.1 is loopback; refused (allow it with --allow-cidr)",
		"::ffff:127.0.0.1": "address ::ffff:127.0.0.1 is loopback (embeds IPv4 127.0.0.1); refused (allow it with --allow-cidr)",
		"100.64.1.1":       "address 100.64.1.1 is shared (CGNAT); refused (allow it with --allow-cidr)",
	} {
		if got := g.Check(netip.MustParseAddr(addr)).Error(); got != want {
			t.Errorf("Check(%s).Error() = %q, want %q", addr, got, want)
		}
	}
	if err := g.Check(netip.Addr{}); !errors.Is(err, ErrForbiddenAddress) {
		t.Errorf("Check(zero Addr) = %v, want forbidden", err)
	}
}

func TestAddressGuardAllowList(t *testing.T) {
	t.Parallel()
	g, err := NewAddressGuard([]string{"127.0.0.0/8", " 10.1.2.0/24 ", "fd00::/8", "192.168.1.7", ""})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		addr    string
		allowed bool
	}{
		{"127.0.0.1", true},
		{"::ffff:127.0.0.1", true}, // same host as 127.0.0.1
		{"::127.0.0.1", true},
		{"::1", false}, // not covered: IPv6 loopback is another prefix
		{"10.1.2.200", true},
		{"10.1.3.1", false},
		{"fd00::1", true},
		{"fc00::1", false},
		{"192.168.1.7", true},
		{"192.168.1.8", false},
		{"169.254.169.254", false},
	}
	for _, tc := range cases {
		err := g.Check(netip.MustParseAddr(tc.addr))
		if (err == nil) != tc.allowed {
			t.Errorf("Check(%s) = %v, want allowed=%v", tc.addr, err, tc.allowed)
		}
	}
	got := g.AllowList()
	if len(got) != 4 || got[3].String() != "192.168.1.7/32" {
		t.Errorf("AllowList() = %v", got)
	}
}

func TestNewAddressGuardBadCIDR(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"10.0.0.0/33", "not-a-cidr", "10.0.0/8", "fd00::/129"} {
		_, err := NewAddressGuard([]string{"127.0.0.0/8", bad})
		if err == nil {
			t.Errorf("NewAddressGuard(%q) succeeded, want error", bad)
			continue
		}
		if !strings.Contains(err.Error(), `"`+bad+`"`) {
			t.Errorf("error %q does not name %q", err, bad)
		}
	}
}

func TestAddressGuardNil(t *testing.T) {
	t.Parallel()
	var g *AddressGuard
	if err := g.Check(netip.MustParseAddr("127.0.0.1")); err == nil {
		t.Error("nil guard allowed loopback")
	}
	if err := g.Check(netip.MustParseAddr("93.184.216.34")); err != nil {
		t.Errorf("nil guard refused a public address: %v", err)
	}
}

func TestAddressGuardControl(t *testing.T) {
	t.Parallel()
	g, _ := NewAddressGuard(nil)
	cases := []struct {
		network, address string
		ok               bool
	}{
		{"tcp4", "93.184.216.34:443", true},
		{"tcp6", "[2606:2800:220:1:248:1893:25c8:1946]:443", true},
		{"tcp4", "127.0.0.1:443", false},
		{"tcp6", "[::1]:443", false},
		{"tcp6", "[fe80::1%eth0]:443", false},
		{"tcp6", "[::ffff:169.254.169.254]:80", false},
		{"unix", "/var/run/docker.sock", false},
		{"tcp", "example.com:443", false}, // never a name at dial time
	}
	for _, tc := range cases {
		err := g.Control(tc.network, tc.address, nil)
		if (err == nil) != tc.ok {
			t.Errorf("Control(%s, %s) = %v, want ok=%v", tc.network, tc.address, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("Control(%s, %s) error %v is not ErrForbiddenAddress", tc.network, tc.address, err)
		}
	}
}
