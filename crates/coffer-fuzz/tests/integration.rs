//! The short fuzz run CI makes on stable: every target replays its seeds
//! and then `COFFER_FUZZ_ITERS` (default 20,000) deterministic mutations of
//! them: bit flips, interesting bytes and tokens, insertions, deletions,
//! splices. Coverage-guided runs are `scripts/fuzz` (cargo-fuzz), which
//! drives the very same functions.

use coffer_fuzz::{target, Target, TARGETS};
use rand::{Rng, SeedableRng};

/// Tokens that tend to matter to the parsers under test.
const TOKENS: &[&str] = &[
    "..",
    "/",
    "\\u0000",
    "\0",
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "null",
    "true",
    "-1",
    "0",
    "18446744073709551616",
    "1e400",
    ".coffer",
    ".COFFER",
    "e\u{301}",
    "\u{e9}",
    "\\",
    "!",
    "*",
    "**",
    "\n",
    "\"path\":",
    "\"v\":1",
    "\"kind\":\"file\"",
    "\"chunks\":[]",
    "==",
    "AAAA",
];

fn mutate(rng: &mut rand_chacha::ChaCha8Rng, seeds: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..rng.gen_range(1..=4) {
        let len = input.len();
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] =
                    *[0u8, 0xff, 0x7f, 0x80, b'/', b'.', b'"', 0x01].get(rng.gen_range(0..8)).unwrap_or(&0);
            }
            2 => {
                let t = TOKENS[rng.gen_range(0..TOKENS.len())].as_bytes();
                let at = rng.gen_range(0..=len);
                input.splice(at..at, t.iter().copied());
            }
            3 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 16));
                input.drain(a..b);
            }
            4 => {
                let n = rng.gen_range(1..32);
                let at = rng.gen_range(0..=len);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                input.splice(at..at, bytes);
            }
            5 if len > 0 => input.truncate(rng.gen_range(0..len)),
            6 if !seeds.is_empty() => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let from = rng.gen_range(0..=other.len());
                let at = rng.gen_range(0..=len);
                input.splice(at..at, other[from..].iter().copied());
            }
            _ if len > 1 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..len);
                let piece = input[a..=b].to_vec();
                input.splice(b..b, piece);
            }
            _ => input.push(rng.gen()),
        }
    }
}

fn run(name: &str) {
    let t: &Target = target(name).expect("a known target");
    let iters: usize = std::env::var("COFFER_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let seeds = (t.seeds)();
    assert!(!seeds.is_empty(), "{name} has no seeds");
    for s in &seeds {
        (t.run)(s);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xC0FF_EE00 ^ name.len() as u64);
    let mut input = Vec::new();
    for i in 0..iters {
        if i % 16 == 0 {
            input.clone_from(&seeds[rng.gen_range(0..seeds.len())]);
        }
        mutate(&mut rng, &seeds, &mut input);
        input.truncate(1 << 16);
        let result = std::panic::catch_unwind(|| (t.run)(&input));
        if let Err(e) = result {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("{name} failed on input {:?} (iteration {i}): {why:?}", String::from_utf8_lossy(&input));
        }
    }
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { run(stringify!($name)); })*

        #[test]
        fn every_target_is_run_here() {
            let here = [$(stringify!($name)),*];
            for t in TARGETS {
                assert!(here.contains(&t.name), "{} has no test", t.name);
            }
        }
    };
}

targets!(
    chunk_open,
    meta_open,
    wrapped_key,
    recovery_key,
    opaque_client,
    opaque_server,
    wire_json,
    chunk_batch,
    control_request,
    entry_version,
    chunk_list,
    rel_path,
    ignore_rules,
);
