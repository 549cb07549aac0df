//! Journal paging, long-poll wake-up, snapshot for a new device.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coffer_engine::remote::Remote;
use coffer_proto::api::EntryVersion;
use coffer_proto::{Cursor, EntryId, Revision};

use super::support::{del, entry, put, TestServer};

async fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn journal_pages_in_order() {
    let mut t = TestServer::start().await;
    let d = t.user("alice").await;
    for n in 0..25u8 {
        d.remote.commit(&[put(entry(n), 0, &[n], &[])]).await.unwrap();
    }
    let mut cursor = Cursor(0);
    let mut seen = Vec::new();
    loop {
        let page = d.remote.journal(cursor, Some(10)).await.unwrap();
        assert!(page.changes.len() <= 10);
        seen.extend(page.changes.iter().map(|c| c.seq.0));
        cursor = page.cursor;
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
    assert_eq!(cursor, Cursor(25));
}

#[tokio::test]
async fn long_poll_wakes_on_commit() {
    let mut t = TestServer::start().await;
    let writer = t.user("alice").await;
    let reader = t.login("alice", 2).await;
    let waiting = tokio::spawn({
        let remote = reader.remote.clone();
        async move {
            let start = Instant::now();
            let page = remote.wait_journal(Cursor(0), Duration::from_secs(30)).await.unwrap();
            (page, start.elapsed())
        }
    });
    let service = t.service().clone();
    wait_until("the long-poll to be held", Duration::from_secs(10), || service.long_polls_waiting() == 1)
        .await;
    let committed = Instant::now();
    writer.remote.commit(&[put(entry(1), 0, b"hello", &[])]).await.unwrap();
    let (page, _) = waiting.await.unwrap();
    let woke_after = committed.elapsed();
    // The client's long-poll only asks to be woken (`limit=0`): the head,
    // no changes; the journal then has them, once.
    assert!(page.changes.is_empty());
    assert_eq!(page.cursor, Cursor(1));
    assert!(woke_after < Duration::from_secs(2), "woke after {woke_after:?}");
    assert_eq!(t.service().long_polls_waiting(), 0);
    let journal = reader.remote.journal(Cursor(0), None).await.unwrap();
    assert_eq!(journal.changes.len(), 1);
    assert_eq!(journal.changes[0].entry_id, entry(1));
    assert!(journal.changes[0].chunks.is_empty(), "pages leave the chunk ids out");

    // Already behind: answers at once.
    let page = reader.remote.wait_journal(Cursor(0), Duration::from_secs(30)).await.unwrap();
    assert_eq!(page.cursor, Cursor(1));
}

#[tokio::test]
async fn long_poll_times_out_empty() {
    let mut t = TestServer::start().await;
    let d = t.user("alice").await;
    let start = Instant::now();
    let page = d.remote.wait_journal(Cursor(0), Duration::from_millis(200)).await.unwrap();
    assert!(page.changes.is_empty());
    assert_eq!(page.cursor, Cursor(0));
    assert!(start.elapsed() >= Duration::from_millis(200));
}

/// A new device pages the snapshot while another keeps committing, then
/// follows the journal from the first page's cursor, and ends with exactly
/// the store's state.
#[tokio::test]
async fn new_device_snapshot_then_journal() {
    let mut t = TestServer::start().await;
    let old = t.user("alice").await;
    for n in 0..20u8 {
        old.remote.commit(&[put(entry(n), 0, b"v1", &[])]).await.unwrap();
    }
    old.remote.commit(&[del(entry(3), 1)]).await.unwrap();

    let new = t.login("alice", 9).await;
    let mut state: BTreeMap<EntryId, EntryVersion> = BTreeMap::new();
    let mut after = None;
    let mut start_cursor = None;
    let mut round = 0u8;
    loop {
        let page = new.remote.snapshot(after, Some(4)).await.unwrap();
        start_cursor.get_or_insert(page.cursor);
        for e in page.entries {
            assert!(!e.is_deleted());
            state.insert(e.entry_id, e);
        }
        // Meanwhile the old device changes things, before and after the page.
        old.remote
            .commit(&[put(entry(round), 1, b"v2", &[]), put(entry(100 + round), 0, b"new", &[])])
            .await
            .ok();
        round += 1;
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut cursor = start_cursor.unwrap();
    loop {
        let page = new.remote.journal(cursor, Some(7)).await.unwrap();
        for c in page.changes {
            let newer = state.get(&c.entry_id).is_none_or(|have| c.revision > have.revision);
            if !newer {
                continue; // the snapshot already showed this or a later revision
            }
            if c.is_deleted() {
                state.remove(&c.entry_id);
            } else {
                state.insert(c.entry_id, c);
            }
        }
        cursor = page.cursor;
        if !page.more {
            break;
        }
    }
    let mut truth = BTreeMap::new();
    let mut after = None;
    loop {
        let page = old.remote.snapshot(after, None).await.unwrap();
        truth.extend(page.entries.into_iter().map(|e| (e.entry_id, e)));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(state, truth);
    assert!(!state.contains_key(&entry(3)));
    assert_eq!(state[&entry(0)].revision, Revision(2));
}
