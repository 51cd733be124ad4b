//! Cross-SDK keys and values (work in progress).
