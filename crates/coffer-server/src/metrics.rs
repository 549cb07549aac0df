//! Operational counters of one server process, served as Prometheus text at
//! `GET /metrics`: bytes of chunks received, stored (new to the store) and
//! served, commits and changes applied. They are process-local (each
//! instance counts its own; a scraper sums them) and reveal only volumes,
//! never an account or a name.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters. Cheap to bump from any task.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) chunk_bytes_received: AtomicU64,
    pub(crate) chunk_bytes_stored: AtomicU64,
    pub(crate) chunks_stored: AtomicU64,
    pub(crate) chunk_bytes_served: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) changes_applied: AtomicU64,
    pub(crate) chunk_ids_named: AtomicU64,
    pub(crate) chunk_requests: AtomicU64,
    pub(crate) chunk_uploads: AtomicU64,
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Sealed chunk bytes in upload requests (including ones already stored).
    pub chunk_bytes_received: u64,
    /// Sealed chunk bytes written because the store lacked them.
    pub chunk_bytes_stored: u64,
    /// Chunks written because the store lacked them.
    pub chunks_stored: u64,
    /// Sealed chunk bytes sent to clients.
    pub chunk_bytes_served: u64,
    /// Commit requests answered.
    pub commits: u64,
    /// Entry changes applied.
    pub changes_applied: u64,
    /// Chunk ids named in missing-chunk queries and commits (the id traffic
    /// an edit costs besides its chunks).
    pub chunk_ids_named: u64,
    /// Chunk download requests answered (one chunk, or a batch).
    pub chunk_requests: u64,
    /// Chunk upload requests (batches) answered.
    pub chunk_uploads: u64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            chunk_bytes_received: g(&self.chunk_bytes_received),
            chunk_bytes_stored: g(&self.chunk_bytes_stored),
            chunks_stored: g(&self.chunks_stored),
            chunk_bytes_served: g(&self.chunk_bytes_served),
            commits: g(&self.commits),
            changes_applied: g(&self.changes_applied),
            chunk_ids_named: g(&self.chunk_ids_named),
            chunk_requests: g(&self.chunk_requests),
            chunk_uploads: g(&self.chunk_uploads),
        }
    }
}

impl MetricsSnapshot {
    /// Prometheus text exposition format.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "coffer_chunk_bytes_received_total",
            "Sealed chunk bytes received in uploads.",
            self.chunk_bytes_received,
        );
        counter(
            "coffer_chunk_bytes_stored_total",
            "Sealed chunk bytes newly stored.",
            self.chunk_bytes_stored,
        );
        counter("coffer_chunks_stored_total", "Chunks newly stored.", self.chunks_stored);
        counter(
            "coffer_chunk_bytes_served_total",
            "Sealed chunk bytes sent to clients.",
            self.chunk_bytes_served,
        );
        counter("coffer_commits_total", "Commit requests answered.", self.commits);
        counter("coffer_changes_applied_total", "Entry changes applied.", self.changes_applied);
        counter(
            "coffer_chunk_ids_named_total",
            "Chunk ids named in missing-chunk queries and commits.",
            self.chunk_ids_named,
        );
        counter(
            "coffer_chunk_requests_total",
            "Chunk download requests answered (one chunk, or a batch).",
            self.chunk_requests,
        );
        counter(
            "coffer_chunk_uploads_total",
            "Chunk upload requests (batches) answered.",
            self.chunk_uploads,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let m = Metrics::default();
        Metrics::add(&m.chunk_bytes_stored, 42);
        let text = m.snapshot().to_prometheus();
        assert!(text.contains("coffer_chunk_bytes_stored_total 42\n"), "{text}");
        assert!(text.contains("# TYPE coffer_commits_total counter"));
    }
}
