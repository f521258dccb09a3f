package lint

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// pureCores are the packages that must stay deterministic state machines.
var pureCores = []string{"keys", "lock", "deadlock", "txn"}

// forbidden imports in pure cores, and why.
var forbidden = map[string]string{
	"os":                               "file system and process state are I/O",
	"net":                              "sockets are I/O",
	"net/http":                         "sockets are I/O",
	"time":                             "cores see abstract ticks; drivers own the clock",
	"math/rand":                        "randomness must be passed in (*rand.Rand), never global",
	"sync":                             "cores are single-threaded; the driver serializes calls",
	"google.golang.org/grpc":           "RPC belongs to transport",
	"github.com/cockroachdb/pebble/v2": "storage belongs to the driver",
}

func TestPureCoresImportNoIO(t *testing.T) {
	for _, pkg := range pureCores {
		dir := filepath.Join("..", pkg)
		entries, err := os.ReadDir(dir)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			name := e.Name()
			if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, name), nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if why, bad := forbidden[path]; bad {
					t.Errorf("internal/%s/%s imports %q: %s", pkg, name, path, why)
				}
			}
		}
	}
}
