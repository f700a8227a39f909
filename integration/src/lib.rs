//! Drives the platform from outside, as a storefront and an operator would:
//! real binaries, a real broker, HTTP on loopback. Shared by the integration
//! tests, the load generator and the benchmark.

pub mod app;
pub mod brokerwork;
pub mod ceiling;
pub mod cli;
pub mod customer;
pub mod demo;
pub mod exposition;
pub mod fake_provider;
pub mod faults;
pub mod harness;
pub mod kafka;
pub mod load;
pub mod plot;
pub mod postgres;
pub mod procstat;
pub mod rng;
pub mod stock;
pub mod workload;
