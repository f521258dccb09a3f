package transport

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb/api/vowdbpb"
)

// This file is the one place where vowdb errors become gRPC statuses; the
// client maps them back with Detail.

// codeOf picks the gRPC code for each detail code, following the gRPC
// litmus test: UNAVAILABLE means the call can be retried as is.
var codeOf = map[vowdbpb.ErrorDetail_Code]codes.Code{
	vowdbpb.ErrorDetail_NOT_LEADER:       codes.Unavailable,
	vowdbpb.ErrorDetail_RANGE_NOT_FOUND:  codes.Unavailable,
	vowdbpb.ErrorDetail_KEY_MISMATCH:     codes.Unavailable,
	vowdbpb.ErrorDetail_AMBIGUOUS:        codes.Unknown,
	vowdbpb.ErrorDetail_NOT_INITIALIZED:  codes.FailedPrecondition,
	vowdbpb.ErrorDetail_CLUSTER_MISMATCH: codes.FailedPrecondition,
	vowdbpb.ErrorDetail_INVALID:          codes.InvalidArgument,
	vowdbpb.ErrorDetail_TXN_ABORTED:      codes.Aborted,
	vowdbpb.ErrorDetail_TXN_LIMIT:        codes.ResourceExhausted,
}

// Status returns a gRPC error carrying d.
func Status(d *vowdbpb.ErrorDetail, format string, args ...any) error {
	c, ok := codeOf[d.Code]
	if !ok {
		c = codes.Internal
	}
	st := status.New(c, fmt.Sprintf(format, args...))
	if withD, err := st.WithDetails(d); err == nil {
		st = withD
	}
	return st.Err()
}

// Detail extracts the ErrorDetail of a gRPC error, if it has one.
func Detail(err error) (*vowdbpb.ErrorDetail, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return nil, false
	}
	for _, d := range st.Details() {
		if ed, ok := d.(*vowdbpb.ErrorDetail); ok {
			return ed, true
		}
	}
	return nil, false
}

// Invalid returns an INVALID_ARGUMENT error.
func Invalid(format string, args ...any) error {
	return Status(&vowdbpb.ErrorDetail{Code: vowdbpb.ErrorDetail_INVALID}, format, args...)
}
