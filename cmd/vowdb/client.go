package main

import (
	"context"
	"errors"
	"time"

	"github.com/spf13/pflag"

	"github.com/vowdb/vowdb"
)

// defaultEndpoint is the gRPC address client commands use by default.
const defaultEndpoint = "127.0.0.1:7401"

// clientFlags are the connection flags of every client command.
type clientFlags struct {
	endpoints []string
	timeout   time.Duration
}

func (cf *clientFlags) register(fs *pflag.FlagSet) {
	fs.StringSliceVar(&cf.endpoints, "endpoints", []string{defaultEndpoint}, "gRPC addresses of some cluster nodes, comma-separated")
	fs.DurationVar(&cf.timeout, "timeout", 10*time.Second, "bound on the whole command, connecting included")
}

func (cf *clientFlags) check() ([]string, error) {
	eps := cleanList(cf.endpoints)
	if len(eps) == 0 {
		return nil, usageErrorf("--endpoints is empty")
	}
	if cf.timeout <= 0 {
		return nil, usageErrorf("--timeout must be positive, not %v", cf.timeout)
	}
	return eps, nil
}

// withDB opens a client, runs fn under the command's timeout and closes the
// client.
func (cf *clientFlags) withDB(ctx context.Context, fn func(ctx context.Context, db *vowdb.DB) error) error {
	eps, err := cf.check()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	db, err := vowdb.Open(ctx, vowdb.Config{Endpoints: eps, RequestTimeout: cf.timeout, DialTimeout: cf.timeout})
	if err != nil {
		return openError(err)
	}
	defer db.Close()
	return fn(ctx, db)
}

// openError classifies a failed vowdb.Open. Open only asks the endpoints
// where ranges live, so any failure it does not classify itself (such as
// "cannot connect to ...") means no endpoint could serve: the cluster is
// unavailable from here.
func openError(err error) error {
	if errors.Is(err, vowdb.ErrInvalidArgument) || errors.Is(err, vowdb.ErrNotInitialized) ||
		errors.Is(err, vowdb.ErrUnavailable) || errors.Is(err, vowdb.ErrClosed) {
		return err
	}
	return &unavailableError{err}
}

// unavailableError keeps the client's message but matches
// vowdb.ErrUnavailable.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string   { return e.err.Error() }
func (e *unavailableError) Unwrap() []error { return []error{e.err, vowdb.ErrUnavailable} }
