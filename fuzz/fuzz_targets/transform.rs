//! `transform` over arbitrary API documents: it must never panic, and either yield a row for the
//! requested id with non-negative sizes and at least one type, or refuse with a reason.
//!
//! An input that starts with `{` is the whole document, requested under the id it claims, so
//! real payloads seed the corpus as they are; any other input's first 4 bytes are the requested
//! id (little-endian) and the rest is the document, so id mismatches get explored too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pokeq_shared::transform::transform;

/// The id a document claims at top level, if a quick parse finds one; else 1.
fn claimed_id(body: &[u8]) -> i32 {
    #[derive(serde::Deserialize)]
    struct Head {
        id: i32,
    }
    serde_json::from_slice::<Head>(body).map_or(1, |head| head.id)
}

fuzz_target!(|data: &[u8]| {
    let (requested, body) = match data {
        [b'{', ..] | [] => (claimed_id(data), data),
        [a, b, c, d, rest @ ..] => (i32::from_le_bytes([*a, *b, *c, *d]), rest),
        _ => (1, data),
    };
    match transform(requested, body) {
        Ok(pokemon) => {
            assert_eq!(pokemon.id, requested);
            assert!(pokemon.height >= 0, "height {}", pokemon.height);
            assert!(pokemon.weight >= 0, "weight {}", pokemon.weight);
            assert!(!pokemon.types.is_empty(), "no types");
            assert!(!pokemon.name.trim().is_empty(), "blank name");
        }
        Err(error) => assert!(!error.0.trim().is_empty(), "refusal without a reason"),
    }
});
