//! Sealed formats and the login protocol: chunks, metadata, the wrapped
//! master key, the recovery key, and the OPAQUE messages each side parses.

use coffer_crypto::login::{self, KsfParams, Suite};
use coffer_crypto::{MasterKey, RecoveryKey, WrapKey};
use coffer_proto::{ChunkId, EntryId, Revision, SealedMeta, SealedSettings, WrappedKey};
use opaque_ke::{
    CredentialFinalization, CredentialRequest, RegistrationRequest, RegistrationUpload, ServerLogin,
    ServerLoginStartParameters, ServerRegistration, ServerSetup,
};

use crate::{flip, keys, rng};

const PASSWORD: &[u8] = b"correct horse battery staple";

/// A store serves `data` as a chunk. Whatever the bytes, opening them must
/// fail cleanly unless they are a chunk this account sealed; and a chunk
/// sealed from `data` opens to `data`, but not once one bit is flipped.
pub fn chunk_open(data: &[u8]) {
    let k = keys();
    let claimed = k.chunk_id.content_hash(data.get(1..).unwrap_or_default());
    // The store picks an id that matches what it serves: only the AEAD stands.
    let id = id_of(data);
    assert!(k.chunk.open(&k.chunk_id, id, &claimed, data).is_err(), "unsealed bytes opened as a chunk");

    let content = k.chunk_id.content_hash(data);
    let sealed = k.chunk.seal(&content, data);
    let opened =
        k.chunk.open(&k.chunk_id, sealed.id(), &content, sealed.as_bytes()).expect("own chunk opens");
    assert_eq!(opened, data);
    let mut bad = sealed.as_bytes().to_vec();
    flip(&mut bad, data.first().map_or(0, |b| usize::from(*b)) * 7 + data.len());
    let id = id_of(&bad);
    assert!(k.chunk.open(&k.chunk_id, id, &content, &bad).is_err(), "a tampered chunk opened");
    assert!(
        k.chunk.open(&k.chunk_id, sealed.id(), &content, &bad).is_err(),
        "a chunk opened under an id it does not hash to"
    );
}

/// The store's id of some bytes: BLAKE3 of them (see `coffer_crypto::chunk`).
fn id_of(bytes: &[u8]) -> ChunkId {
    ChunkId::from_bytes(*blake3::hash(bytes).as_bytes())
}

/// Seeds: plaintexts, empty to a few KiB.
pub fn chunk_open_seeds() -> Vec<Vec<u8>> {
    vec![vec![], b"hello".to_vec(), vec![0; 4096], (0..=255).collect()]
}

/// A store serves `data` as an entry's metadata: an error or a genuine
/// seal, never a panic. Metadata sealed from `data` opens only for its own entry and
/// revision, and not once tampered with.
pub fn meta_open(data: &[u8]) {
    let k = keys();
    let entry = EntryId::from_bytes([3; 32]);
    let r = Revision(7);
    let served = SealedMeta::from_sealed_bytes(data.to_vec());
    // Bytes a store makes up: an error, never a panic (a genuine seal, as in
    // the seeds, opens).
    let _ = k.meta.open(&entry, r, &served);

    let sealed = k.meta.seal(&mut rng(data.len() as u64), &entry, r, data);
    assert_eq!(k.meta.open(&entry, r, &sealed).expect("own metadata opens"), data);
    assert!(k.meta.open(&entry, Revision(8), &sealed).is_err(), "metadata replayed at another revision");
    assert!(
        k.meta.open(&EntryId::from_bytes([4; 32]), r, &sealed).is_err(),
        "metadata moved to another entry"
    );
    let mut bad = sealed.into_bytes();
    flip(&mut bad, data.iter().map(|b| usize::from(*b)).sum());
    assert!(k.meta.open(&entry, r, &SealedMeta::from_sealed_bytes(bad)).is_err(), "tampered metadata opened");
}

/// Seeds: metadata plaintexts and a sealed value.
pub fn meta_open_seeds() -> Vec<Vec<u8>> {
    let sealed = keys().meta.seal(&mut rng(1), &EntryId::from_bytes([3; 32]), Revision(7), b"{}");
    vec![b"{}".to_vec(), br#"{"v":1,"path":"a"}"#.to_vec(), sealed.into_bytes()]
}

/// The store hands out `data` as this account's wrapped master key: an
/// error or a genuine one, never a panic. A key wrapped by us unwraps, and not once tampered with.
pub fn wrapped_key(data: &[u8]) {
    let wrap = WrapKey::from_bytes([7; 32]);
    let _ = wrap.unwrap_key(&WrappedKey::from_sealed_bytes(data.to_vec()));
    // With settings beside it (a version 2 key), the data as both.
    let settings = SealedSettings::from_sealed_bytes(data.to_vec());
    let _ = wrap.unwrap_key_with(&WrappedKey::from_sealed_bytes(data.to_vec()), Some(&settings));
    let mut raw = [0u8; 32];
    for (i, b) in data.iter().enumerate() {
        raw[i % 32] ^= b;
    }
    let master = MasterKey::from_bytes(raw);
    let wrapped = wrap.wrap(&mut rng(data.len() as u64), &master);
    let back = wrap.unwrap_key(&wrapped).expect("own wrapped key unwraps");
    assert_eq!(back.expose_secret(), master.expose_secret());
    let mut bad = wrapped.as_bytes().to_vec();
    flip(&mut bad, data.len() * 13);
    assert!(
        wrap.unwrap_key(&WrappedKey::from_sealed_bytes(bad)).is_err(),
        "a tampered wrapped key unwrapped"
    );
    let bound = wrap.wrap_with_settings(&mut rng(data.len() as u64 + 1), &master, &settings);
    let back = wrap.unwrap_key_with(&bound, Some(&settings)).expect("own bound key unwraps");
    assert_eq!(back.expose_secret(), master.expose_secret());
    assert!(wrap.unwrap_key_with(&bound, None).is_err(), "a bound key unwrapped without its settings");
    let mut other = data.to_vec();
    other.push(0);
    assert!(
        wrap.unwrap_key_with(&bound, Some(&SealedSettings::from_sealed_bytes(other))).is_err(),
        "a bound key unwrapped with other settings"
    );
}

/// Seeds: a wrapped key and key-sized bytes.
pub fn wrapped_key_seeds() -> Vec<Vec<u8>> {
    let w = WrapKey::from_bytes([7; 32]).wrap(&mut rng(2), &MasterKey::from_bytes([9; 32]));
    let settings = SealedSettings::from_sealed_bytes(vec![1; 29]);
    let w2 = WrapKey::from_bytes([7; 32]).wrap_with_settings(
        &mut rng(3),
        &MasterKey::from_bytes([9; 32]),
        &settings,
    );
    vec![w.as_bytes().to_vec(), w2.as_bytes().to_vec(), vec![1; 32], vec![]]
}

/// A person types (or pastes) `data` as a recovery key. Parsing must fail
/// cleanly or give a key that prints back as a recovery key parsing to it.
pub fn recovery_key(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(master) = RecoveryKey::parse(&text) {
        let again =
            RecoveryKey::parse(&RecoveryKey::from_master(&master).to_string()).expect("printed key parses");
        assert_eq!(again.expose_secret(), master.expose_secret());
    }
    if data.len() >= 32 {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&data[..32]);
        let printed = RecoveryKey::from_master(&MasterKey::from_bytes(raw)).to_string();
        let relaxed = printed.replace('-', " ").to_lowercase();
        let back = RecoveryKey::parse(&relaxed).expect("a printed key parses, lowercase and spaced");
        assert_eq!(back.expose_secret(), &raw);
    }
}

/// Seeds: a real recovery key and near misses.
pub fn recovery_key_seeds() -> Vec<Vec<u8>> {
    let k = RecoveryKey::from_master(&MasterKey::from_bytes([5; 32])).to_string();
    vec![k.clone().into_bytes(), k.to_lowercase().into_bytes(), k.as_bytes()[..20].to_vec()]
}

/// The client's side of OPAQUE reads the server's answer `data[1..]`:
/// registration (`data[0]` even) or login (odd). Any bytes: an error or a
/// result, never a panic.
pub fn opaque_client(data: &[u8]) {
    let Some((&which, msg)) = data.split_first() else { return };
    let mut r = rng(u64::from(which));
    if which % 2 == 0 {
        let (state, _) = login::register_start(&mut r, PASSWORD).expect("registration starts");
        let _ = login::register_finish(state, &mut r, PASSWORD, msg, &KsfParams::INSECURE_FAST);
    } else {
        let (state, _) = login::login_start(&mut r, PASSWORD).expect("login starts");
        let _ = login::login_finish(state, PASSWORD, msg, &KsfParams::INSECURE_FAST);
    }
}

/// Seeds: real server answers, from an in-process OPAQUE server.
pub fn opaque_client_seeds() -> Vec<Vec<u8>> {
    let mut r = rng(11);
    let setup = ServerSetup::<Suite>::new(&mut r);
    // Registration answer (for a client with seed 0, as the target makes).
    let (_, req) = login::register_start(&mut rng(0), PASSWORD).expect("start");
    let req = RegistrationRequest::<Suite>::deserialize(&req).expect("own request");
    let reg = ServerRegistration::<Suite>::start(&setup, req, b"a@b").expect("server start");
    let mut out = vec![[&[0u8][..], &reg.message.serialize()[..]].concat()];
    // Login answer (for a client with seed 1), against a finished registration.
    let (state, req) = login::register_start(&mut r, PASSWORD).expect("start");
    let req = RegistrationRequest::<Suite>::deserialize(&req).expect("own request");
    let resp = ServerRegistration::<Suite>::start(&setup, req, b"a@b").expect("server start");
    let (upload, _) =
        login::register_finish(state, &mut r, PASSWORD, &resp.message.serialize(), &KsfParams::INSECURE_FAST)
            .expect("finish");
    let record =
        ServerRegistration::<Suite>::finish(RegistrationUpload::deserialize(&upload).expect("upload"));
    let (_, ke1) = login::login_start(&mut rng(1), PASSWORD).expect("login start");
    let ke1 = CredentialRequest::<Suite>::deserialize(&ke1).expect("own KE1");
    let ke2 =
        ServerLogin::start(&mut r, &setup, Some(record), ke1, b"a@b", ServerLoginStartParameters::default())
            .expect("server login");
    out.push([&[1u8][..], &ke2.message.serialize()[..]].concat());
    out
}

/// The server's side of OPAQUE parses a client's message `data[1..]`, of
/// the kind `data[0] % 4` picks. Any bytes: an error or a value.
pub fn opaque_server(data: &[u8]) {
    let Some((&which, msg)) = data.split_first() else { return };
    match which % 4 {
        0 => drop(RegistrationRequest::<Suite>::deserialize(msg)),
        1 => drop(RegistrationUpload::<Suite>::deserialize(msg)),
        2 => drop(CredentialRequest::<Suite>::deserialize(msg)),
        _ => drop(CredentialFinalization::<Suite>::deserialize(msg)),
    }
}

/// Seeds: real client messages.
pub fn opaque_server_seeds() -> Vec<Vec<u8>> {
    let (_, reg) = login::register_start(&mut rng(3), PASSWORD).expect("start");
    let (_, ke1) = login::login_start(&mut rng(4), PASSWORD).expect("start");
    vec![[&[0u8][..], &reg[..]].concat(), [&[2u8][..], &ke1[..]].concat(), vec![1; 200], vec![3; 65]]
}
