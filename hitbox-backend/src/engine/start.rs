//! What a load saw when it started: the generations of its tags in the
//! tiers that keep them (see [`crate::generations`]), read once before the
//! loader runs and checked by the tier when the result is stored.
//!
//! A load driven by a loader reads them itself, before it polls the loader.
//! A load led by a caller that loads on its own ([`LoadLead`](super::LoadLead),
//! the HTTP layer) has them read by a task spawned when the lead is handed
//! out; the caller may wait for it ([`LoadLead::ready`](super::LoadLead::ready))
//! before it asks its origin, and the store waits for it in any case.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use hitbox_core::Tag;
use tokio::sync::OnceCell;

use super::Inner;
use crate::tiers::generations::TagGenerations;

/// What a load recorded when it started.
#[derive(Debug)]
pub(crate) enum Recorded {
    /// No tags, or no tier keeps generations: the result is written plainly.
    Untracked,
    /// The generations the tiers reported: the result is written with
    /// [`Backend::write_if_current`](crate::Backend::write_if_current).
    Seen(TagGenerations),
    /// The tiers could not say (a tier failed): the result is not stored,
    /// since nothing could tell whether it raced an invalidation.
    Unknown,
}

/// The record of one load, read at most once however many wait for it.
pub(crate) struct LoadStart {
    inner: Weak<Inner>,
    tags: Vec<Tag>,
    recorded: OnceCell<Recorded>,
    /// Set by an invalidation of the load's key or tags in this process.
    cancelled: Arc<AtomicBool>,
    /// Set when the leader found the value stored already (by another
    /// process): the flight hands it over without storing it again.
    stored_elsewhere: AtomicBool,
}

impl LoadStart {
    pub(crate) fn new(inner: &Arc<Inner>, tags: Vec<Tag>, cancelled: Arc<AtomicBool>) -> Arc<LoadStart> {
        let recorded = OnceCell::new();
        if tags.is_empty() {
            let _ = recorded.set(Recorded::Untracked);
        }
        Arc::new(LoadStart {
            inner: Arc::downgrade(inner),
            tags,
            recorded,
            cancelled,
            stored_elsewhere: AtomicBool::new(false),
        })
    }

    /// Whether the load's key or one of its tags was invalidated in this
    /// process since it started.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Marks the result as stored by someone else: not to be stored again.
    pub(crate) fn mark_stored_elsewhere(&self) {
        self.stored_elsewhere.store(true, Ordering::SeqCst);
    }

    /// See [`LoadStart::mark_stored_elsewhere`].
    pub(crate) fn is_stored_elsewhere(&self) -> bool {
        self.stored_elsewhere.load(Ordering::SeqCst)
    }

    /// The engine the load runs in, while it exists.
    pub(crate) fn inner(&self) -> Option<Arc<Inner>> {
        self.inner.upgrade()
    }

    /// The load's tags.
    pub(crate) fn tags(&self) -> &[Tag] {
        &self.tags
    }

    /// Whether the record is taken already (no tags, or read).
    pub(crate) fn is_taken(&self) -> bool {
        self.recorded.initialized()
    }

    /// The record: read now, or waited for if another task is reading it.
    pub(crate) async fn get(&self) -> &Recorded {
        self.recorded
            .get_or_init(|| async {
                let Some(inner) = self.inner.upgrade() else {
                    return Recorded::Untracked;
                };
                match inner.backend.tag_generations(&self.tags).await {
                    Ok(None) => Recorded::Untracked,
                    Ok(Some(seen)) => Recorded::Seen(seen),
                    Err(error) => {
                        inner.tier_error_elsewhere(&error);
                        tracing::warn!(%error, "the generations of a load's tags could not be read: its result will not be stored");
                        Recorded::Unknown
                    }
                }
            })
            .await
    }

    /// Starts reading the record in a task of its own, so that it is taken
    /// while the caller goes on (without a runtime, the store reads it).
    pub(crate) fn read_in_background(self: &Arc<Self>) {
        if self.is_taken() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let start = Arc::clone(self);
        runtime.spawn(async move {
            start.get().await;
        });
    }
}
