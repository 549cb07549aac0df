//! AES-256-GCM, the one AEAD of every sealed format, through `ring` (whose
//! assembly uses AES-NI, CLMUL and their vector forms: about four times the
//! throughput of the portable `aes-gcm` crate on this class of machine, and
//! ingest is bound by it). Keys are borrowed from zeroizing owners; ring's
//! own expanded key schedule lives only for one call.

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};

/// Tag length in bytes.
pub(crate) const TAG_LEN: usize = 16;

fn key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte key is valid for AES-256-GCM"))
}

/// Encrypts `buf` in place; returns the tag.
pub(crate) fn seal_in_place(k: &[u8; 32], nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
    let tag = key(k)
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
        .expect("AES-GCM encrypts any buffer below 64 GiB");
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Decrypts `buf` in place if `tag` authenticates it; on failure the buffer
/// holds garbage and must be discarded (callers drop it).
pub(crate) fn open_in_place(
    k: &[u8; 32],
    nonce: [u8; 12],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> Result<(), ()> {
    open_shifted(k, nonce, aad, buf, 0, tag)
}

/// Decrypts the ciphertext `buf[skip..]` if `tag` authenticates it, writing
/// the plaintext to the front of `buf` as it goes (one pass, no copy); the
/// last `skip` bytes are then left over. On failure the buffer holds
/// garbage and must be discarded.
pub(crate) fn open_shifted(
    k: &[u8; 32],
    nonce: [u8; 12],
    aad: &[u8],
    buf: &mut [u8],
    skip: usize,
    tag: &[u8],
) -> Result<(), ()> {
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(drop)?;
    key(k)
        .open_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            Tag::from(tag),
            buf,
            skip..,
        )
        .map(drop)
        .map_err(drop)
}
