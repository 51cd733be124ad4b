//! Composition of tiers (work in progress).
