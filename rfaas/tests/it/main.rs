//! Integration tests of the `rfaas` crate (the crate's single test binary).

mod transport;
mod ui;
