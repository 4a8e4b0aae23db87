package fanout

import "testing"

func TestParseUUID(t *testing.T) {
	t.Parallel()
	u, ok := parseUUID("0195D5F0-7a3c-7c4e-9f1a-3b2c1d0e9f8a")
	want := [16]byte{0x01, 0x95, 0xd5, 0xf0, 0x7a, 0x3c, 0x7c, 0x4e, 0x9f, 0x1a, 0x3b, 0x2c, 0x1d, 0x0e, 0x9f, 0x8a}
	if !ok || u != want {
		t.Errorf("parseUUID = %x, %v", u, ok)
	}
	for _, bad := range []string{"", "0195d5f0-7a3c-7c4e-9f1a-3b2c1d0e9f8", "0195d5f0x7a3c-7c4e-9f1a-3b2c1d0e9f8a", "0195d5f0-7a3c-7c4e-9f1a-3b2c1d0e9f8g"} {
		if _, ok := parseUUID(bad); ok {
			t.Errorf("parseUUID(%q) accepted", bad)
		}
	}
}
