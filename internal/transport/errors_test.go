package transport

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vowdb/vowdb/api/vowdbpb"
)

// Every error class must survive the trip through a gRPC status.
func TestErrorRoundTrip(t *testing.T) {
	for code, grpcCode := range codeOf {
		t.Run(code.String(), func(t *testing.T) {
			err := Status(&vowdbpb.ErrorDetail{Code: code, LeaderNodeId: 7, LeaderAddress: "h:1"}, "boom %d", 1)
			if got := status.Code(err); got != grpcCode {
				t.Fatalf("grpc code %v, want %v", got, grpcCode)
			}
			d, ok := Detail(err)
			if !ok || d.Code != code || d.LeaderNodeId != 7 || d.LeaderAddress != "h:1" {
				t.Fatalf("detail %v ok=%v", d, ok)
			}
		})
	}
	if _, ok := Detail(status.Error(codes.Unavailable, "plain")); ok {
		t.Fatal("detail found in a plain status")
	}
}
