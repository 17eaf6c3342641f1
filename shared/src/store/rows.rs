//! The pokemon rows pokeq stores, as the consumer hands them over and as the statement that
//! writes them reads them. That statement is in `items.rs`: a row is written in the same
//! statement as its item's `done`.

use crate::transform::Pokemon;
use crate::validators::Validators;

/// One row for [`Store::save_many`](super::Store::save_many).
#[derive(Debug, Clone)]
pub struct SaveRow {
    pub pokemon: Pokemon,
    pub validators: Validators,
    pub attempts: i32,
}

/// One row of [`SAVE_DONE`]'s input, named as its record columns.
#[derive(Debug, serde::Serialize)]
pub(super) struct BatchRow<'a> {
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
    pub(super) fn of(row: &'a SaveRow) -> Self {
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
