//! Benchmarks of rfaas (see `cargo xtask bench`).
