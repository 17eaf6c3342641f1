//! Samples mode: real PokeAPI payload files served in place of synthetic ones.
//!
//! Each file is parsed once, re-serialised compactly with its top-level `id` and `name` replaced
//! by markers, and split around them. Serving is then concatenation of shared [`Bytes`] pieces
//! plus the id digits and (possibly suffixed) name, exactly like the synthetic path.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::Value;

use crate::dataset::PokemonRecord;
use crate::render;

const ID_MARKER: &str = "__pokeapi_stub_id_marker__";
const NAME_MARKER: &str = "__pokeapi_stub_name_marker__";

enum Piece {
    Lit(Bytes),
    Id,
    Name,
}

/// One loaded sample file.
pub(crate) struct SampleFile {
    pieces: Vec<Piece>,
    /// The file's own `name`; reuses get a `-<k>` suffix.
    pub name: String,
    /// What the file says, with the file's own id and name (the dataset rewrites both).
    pub record: PokemonRecord,
}

impl SampleFile {
    /// The payload chunks with `served_id` as top-level id and `name` as name.
    pub(crate) fn chunks(&self, served_id: i32, name: &str) -> Vec<Bytes> {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Lit(bytes) => bytes.clone(),
                Piece::Id => Bytes::from(served_id.to_string()),
                Piece::Name => {
                    let mut out = Vec::with_capacity(name.len() + 2);
                    render::string(&mut out, name);
                    Bytes::from(out)
                }
            })
            .collect()
    }
}

/// Loads every `<dir>/pokemon/*.json`, ordered by numeric file stem (then name).
pub(crate) fn load_dir(dir: &Path) -> anyhow::Result<Vec<SampleFile>> {
    let pokemon_dir = dir.join("pokemon");
    let entries = std::fs::read_dir(&pokemon_dir).with_context(|| {
        format!(
            "samples dir {}: cannot read {}",
            dir.display(),
            pokemon_dir.display()
        )
    })?;
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", pokemon_dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "json") && path.is_file() {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        bail!(
            "samples dir {}: no pokemon/*.json files in {}",
            dir.display(),
            pokemon_dir.display()
        );
    }
    paths.sort_by_key(|p| {
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
        let number = stem.as_deref().and_then(|s| s.parse::<i64>().ok());
        (number.is_none(), number, p.clone())
    });
    paths.iter().map(|p| load_file(p)).collect()
}

fn load_file(path: &Path) -> anyhow::Result<SampleFile> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut value: Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let record = record_of(&value).with_context(|| format!("in {}", path.display()))?;
    let obj = value
        .as_object_mut()
        .with_context(|| format!("{}: top level is not an object", path.display()))?;
    obj.insert("id".into(), Value::String(ID_MARKER.into()));
    obj.insert("name".into(), Value::String(NAME_MARKER.into()));
    let compact = serde_json::to_vec(&value)?;
    let pieces =
        split_markers(Bytes::from(compact)).with_context(|| format!("in {}", path.display()))?;
    Ok(SampleFile {
        pieces,
        name: record.name.clone(),
        record,
    })
}

/// Splits the compact text around the quoted markers (each must occur exactly once).
fn split_markers(text: Bytes) -> anyhow::Result<Vec<Piece>> {
    let id_marker = format!("\"{ID_MARKER}\"");
    let name_marker = format!("\"{NAME_MARKER}\"");
    let mut found = Vec::new();
    for (marker, piece) in [(&id_marker, 0u8), (&name_marker, 1u8)] {
        let hits: Vec<usize> = find_all(&text, marker.as_bytes());
        if hits.len() != 1 {
            bail!(
                "expected one top-level {marker} after rewriting, found {}",
                hits.len()
            );
        }
        found.push((hits[0], marker.len(), piece));
    }
    found.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for (start, len, piece) in found {
        pieces.push(Piece::Lit(text.slice(at..start)));
        pieces.push(if piece == 0 { Piece::Id } else { Piece::Name });
        at = start + len;
    }
    pieces.push(Piece::Lit(text.slice(at..)));
    Ok(pieces)
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

fn record_of(v: &Value) -> anyhow::Result<PokemonRecord> {
    let int = |key: &str| -> anyhow::Result<i32> {
        let n = v
            .get(key)
            .and_then(Value::as_i64)
            .with_context(|| format!("`{key}` is not an integer"))?;
        i32::try_from(n).with_context(|| format!("`{key}` out of range"))
    };
    let name_at = |item: &Value, key: &str| -> Option<String> {
        item.get(key)?.get("name")?.as_str().map(str::to_owned)
    };
    let list = |key: &str| -> anyhow::Result<&Vec<Value>> {
        v.get(key)
            .and_then(Value::as_array)
            .with_context(|| format!("`{key}` is not an array"))
    };
    let slot = |item: &Value| item.get("slot").and_then(Value::as_i64).unwrap_or(0);

    let mut types: Vec<(i64, String)> = Vec::new();
    for t in list("types")? {
        let name = name_at(t, "type").context("`types[].type.name` missing")?;
        types.push((slot(t), name));
    }
    types.sort_by_key(|(s, _)| *s);
    let mut abilities: Vec<(i64, String)> = Vec::new();
    for a in list("abilities")? {
        // `ability` can be null in past_abilities; tolerate it here too.
        if let Some(name) = name_at(a, "ability") {
            abilities.push((slot(a), name));
        }
    }
    abilities.sort_by_key(|(s, _)| *s);
    let mut stats = Vec::new();
    for s in list("stats")? {
        let name = name_at(s, "stat").context("`stats[].stat.name` missing")?;
        let base = s
            .get("base_stat")
            .and_then(Value::as_i64)
            .and_then(|b| i32::try_from(b).ok())
            .context("`stats[].base_stat` is not an integer")?;
        stats.push((name, base));
    }
    Ok(PokemonRecord {
        id: int("id")?,
        name: v
            .get("name")
            .and_then(Value::as_str)
            .context("`name` is not a string")?
            .to_owned(),
        height: int("height")?,
        weight: int("weight")?,
        base_experience: match v.get("base_experience") {
            None | Some(Value::Null) => None,
            Some(_) => Some(int("base_experience")?),
        },
        types: types.into_iter().map(|(_, n)| n).collect(),
        abilities: abilities.into_iter().map(|(_, n)| n).collect(),
        stats,
        sprite: v
            .pointer("/sprites/front_default")
            .and_then(Value::as_str)
            .map(str::to_owned),
        species: name_at(v, "species").context("`species.name` missing")?,
    })
}
