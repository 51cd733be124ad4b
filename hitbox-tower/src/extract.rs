//! HTTP key extractors (work in progress).
