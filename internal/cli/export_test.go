package cli

// LatestLogQuery is the query `relay log --sub subID --limit limit` runs
// first, with its arguments, for the plan test of the external tests.
func LatestLogQuery(subID int64, limit int) (string, []any) {
	f := logFilter{subID: subID}
	var args []any
	where := f.where(&args)
	return latestLogSQL(where, limit), args
}
