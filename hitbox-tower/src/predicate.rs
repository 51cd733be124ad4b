//! HTTP predicates (work in progress).
