//! Previews of large uploads under way ([`crate::previews`]): posted by the
//! uploading device, long-polled by the account's others.

use std::time::Duration;

use coffer_proto::api::PreviewPage;
use coffer_proto::SealedPreview;

use super::{Caller, Service};
use crate::previews::Refused;
use crate::ServiceError;

impl Service {
    /// Keeps a preview for the caller's other devices, briefly.
    pub fn post_preview(&self, caller: Caller, sealed: SealedPreview) -> Result<(), ServiceError> {
        match self.inner.previews.post(caller.account, caller.device, sealed) {
            Ok(()) => Ok(()),
            Err(Refused::TooLarge) => {
                Err(ServiceError::PayloadTooLarge { limit: coffer_proto::api::MAX_PREVIEW_BYTES })
            }
            Err(Refused::Full) => Err(ServiceError::RetryLater),
        }
    }

    /// The previews the caller's other devices posted after `after`, as
    /// soon as there are any, or none after `timeout` (capped like the
    /// journal's long-poll).
    pub async fn wait_previews(&self, caller: Caller, after: Option<u64>, timeout: Duration) -> PreviewPage {
        let timeout = timeout.min(self.inner.config.max_long_poll);
        let (cursor, previews) =
            self.inner.previews.wait(caller.account, caller.device, after, timeout).await;
        PreviewPage { cursor, previews }
    }
}
