//! Runnable examples of hitbox live beside this crate: see `cargo run --example`.
