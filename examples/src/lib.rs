//! Runnable examples of hitbox live beside this crate: see `cargo run --example`.
//! The ones with enough logic to be tested keep it here.
#![warn(missing_docs)]

pub mod config_arg;
pub mod metrics;
pub mod proxy;
