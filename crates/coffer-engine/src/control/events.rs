//! The one event stream of the control API: the engine's status as it
//! changes (at most ten a second, always the latest: a slow reader never
//! falls behind), merged with the activity feed as ops complete.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::dispatch::{activity, status};
use super::dto::Event;
use crate::remote::Remote;
use crate::sync::Engine;

/// Shortest time between two status events.
pub const STATUS_EVERY: Duration = Duration::from_millis(100);

/// Every event from now on, starting with the current status. Ends when the
/// engine is gone.
pub fn subscribe<R: Remote + 'static>(engine: Arc<Engine<R>>) -> impl Stream<Item = Event> + Send + 'static {
    let activity_rx = engine.activity().subscribe();
    let status_rx = engine.subscribe();
    let statuses = stream::unfold((status_rx, engine, true), |(mut rx, engine, first)| async move {
        if !first {
            rx.changed().await.ok()?;
            tokio::time::sleep(STATUS_EVERY).await;
        }
        rx.mark_unchanged();
        let ev = Event::Status(status(&engine));
        Some((ev, (rx, engine, false)))
    });
    let activities = stream::unfold(activity_rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(a) => return Some((Event::Activity(activity(a)), rx)),
                // A reader that fell behind re-reads the list; go on.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    stream::select(statuses.boxed(), activities.boxed())
}
