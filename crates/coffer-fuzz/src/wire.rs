//! Wire types: every JSON body the client or the server decodes, the binary
//! chunk-upload framing, and the control API's requests.

use coffer_engine::control::dto;
use coffer_proto::api::{self, chunk_batch};
use coffer_proto::{ChunkId, SealedChunk};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `json` as a `T`; if that works, the value must encode, decode
/// again, and encode to the same bytes (nothing is lost or invented).
fn round_trip<T: Serialize + DeserializeOwned>(json: &[u8]) {
    let Ok(v) = serde_json::from_slice::<T>(json) else { return };
    let once = serde_json::to_vec(&v).expect("a decoded value encodes");
    let again: T = serde_json::from_slice(&once).expect("an encoded value decodes");
    assert_eq!(serde_json::to_vec(&again).expect("encodes"), once, "decode/encode is not stable");
}

/// A body type's name and its decoder.
type WireType = (&'static str, fn(&[u8]));

/// Every body type, in the order `data[0]` picks them.
const WIRE_TYPES: &[WireType] = &[
    // What the client decodes (the store's answers).
    ("JournalPage", round_trip::<api::JournalPage>),
    ("SnapshotPage", round_trip::<api::SnapshotPage>),
    ("VersionsResponse", round_trip::<api::VersionsResponse>),
    ("EntryVersion", round_trip::<api::EntryVersion>),
    ("CommitResponse", round_trip::<api::CommitResponse>),
    ("ErrorBody", round_trip::<api::ErrorBody>),
    ("RegisterStartResponse", round_trip::<api::RegisterStartResponse>),
    ("RegisterFinishResponse", round_trip::<api::RegisterFinishResponse>),
    ("LoginStartResponse", round_trip::<api::LoginStartResponse>),
    ("LoginFinishResponse", round_trip::<api::LoginFinishResponse>),
    ("SessionsResponse", round_trip::<api::SessionsResponse>),
    ("Usage", round_trip::<api::Usage>),
    ("MissingChunksResponse", round_trip::<api::MissingChunksResponse>),
    ("UploadChunksResponse", round_trip::<api::UploadChunksResponse>),
    // What the server decodes (anyone's requests).
    ("RegisterStartRequest", round_trip::<api::RegisterStartRequest>),
    ("RegisterFinishRequest", round_trip::<api::RegisterFinishRequest>),
    ("LoginStartRequest", round_trip::<api::LoginStartRequest>),
    ("LoginFinishRequest", round_trip::<api::LoginFinishRequest>),
    ("MissingChunksRequest", round_trip::<api::MissingChunksRequest>),
    ("CommitRequest", round_trip::<api::CommitRequest>),
    ("JournalQuery", round_trip::<api::JournalQuery>),
    ("SnapshotQuery", round_trip::<api::SnapshotQuery>),
    ("GetChunksRequest", round_trip::<api::GetChunksRequest>),
    // A commit whose chunk list is a difference from its base.
    ("CommitRequest (delta)", round_trip::<api::CommitRequest>),
];

/// `data[0]` picks a wire type (see `WIRE_TYPES`), `data[1..]` is its JSON.
pub fn wire_json(data: &[u8]) {
    let Some((&which, json)) = data.split_first() else { return };
    (WIRE_TYPES[usize::from(which) % WIRE_TYPES.len()].1)(json);
}

/// Seeds: a valid body of each type.
pub fn wire_json_seeds() -> Vec<Vec<u8>> {
    let id = "ab".repeat(32);
    let dev = "cd".repeat(16);
    let version = format!(
        r#"{{"seq":3,"entry_id":"{id}","revision":2,"meta":"AQIDBA==","chunks":["{id}"],"device_id":"{dev}","time":1}}"#
    );
    let bodies = [
        format!(r#"{{"changes":[{version}],"cursor":3,"more":false}}"#),
        format!(r#"{{"entries":[{version}],"cursor":3,"next":"{id}"}}"#),
        format!(r#"{{"versions":[{version}]}}"#),
        version.clone(),
        format!(
            r#"{{"results":[{{"status":"applied","entry_id":"{id}","revision":1,"seq":2}},{{"status":"conflict","entry_id":"{id}","current_revision":4}}],"cursor":2}}"#
        ),
        format!(r#"{{"code":"chunk_missing","message":"m","missing_chunks":["{id}"],"retry_after_ms":5}}"#),
        r#"{"response":"AAEC"}"#.to_string(),
        r#"{"quota_bytes":50}"#.to_string(),
        format!(r#"{{"login_id":"{dev}","response":"AAEC"}}"#),
        format!(
            r#"{{"token":"t","session":{{"id":"{dev}","device_id":"{dev}","created_at":1,"expires_at":2,"current":true}},"wrapped_key":"AQI="}}"#
        ),
        format!(
            r#"{{"sessions":[{{"id":"{dev}","device_id":"{dev}","created_at":1,"expires_at":2,"current":false}}]}}"#
        ),
        r#"{"used_bytes":1,"quota_bytes":2}"#.to_string(),
        format!(r#"{{"missing":["{id}"]}}"#),
        r#"{"stored":1,"already_present":2}"#.to_string(),
        r#"{"username":"a@b","request":"AAEC"}"#.to_string(),
        r#"{"username":"a@b","upload":"AAEC","wrapped_key":"AQI="}"#.to_string(),
        r#"{"username":"a@b","request":"AAEC"}"#.to_string(),
        format!(r#"{{"login_id":"{dev}","finalization":"AAEC","device_id":"{dev}"}}"#),
        format!(r#"{{"ids":["{id}"]}}"#),
        format!(r#"{{"changes":[{{"entry_id":"{id}","base_revision":0,"meta":null,"chunks":[]}}]}}"#),
        r#"{"after":1,"limit":10,"timeout_ms":5}"#.to_string(),
        format!(r#"{{"after":"{id}","limit":10}}"#),
        format!(r#"{{"ids":["{id}","{id}"]}}"#),
        format!(
            r#"{{"changes":[{{"entry_id":"{id}","base_revision":2,"meta":"AQIDBA==","chunks":["{id}"],"delta":{{"dropped":["{id}"],"digest":"{id}"}}}}]}}"#
        ),
    ];
    assert_eq!(bodies.len(), WIRE_TYPES.len());
    bodies.iter().enumerate().map(|(i, b)| [&[i as u8][..], b.as_bytes()].concat()).collect()
}

/// The store parses a chunk-upload body. A body that decodes must encode
/// back to exactly the same bytes.
pub fn chunk_batch(data: &[u8]) {
    if let Ok(chunks) = chunk_batch::decode(data) {
        assert_eq!(chunk_batch::encode(&chunks), data, "a chunk batch does not encode back");
    }
}

/// Seeds: one- and two-chunk bodies.
pub fn chunk_batch_seeds() -> Vec<Vec<u8>> {
    let a = SealedChunk::from_parts(ChunkId::from_bytes([1; 32]), vec![1, 2, 3]);
    let b = SealedChunk::from_parts(ChunkId::from_bytes([2; 32]), vec![9; 40]);
    vec![chunk_batch::encode([&a]), chunk_batch::encode([&a, &b])]
}

/// The daemon's control API parses a request from the UI (or from any page
/// that got hold of the token).
pub fn control_request(data: &[u8]) {
    round_trip::<dto::Request>(data);
}

/// Seeds: a few requests.
pub fn control_request_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"type":"get_status"}"#,
        r#"{"type":"resolve_conflict","path":"a","keep":"mine"}"#,
        r#"{"type":"update_settings","upload_limit_kib":64}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
