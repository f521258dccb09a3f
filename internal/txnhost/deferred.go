package txnhost

import "sync"

// deferred holds the callbacks a driver produces while it holds its
// mutex; they run, in order, once the mutex is released (package doc).
type deferred struct {
	fns []func()
}

func (d *deferred) add(fn func()) { d.fns = append(d.fns, fn) }

// unlock releases mu, then runs the callbacks queued meanwhile.
func (d *deferred) unlock(mu *sync.Mutex) {
	fns := d.fns
	d.fns = nil
	mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}
