package main

import (
	"strings"

	"github.com/spf13/pflag"
)

// envPrefix starts the name of every environment variable the CLI reads.
const envPrefix = "VOWDB_"

// envHelp explains the environment binding in help texts.
const envHelp = `Environment:
  Every flag can also be set by an environment variable named VOWDB_ followed
  by the flag name in upper case with dashes turned into underscores:
  --data-dir is VOWDB_DATA_DIR, --endpoints is VOWDB_ENDPOINTS, --write-out is
  VOWDB_WRITE_OUT. A flag given on the command line wins over the variable.
  List flags (--join, --endpoints) take comma-separated values.
`

// envName is the environment variable that feeds the flag called name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// bindEnv sets every flag of fs that was not given on the command line from
// its environment variable, if that is set (even to the empty string, so
// VOWDB_HTTP_ADDR= disables HTTP like --http-addr= does). lookup is
// os.LookupEnv outside tests. A value the flag rejects is a usage error that
// names the variable.
//
// NB: it runs after cobra parsed the command line, so f.Changed tells flags
// the user typed from defaults; fs.Set marks the flag changed, which is what
// a value from the environment should look like to the command.
func bindEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "help" {
			return
		}
		name := envName(f.Name)
		v, ok := lookup(name)
		if !ok {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = usageErrorf("%s: %v", name, serr)
		}
	})
	return err
}
