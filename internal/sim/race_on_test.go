//go:build race

package sim

// raceBuild: the race detector slows the single-threaded simulation about
// tenfold and finds nothing in it, so a -race run does a short budget;
// scripts/test.sh runs the full budget without it.
const raceBuild = true
