package sink_test

import (
	"testing"

	"github.com/pgoutbox/relay/internal/pgtest"
)

func TestMain(m *testing.M) {
	if runCrashHelper() {
		return
	}
	pgtest.Main(m)
}
