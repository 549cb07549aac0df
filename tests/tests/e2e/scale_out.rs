//! Scale-out: two `coffer server` instances on one PostgreSQL database and
//! one S3 bucket (SeaweedFS), two devices of one account, each talking to a
//! different instance. A file saved on one device reaches the other through
//! live daemons, which needs the second instance's long-poll to wake for a
//! commit made through the first (PostgreSQL LISTEN/NOTIFY).
//!
//! The services are real and start here (see the shared `services.rs`);
//! without them the test fails under `CI=true` and skips otherwise.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coffer_e2e::{random_bytes, wait_until, Client, Server};

/// Also used by `disks` (one copy of the module: clippy refuses two).
#[path = "../../../crates/coffer-server/tests/integration/services.rs"]
pub(super) mod services;

#[test]
fn two_instances_two_clients_one_database_and_bucket() {
    let Some(pg) = services::Postgres::start() else { return };
    let Some(s3) = services::SeaweedS3::start() else { return };
    let db = pg.fresh_database();
    let blobs = format!("s3://{}/coffer", s3.fresh_bucket());
    let endpoint = s3.endpoint();
    let flags = [
        "--meta",
        &db,
        "--blobs",
        &blobs,
        "--s3-endpoint",
        &endpoint,
        "--s3-region",
        "us-east-1",
        "--s3-access-key-id",
        "coffer-test",
        "--s3-secret-access-key",
        "coffer-test-secret",
        // Long enough that a missed wake-up would blow the deadlines below.
        "--max-long-poll-secs",
        "60",
    ];
    let one = Server::start_with(&flags);
    let two = Server::start_with(&flags);
    assert_ne!(one.url, two.url);

    let a = Client::new();
    let b = Client::new();
    a.signup(&one, "ann@example.org");
    b.login(&two, "ann@example.org");

    // Round trip with one-shot syncs: bytes uploaded through one instance
    // are served by the other.
    let big = random_bytes(3_000_000, 9);
    a.write("big.bin", &big);
    a.sync();
    b.sync();
    assert_eq!(b.read("big.bin"), big);

    // Live daemons that never rescan on their own: a device learns of the
    // other's change only when its long-poll (30 s, held by the other
    // instance) wakes, so every change must arrive well within that.
    let _da = Daemon::start(&a);
    let _db = Daemon::start(&b);
    wait_until("both daemons set up", Duration::from_secs(30), || {
        a.path(".coffer/status.json").exists() && b.path(".coffer/status.json").exists()
    });
    let mut took = Vec::new();
    for round in 0..3u64 {
        let name = format!("from-a-{round}.txt");
        let start = Instant::now();
        a.write(&name, format!("A, round {round}").as_bytes());
        wait_until(&format!("{name} on B (instance two)"), Duration::from_secs(20), || {
            std::fs::read(b.path(&name)).is_ok_and(|d| d == format!("A, round {round}").as_bytes())
        });
        took.push(start.elapsed());
        let name = format!("from-b-{round}.txt");
        let start = Instant::now();
        b.write(&name, format!("B, round {round}").as_bytes());
        wait_until(&format!("{name} on A (instance one)"), Duration::from_secs(20), || {
            std::fs::read(a.path(&name)).is_ok_and(|d| d == format!("B, round {round}").as_bytes())
        });
        took.push(start.elapsed());
    }
    eprintln!("save-to-arrival across instances: {took:?}");
    assert!(took.iter().all(|t| *t < Duration::from_secs(10)), "a long-poll did not wake: {took:?}");

    // Nothing went to the instances' own data folders: it is all shared.
    for server in [&one, &two] {
        assert!(!server.data.path().join("coffer.db").exists(), "metadata is in PostgreSQL");
        assert!(!server.data.path().join("chunks").exists(), "chunks are in the bucket");
    }
}

/// `coffer sync` as a daemon with periodic rescans off, stopped by pid.
struct Daemon(Child);

impl Daemon {
    fn start(c: &Client) -> Self {
        let child = c
            .command()
            .args(["sync", c.root.to_str().expect("utf-8"), "--quiet", "--rescan-secs", "3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn daemon");
        Self(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
