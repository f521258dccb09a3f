// Package lint holds project rules written as tests: the protocol cores
// stay pure (no I/O, no sockets, no wall clock, no global randomness), so
// the same code can run under a deterministic simulation.
package lint
