//! Integration tests of the `rfaas` crate (the crate's single test binary).

mod props;
mod transport;
mod ui;
#[cfg(feature = "verbs")]
mod verbs;
