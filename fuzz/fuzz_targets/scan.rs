//! `scan::pick` against serde_json on arbitrary bytes. transform reads a document through the
//! scanner and hands the picked fields to serde_json; the scanner must refuse exactly what
//! serde_json would refuse if it read the whole document into transform's struct (the members
//! it skips as `IgnoredAny`, the field names it decodes), and pick the fields serde_json sees.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use pokeq_shared::scan::pick;
use serde::de::IgnoredAny;
use serde_json::Value;

/// Some of the fields transform reads, and `moves`, which it skips.
const WANTED: [&str; 4] = ["id", "name", "types", "moves"];

fuzz_target!(|data: &[u8]| {
    let picked = pick(data, &WANTED);
    let reference = serde_json::from_slice::<BTreeMap<String, IgnoredAny>>(data);
    match (&picked, &reference) {
        (Ok(_), Ok(_)) | (Err(_), Err(_)) => {}
        (Ok(_), Err(refused)) => panic!("picked from what serde_json refuses: {refused}"),
        (Err(refused), Ok(_)) => panic!("refused what serde_json accepts: {refused}"),
    }
    if let (Ok(picked), Ok(Value::Object(full))) = (picked, serde_json::from_slice::<Value>(data)) {
        let picked: Value = serde_json::from_slice(&picked).expect("the picked fields are JSON");
        for name in WANTED {
            assert_eq!(picked.get(name), full.get(name), "{name}");
        }
    }
});
