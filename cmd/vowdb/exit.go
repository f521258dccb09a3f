package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vowdb/vowdb"
)

// Exit codes. They are part of the CLI's interface: scripts branch on them,
// so a code never changes meaning. Keep this table, exitCodesHelp and
// docs/cli.md in step.
const (
	exitOK          = 0   // success
	exitError       = 1   // generic or server error
	exitUsage       = 2   // bad flags, arguments or environment variables
	exitNotFound    = 3   // kv get: the key is absent
	exitUnavailable = 4   // the cluster could not be reached or could not serve
	exitAmbiguous   = 5   // a write may or may not have been applied
	exitInvalid     = 6   // the server refused the request as malformed or over a limit
	exitInterrupted = 130 // SIGINT/SIGTERM ended a client command early
	exitCodesHelp   = `Exit codes:
  0    success (kv cas also exits 0 when it did not swap; read its output)
  1    error: a generic failure or an error reported by the server
  2    usage error: bad flags, arguments or VOWDB_* environment variables
  3    key not found (kv get)
  4    cluster unavailable: no endpoint answered, no leader in time, or the
       cluster is not initialized yet
  5    ambiguous write: the write may or may not have been applied; read the
       key back to find out
  6    invalid argument: the server refused the request (empty key, key or
       value over the size limit, ...)
  130  a client command was interrupted by SIGINT or SIGTERM (an interrupted
       write may or may not have been applied)
`
)

// usageError marks mistakes in how the CLI was invoked (exit code 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// usageArgs wraps a cobra argument validator so that its complaints count as
// usage errors.
func usageArgs(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := v(cmd, args); err != nil {
			return &usageError{err}
		}
		return nil
	}
}

// errInterrupted is reported when a signal cancelled a client command.
var errInterrupted = errors.New("interrupted")

// exitCode maps an error returned by a command to the process exit code.
// The most specific class wins: an ambiguous write that also mentions an
// unavailable leader is still ambiguous.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, errInterrupted):
		return exitInterrupted
	case errors.Is(err, vowdb.ErrNotFound):
		return exitNotFound
	case errors.Is(err, vowdb.ErrAmbiguousCommit):
		return exitAmbiguous
	case errors.Is(err, vowdb.ErrInvalidArgument):
		return exitInvalid
	case errors.Is(err, vowdb.ErrUnavailable), errors.Is(err, vowdb.ErrNotInitialized):
		return exitUnavailable
	}
	return exitError
}
