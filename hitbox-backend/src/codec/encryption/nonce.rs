//! Where the 96-bit AES-GCM nonces come from.
//!
//! GCM fails badly when a nonce repeats under one key: the two plaintexts
//! XOR together and the authentication key leaks. Every process that shares
//! a master key and a tenant shares the derived key, so nonces must be
//! unique across processes too, not just within one.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::EncryptionError;

/// The length of an AES-GCM nonce, in bytes.
pub const NONCE_LEN: usize = 12;

/// A source of nonces that never hands out the same one twice.
///
/// [`CounterNonces`] is the default; [`RandomNonces`] is the alternative the
/// protocol allows. An implementation that cannot guarantee a fresh nonce
/// must return an error rather than repeat one.
pub trait NonceSource: Send + Sync + 'static {
    /// The next nonce.
    fn next_nonce(&self) -> Result<[u8; NONCE_LEN], EncryptionError>;
}

/// The reference scheme: a random 8-byte instance id followed by a 4-byte
/// big-endian counter.
///
/// Within one instance the counter makes nonces distinct; across processes
/// the random instance ids do (two of 2^64 collide only after billions of
/// instances). When the counter has used all 2^32 values, a new instance id
/// is drawn and the counter starts again.
#[derive(Debug)]
pub struct CounterNonces {
    state: Mutex<(u64, u32)>,
}

impl CounterNonces {
    /// A source with a fresh random instance id.
    pub fn new() -> Self {
        CounterNonces {
            state: Mutex::new((rand::random(), 0)),
        }
    }
}

impl Default for CounterNonces {
    fn default() -> Self {
        Self::new()
    }
}

impl NonceSource for CounterNonces {
    fn next_nonce(&self) -> Result<[u8; NONCE_LEN], EncryptionError> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (instance, counter) = *state;
        *state = match counter.checked_add(1) {
            Some(next) => (instance, next),
            None => (fresh_instance(instance), 0),
        };
        let mut nonce = [0; NONCE_LEN];
        nonce[..8].copy_from_slice(&instance.to_be_bytes());
        nonce[8..].copy_from_slice(&counter.to_be_bytes());
        Ok(nonce)
    }
}

fn fresh_instance(old: u64) -> u64 {
    loop {
        let candidate: u64 = rand::random();
        if candidate != old {
            return candidate;
        }
    }
}

/// Fully random 96-bit nonces from the thread's cryptographic generator.
///
/// Safe for up to about 2^32 messages per key (the usual bound for random
/// GCM nonces); [`CounterNonces`] has no such bound within one process.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomNonces;

impl NonceSource for RandomNonces {
    fn next_nonce(&self) -> Result<[u8; NONCE_LEN], EncryptionError> {
        Ok(rand::random())
    }
}

/// **For test vectors only.** Hands out the given nonces in order, each
/// once, then fails with [`EncryptionError::NoncesExhausted`].
///
/// Published ciphertexts are made with fixed nonces; reproducing them needs
/// the same ones. Never use this to encrypt real data.
#[doc(hidden)]
#[derive(Debug)]
pub struct FixedNonces {
    queue: Mutex<VecDeque<[u8; NONCE_LEN]>>,
}

impl FixedNonces {
    /// A source that hands out `nonces` in order.
    pub fn new(nonces: impl IntoIterator<Item = [u8; NONCE_LEN]>) -> Self {
        FixedNonces {
            queue: Mutex::new(nonces.into_iter().collect()),
        }
    }
}

impl NonceSource for FixedNonces {
    fn next_nonce(&self) -> Result<[u8; NONCE_LEN], EncryptionError> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop_front()
            .ok_or(EncryptionError::NoncesExhausted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn counter_nonces_share_an_instance_id_and_count_up() {
        let source = CounterNonces::new();
        let first = source.next_nonce().unwrap();
        let second = source.next_nonce().unwrap();
        assert_eq!(first[..8], second[..8]);
        assert_eq!(first[8..], [0, 0, 0, 0]);
        assert_eq!(second[8..], [0, 0, 0, 1]);
    }

    #[test]
    fn counter_wrap_draws_a_new_instance() {
        let source = CounterNonces {
            state: Mutex::new((7, u32::MAX)),
        };
        let last = source.next_nonce().unwrap();
        let next = source.next_nonce().unwrap();
        assert_eq!(last[..8], 7u64.to_be_bytes());
        assert_eq!(last[8..], [0xff; 4]);
        assert_ne!(next[..8], 7u64.to_be_bytes());
        assert_eq!(next[8..], [0; 4]);
    }

    #[test]
    fn sources_do_not_repeat() {
        let counter = CounterNonces::new();
        let other = CounterNonces::new();
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(counter.next_nonce().unwrap()));
            assert!(seen.insert(other.next_nonce().unwrap()));
            assert!(seen.insert(RandomNonces.next_nonce().unwrap()));
        }
    }

    #[test]
    fn fixed_nonces_are_used_once() {
        let source = FixedNonces::new([[1; 12], [2; 12]]);
        assert_eq!(source.next_nonce().unwrap(), [1; 12]);
        assert_eq!(source.next_nonce().unwrap(), [2; 12]);
        assert_eq!(source.next_nonce(), Err(EncryptionError::NoncesExhausted));
    }
}
