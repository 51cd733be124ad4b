//! Shared fixtures for the benchmarks: values shaped like what a cache
//! holds in practice.

use serde::{Deserialize, Serialize};

/// A typical API record: numbers, short strings, a list, an optional field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Identifier.
    pub id: u64,
    /// A short name.
    pub name: String,
    /// An e-mail address.
    pub email: String,
    /// A few labels.
    pub tags: Vec<String>,
    /// A score.
    pub score: f64,
    /// Sometimes absent.
    pub manager: Option<u64>,
    /// Free text.
    pub bio: String,
}

/// A list of records whose encoding is about `target` bytes.
pub fn records(target: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let mut size = 0;
    let mut id = 0u64;
    while size < target {
        let record = Record {
            id,
            name: format!("user number {id}"),
            email: format!("user{id}@example.com"),
            tags: vec!["admin".into(), format!("team-{}", id % 7), "active".into()],
            score: id as f64 * 1.5,
            manager: (!id.is_multiple_of(3)).then_some(id / 3),
            bio: "Writes Rust, reads RFCs, caches everything that holds still.".into(),
        };
        size += 40 + record.name.len() + record.email.len() + record.bio.len() + 20;
        out.push(record);
        id += 1;
    }
    out
}
