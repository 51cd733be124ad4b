//! The HTTP side of hitbox (work in progress).
#![warn(missing_docs)]

pub mod extract;
pub mod predicate;
