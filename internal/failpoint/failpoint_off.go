//go:build !failpoints

package failpoint

// Enabled reports whether failpoints are compiled in.
const Enabled = false

// Enable panics: build with -tags failpoints to use failpoints.
func Enable(name string, fn func()) { panic("failpoint: built without -tags failpoints") }

// Disable does nothing in normal builds.
func Disable(string) {}

// Hit does nothing in normal builds.
func Hit(string) {}
