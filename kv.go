package vowdb

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/vowdb/vowdb/api/vowdbpb"
)

func checkKey(key []byte) error {
	if len(key) == 0 {
		return fmt.Errorf("%w: key is empty", ErrInvalidArgument)
	}
	return nil
}

// Get returns the value of key, or ErrNotFound. The read is linearizable.
func (db *DB) Get(ctx context.Context, key []byte) ([]byte, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	var resp *vowdbpb.GetResponse
	err := db.send(ctx, key, false, func(ctx context.Context, c *grpc.ClientConn) error {
		res, err := db.batch(ctx, c, &vowdbpb.BatchOp{Op: &vowdbpb.BatchOp_Get{Get: &vowdbpb.GetRequest{Key: key}}})
		if err == nil {
			resp = res.Get
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if !resp.Found {
		return nil, ErrNotFound
	}
	return resp.Value, nil
}

// Put sets key to value. It returns once the write is replicated to a
// majority and applied.
func (db *DB) Put(ctx context.Context, key, value []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	return db.send(ctx, key, true, func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := db.batch(ctx, c, &vowdbpb.BatchOp{Op: &vowdbpb.BatchOp_Put{Put: &vowdbpb.PutRequest{Key: key, Value: value}}})
		return err
	})
}

// Delete removes key (a no-op if it is absent).
func (db *DB) Delete(ctx context.Context, key []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	return db.send(ctx, key, true, func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := db.batch(ctx, c, &vowdbpb.BatchOp{Op: &vowdbpb.BatchOp_Delete{Delete: &vowdbpb.DeleteRequest{Key: key}}})
		return err
	})
}

// CompareAndSwap sets key to new if its current value equals old, and
// reports whether it did. A nil old means "only if key is absent"; a nil new
// deletes key on success. The comparison and the write are one atomic step.
func (db *DB) CompareAndSwap(ctx context.Context, key, old, new []byte) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	req := &vowdbpb.CasRequest{Key: key, Expected: old, ExpectAbsent: old == nil, Value: new, DeleteOnSwap: new == nil}
	var resp *vowdbpb.CasResponse
	err := db.send(ctx, key, true, func(ctx context.Context, c *grpc.ClientConn) error {
		res, err := db.batch(ctx, c, &vowdbpb.BatchOp{Op: &vowdbpb.BatchOp_Cas{Cas: req}})
		if err == nil {
			resp = res.Cas
		}
		return err
	})
	if err != nil {
		return false, err
	}
	return resp.Swapped, nil
}

// Scan returns up to limit keys in [start, end) in order (limit <= 0: no
// limit; an empty end: to the end of the keyspace). Each range is read
// linearizably; a scan that crosses ranges is not one atomic snapshot
// (transactions give that).
func (db *DB) Scan(ctx context.Context, start, end []byte, limit int) ([]KeyValue, error) {
	if len(end) > 0 && string(end) <= string(start) {
		return nil, fmt.Errorf("%w: scan end %q is not after start %q", ErrInvalidArgument, end, start)
	}
	var out []KeyValue
	cur := start
	for {
		want := int64(0)
		if limit > 0 {
			want = int64(limit - len(out))
		}
		var resp *vowdbpb.ScanResponse
		err := db.send(ctx, cur, false, func(ctx context.Context, c *grpc.ClientConn) (err error) {
			resp, err = vowdbpb.NewKVClient(c).Scan(ctx, &vowdbpb.ScanRequest{StartKey: cur, EndKey: end, Limit: want})
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, kv := range resp.Kvs {
			out = append(out, KeyValue{Key: kv.Key, Value: kv.Value})
		}
		if limit > 0 && len(out) >= limit {
			return out[:limit], nil
		}
		if len(resp.Kvs) > 0 && (want == 0 || int64(len(resp.Kvs)) < want) && len(resp.Kvs) >= 10000 {
			// The server capped the page; continue after the last key.
			cur = append(append([]byte(nil), resp.Kvs[len(resp.Kvs)-1].Key...), 0)
			continue
		}
		if len(resp.RangeEnd) == 0 || (len(end) > 0 && string(resp.RangeEnd) >= string(end)) {
			return out, nil
		}
		cur = resp.RangeEnd
	}
}

// batch runs one operation over the node's Batch stream.
func (db *DB) batch(ctx context.Context, c *grpc.ClientConn, op *vowdbpb.BatchOp) (*vowdbpb.BatchResult, error) {
	p, err := db.pipeFor(c)
	if err != nil {
		return nil, err
	}
	return p.do(ctx, op)
}
