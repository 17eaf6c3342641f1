//! The pokemon rows pokeq stores, as the consumer hands them over and as the statement that
//! writes them reads them. A row is written in the transaction that marks its item `done`
//! (`crate::commit`).

use tokio_postgres::types::Json;

use super::StoreError;
use crate::transform::Pokemon;
use crate::validators::Validators;

/// One pokemon row for a group commit (`crate::commit`).
#[derive(Debug, Clone)]
pub struct SaveRow {
    pub pokemon: Pokemon,
    pub validators: Validators,
    pub attempts: i32,
}

/// One row of [`SAVE_DONE`]'s input, named as its record columns.
#[derive(Debug, serde::Serialize)]
struct BatchRow<'a> {
    id: i32,
    name: &'a str,
    attempts: i32,
    height: i32,
    weight: i32,
    base_experience: Option<i32>,
    types: &'a [String],
    abilities: &'a [String],
    stats: &'a [crate::transform::Stat],
    sprite_url: Option<&'a str>,
    species: Option<&'a str>,
    is_default: Option<bool>,
    sort_order: Option<i32>,
    etag: Option<&'a str>,
    last_modified: Option<&'a str>,
}

impl<'a> BatchRow<'a> {
    fn of(row: &'a SaveRow) -> Self {
        let p = &row.pokemon;
        Self {
            id: p.id,
            name: &p.name,
            attempts: row.attempts,
            height: p.height,
            weight: p.weight,
            base_experience: p.base_experience,
            types: &p.types,
            abilities: &p.abilities,
            stats: &p.stats,
            sprite_url: p.sprite.as_deref(),
            species: p.species.as_deref(),
            is_default: p.is_default,
            sort_order: p.order,
            etag: row.validators.etag.as_deref(),
            last_modified: row.validators.last_modified.as_deref(),
        }
    }
}

/// Upserts pokemon rows: `$1` is a JSON array of [`BatchRow`]s in id order.
const UPSERT_POKEMON: &str = "insert into pokemon (id, name, height_m, weight_kg,
                          base_experience, types, abilities, stats, sprite_url, species,
                          is_default, sort_order)
     select id, name, round(height::numeric / 10, 1), round(weight::numeric / 10, 1),
            base_experience, types, abilities, stats, sprite_url, species, is_default,
            sort_order
     from jsonb_to_recordset($1) as r(
            id int, name text, attempts int, height int, weight int, base_experience int,
            types text[], abilities text[], stats jsonb, sprite_url text, species text,
            is_default boolean, sort_order int, etag text, last_modified text)
     order by id
     on conflict (id) do update
        set name = excluded.name, height_m = excluded.height_m,
            weight_kg = excluded.weight_kg, base_experience = excluded.base_experience,
            types = excluded.types, abilities = excluded.abilities,
            stats = excluded.stats, sprite_url = excluded.sprite_url,
            species = excluded.species, is_default = excluded.is_default,
            sort_order = excluded.sort_order, ingested_at = now()";

/// Writes the rows of pokemon whose items the caller's transaction `tx` has just marked `done`
/// ([`super::finish`]), in one statement; `rows` hold distinct ids.
pub async fn write_pokemon(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[&SaveRow],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut input: Vec<BatchRow> = rows.iter().map(|row| BatchRow::of(row)).collect();
    input.sort_unstable_by_key(|row| row.id);
    let statement = tx.prepare_cached(UPSERT_POKEMON).await?;
    tx.execute(&statement, &[&Json(&input)]).await?;
    Ok(())
}
