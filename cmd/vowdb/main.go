// Command vowdb is the one binary of vowdb: it runs a node (start), bootstraps
// a cluster (init), runs a local demo cluster (demo), talks to a cluster (kv,
// node, range) and measures one (bench).
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:]))
}
