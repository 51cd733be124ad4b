//! The AES-256-GCM encryptor stage (work in progress).
