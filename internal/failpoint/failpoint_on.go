//go:build failpoints

package failpoint

import "sync"

var registry sync.Map // name -> func()

// Enabled reports whether failpoints are compiled in.
const Enabled = true

// Enable makes Hit(name) call fn.
func Enable(name string, fn func()) { registry.Store(name, fn) }

// Disable removes the action registered for name.
func Disable(name string) { registry.Delete(name) }

// Hit runs the action registered for name, if any.
func Hit(name string) {
	if fn, ok := registry.Load(name); ok {
		fn.(func())()
	}
}
