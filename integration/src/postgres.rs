//! A Postgres database per test: the read side's own helper
//! (`d2c_readside::testing`), which the read side's tests use too.

pub use d2c_readside::testing::{server_url, TestDatabase};
