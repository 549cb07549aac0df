//! Integration tests of the cloud store: a real server on a free loopback
//! port, with the embedded stores (SQLite + folder) in a temp dir and a
//! manual clock, driven through the real client (`coffer_engine::remote`).
//! The storage conformance suites run here too.

mod integration {
    pub mod accounts;
    pub mod bad_input;
    pub mod chunks_commit;
    pub mod conformance;
    pub mod journal;
    #[cfg(all(feature = "postgres", feature = "s3"))]
    pub mod scale_out;
    #[cfg(all(feature = "postgres", feature = "s3"))]
    pub mod services;
    pub mod support;
    pub mod tls;
    pub mod versions_gc;
}
