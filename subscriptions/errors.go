package subscriptions

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotFound is returned when a row does not exist or belongs to another
// owner. The two cases are deliberately indistinguishable, so that an
// owner-scoped caller cannot learn that another owner's id exists.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a request is valid but the row's state does
// not allow it, e.g. redelivering a delivery that is already queued.
var ErrConflict = errors.New("conflict")

// ValidationError reports a value refused by the Go-side checks or by the
// SQL contract (relay.validate_subscription and friends). Field names the
// offending column or API field ("url", "event_types", "format", …); it is
// empty when the database did not say which.
type ValidationError struct {
	Field   string
	Message string
	// Hint is an optional suggestion from the database (PgError.Hint).
	Hint string
}

func (e *ValidationError) Error() string { return e.Message }

func invalid(field, message string) *ValidationError {
	return &ValidationError{Field: field, Message: message}
}

// PostgreSQL error codes translated at the store boundary.
const (
	codeCheckViolation     = "23514"
	codeNotNullViolation   = "23502"
	codeNullValueNotAllow  = "22004"
	codeNoDataFound        = "P0002"
	codeInvalidTextRep     = "22P02"
	codeInvalidDatetime    = "22007"
	codeDatetimeOverflow   = "22008"
	codeInvalidParameter   = "22023"
	codeStringDataTooLong  = "22001"
	codeNumericOutOfRange  = "22003"
	codeIntervalFieldOverf = "22015"
	// A text value PostgreSQL cannot store: NUL (U+0000) or bytes that are
	// not UTF-8.
	codeCharNotInRepertoire = "22021"
	codeUntranslatableChar  = "22P05"
)

// translate maps pgx errors to this package's errors, once, at the store
// boundary: no rows and the relay functions' no_data_found become
// ErrNotFound; a check_violation (raised by the validation triggers with
// COLUMN set) and the data errors a bad value can cause become a
// *ValidationError naming the column. Other errors pass through.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch pe.Code {
	case codeNoDataFound:
		return ErrNotFound
	case codeCheckViolation, codeNotNullViolation, codeNullValueNotAllow,
		codeInvalidTextRep, codeInvalidDatetime, codeDatetimeOverflow, codeInvalidParameter,
		codeStringDataTooLong, codeNumericOutOfRange, codeIntervalFieldOverf:
		field := pe.ColumnName
		msg := pe.Message
		if field == "" && pe.Code == codeCheckViolation && pe.ConstraintName != "" {
			// CHECK constraints in the schema are named with a sentence
			// that starts with the column it checks.
			msg = pe.ConstraintName
			field = constraintColumn(pe.ConstraintName)
		}
		return &ValidationError{Field: field, Message: msg, Hint: pe.Hint}
	case codeCharNotInRepertoire, codeUntranslatableChar:
		return &ValidationError{Field: pe.ColumnName, Message: "text must not contain NUL (U+0000) or bytes that are not UTF-8", Hint: pe.Message}
	}
	return err
}

// constraintColumn reads the column a CHECK constraint of the schema is
// about from its name, a sentence such as "outside_window must be defer,
// send or skip": the first word, when a verb of obligation follows it.
func constraintColumn(name string) string {
	col, rest, ok := strings.Cut(name, " ")
	if !ok || col == "" || !(strings.HasPrefix(rest, "must ") || strings.HasPrefix(rest, "cannot ")) {
		return ""
	}
	for _, r := range col {
		if !(r >= 'a' && r <= 'z' || r == '_') {
			return ""
		}
	}
	return col
}
