//! Benchmark programs (see `docs/BENCHMARKS.md` and `scripts/bench.sh`).
//!
//! `raw-start` is the physical limit of a group start: the same Docker
//! calls the daemon makes for it, and nothing else. It builds each
//! replica's container spec with `orch_core::container::build_spec` and
//! runs it through `orch_daemon::ops::launch` (create, start, inspect) on
//! a `DockerEngine`, at most `--parallel` at once as the daemon does, with
//! no supervisor, no state file, no dependency or health gating. With
//! `--probe` it then probes each container the way the daemon's prober
//! does until the first success, so "all healthy" has a floor too.
