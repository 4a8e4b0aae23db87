package cli

import (
	"fmt"
	"io"
)

// signInHint is what relay run prints, once the admin server listens, so
// that whoever started it can sign in to the console.
type signInHint struct {
	// flagToken: the operator token came from --admin-token or
	// RELAY_ADMIN_TOKEN.
	flagToken bool
	// file, token: the operator token relay generated for its embedded
	// default and keeps in file; created says it was made by this start,
	// the only time it is printed.
	file, token string
	created     bool
}

func (h signInHint) print(w io.Writer, addr string) {
	url := "http://" + addr + "/"
	switch {
	case h.created:
		fmt.Fprintf(w, "admin API and console on %s\n"+
			"  sign in with this operator token (printed only now; it is kept in %s):\n  %s\n", url, h.file, h.token)
	case h.file != "":
		fmt.Fprintf(w, "admin API and console on %s\n  sign in with the operator token kept in %s\n", url, h.file)
	case h.flagToken:
		fmt.Fprintf(w, "admin API and console on %s\n  sign in with the operator token of --admin-token (RELAY_ADMIN_TOKEN)\n", url)
	default:
		fmt.Fprintf(w, "admin API and console on %s\n"+
			"  sign in with an owner token from 'relay tokens create --owner NAME',\n"+
			"  or restart with --admin-token (RELAY_ADMIN_TOKEN) to sign in as the operator\n", url)
	}
}
