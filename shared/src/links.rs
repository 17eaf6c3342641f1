//! The documents a document links to, for a crawl that follows links (`producer --follow`):
//! a pokemon links to its species, types, abilities and moves; a species to its evolution chain;
//! a chain to the species in it. Ids come from the link URLs ([`id_from_url`]); a link without
//! one is skipped (it cannot name an item), and a document that does not decode links to
//! nothing (its own transform judges it). Only documents a consumer stored get here, so the
//! cost of decoding them once more is paid by crawls that follow links alone.

use std::borrow::Cow;

use serde::Deserialize;

use crate::pokeapi::id_from_url;

/// The `(resource, id)` each link of `body`, a document of `resource`, names; each once, in
/// `(resource, id)` order.
pub fn links(resource: &str, body: &[u8]) -> Vec<(&'static str, i32)> {
    let mut found = Vec::new();
    let mut add = |to: &'static str, link: &Link| {
        if let Some(id) = link.url.as_deref().and_then(id_from_url) {
            found.push((to, id));
        }
    };
    match resource {
        "pokemon" => {
            // Decoded into the links alone: the rest of the document (90% of it the moves'
            // version details) is skipped, not built into values.
            let Ok(pokemon) = serde_json::from_slice::<PokemonLinks>(body) else {
                return Vec::new();
            };
            if let Some(species) = &pokemon.species {
                add("pokemon-species", species);
            }
            for slot in pokemon.types.iter().filter_map(|slot| slot.r#type.as_ref()) {
                add("type", slot);
            }
            for slot in pokemon.abilities.iter().filter_map(|s| s.ability.as_ref()) {
                add("ability", slot);
            }
            for slot in pokemon.moves.iter().filter_map(|slot| slot.r#move.as_ref()) {
                add("move", slot);
            }
        }
        "pokemon-species" => {
            let Ok(species) = serde_json::from_slice::<SpeciesLinks>(body) else {
                return Vec::new();
            };
            if let Some(chain) = &species.evolution_chain {
                add("evolution-chain", chain);
            }
        }
        "evolution-chain" => {
            let Ok(chain) = serde_json::from_slice::<ChainLinks>(body) else {
                return Vec::new();
            };
            // Iterative, so that the walk itself adds no depth (serde_json's own recursion
            // limit bounds how deep a forged document can nest).
            let mut stages: Vec<&Stage> = chain.chain.iter().collect();
            while let Some(stage) = stages.pop() {
                if let Some(species) = &stage.species {
                    add("pokemon-species", species);
                }
                stages.extend(&stage.evolves_to);
            }
        }
        _ => {}
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// A named link (`{"name": ..., "url": ...}`) as far as links go: its URL.
#[derive(Deserialize)]
struct Link<'a> {
    #[serde(borrow, default)]
    url: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PokemonLinks<'a> {
    #[serde(borrow, default)]
    species: Option<Link<'a>>,
    #[serde(borrow, default)]
    types: Vec<TypeSlot<'a>>,
    #[serde(borrow, default)]
    abilities: Vec<AbilitySlot<'a>>,
    #[serde(borrow, default)]
    moves: Vec<MoveSlot<'a>>,
}

#[derive(Deserialize)]
struct TypeSlot<'a> {
    #[serde(borrow, default)]
    r#type: Option<Link<'a>>,
}

#[derive(Deserialize)]
struct AbilitySlot<'a> {
    #[serde(borrow, default)]
    ability: Option<Link<'a>>,
}

#[derive(Deserialize)]
struct MoveSlot<'a> {
    #[serde(borrow, default)]
    r#move: Option<Link<'a>>,
}

#[derive(Deserialize)]
struct SpeciesLinks<'a> {
    #[serde(borrow, default)]
    evolution_chain: Option<Link<'a>>,
}

#[derive(Deserialize)]
struct ChainLinks<'a> {
    #[serde(borrow, default)]
    chain: Option<Stage<'a>>,
}

#[derive(Deserialize)]
struct Stage<'a> {
    #[serde(borrow, default)]
    species: Option<Link<'a>>,
    #[serde(borrow, default)]
    evolves_to: Vec<Stage<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_resource_links_what_a_pokedex_needs() {
        let pokemon =
            br#"{"id":133,"species":{"name":"eevee","url":"https://x/api/v2/pokemon-species/133/"},
            "types":[{"slot":1,"type":{"name":"normal","url":"https://x/api/v2/type/1/"}}],
            "abilities":[{"ability":{"name":"run-away","url":"https://x/api/v2/ability/50/"}},
                         {"ability":{"name":"adaptability","url":"https://x/api/v2/ability/91/"}}],
            "moves":[{"move":{"name":"tackle","url":"https://x/api/v2/move/33/"}},
                     {"move":{"name":"tackle","url":"https://x/api/v2/move/33/"}},
                     {"move":{"name":"odd","url":"https://x/api/v2/move/none/"}}]}"#;
        assert_eq!(
            links("pokemon", pokemon),
            [
                ("ability", 50),
                ("ability", 91),
                ("move", 33),
                ("pokemon-species", 133),
                ("type", 1)
            ]
        );
        let species = br#"{"evolution_chain":{"url":"https://x/api/v2/evolution-chain/67/"}}"#;
        assert_eq!(links("pokemon-species", species), [("evolution-chain", 67)]);
        let chain = br#"{"chain":{"species":{"url":"https://x/api/v2/pokemon-species/133/"},
            "evolves_to":[{"species":{"url":"https://x/api/v2/pokemon-species/134/"},"evolves_to":[]},
                          {"species":{"url":"https://x/api/v2/pokemon-species/135/"},
                           "evolves_to":[{"species":{"url":"https://x/api/v2/pokemon-species/9/"}}]}]}}"#;
        assert_eq!(
            links("evolution-chain", chain),
            [
                ("pokemon-species", 9),
                ("pokemon-species", 133),
                ("pokemon-species", 134),
                ("pokemon-species", 135)
            ]
        );
        assert!(links("type", br#"{"pokemon":[]}"#).is_empty());
        assert!(links("pokemon", b"not json").is_empty());
    }
}
