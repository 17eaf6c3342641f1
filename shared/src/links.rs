//! The documents a document links to, for a crawl that follows links (`producer --follow`):
//! a pokemon links to its species, types, abilities and moves; a species to its evolution chain;
//! a chain to the species in it. Ids come from the link URLs ([`id_from_url`]); a link without
//! one is skipped (it cannot name an item), and a document that does not decode links to
//! nothing (its own transform judges it). Only documents a consumer stored get here, so the
//! cost of decoding them once more is paid by crawls that follow links alone.

use serde_json::Value;

use crate::pokeapi::id_from_url;

/// The `(resource, id)` each link of `body`, a document of `resource`, names; each once, in
/// `(resource, id)` order.
pub fn links(resource: &str, body: &[u8]) -> Vec<(&'static str, i32)> {
    let Ok(document) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut add = |to: &'static str, link: &Value| {
        if let Some(id) = link
            .get("url")
            .and_then(Value::as_str)
            .and_then(id_from_url)
        {
            found.push((to, id));
        }
    };
    let each = |list: &str| -> Vec<Value> {
        document
            .get(list)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match resource {
        "pokemon" => {
            if let Some(species) = document.get("species") {
                add("pokemon-species", species);
            }
            for (list, field, to) in [
                ("types", "type", "type"),
                ("abilities", "ability", "ability"),
                ("moves", "move", "move"),
            ] {
                for slot in each(list) {
                    if let Some(link) = slot.get(field) {
                        add(to, link);
                    }
                }
            }
        }
        "pokemon-species" => {
            if let Some(chain) = document.get("evolution_chain") {
                add("evolution-chain", chain);
            }
        }
        "evolution-chain" => {
            let mut stages: Vec<&Value> = document.get("chain").into_iter().collect();
            // Iterative, so a forged document nested deeply cannot exhaust the stack.
            while let Some(stage) = stages.pop() {
                if let Some(species) = stage.get("species") {
                    add("pokemon-species", species);
                }
                if let Some(next) = stage.get("evolves_to").and_then(Value::as_array) {
                    stages.extend(next);
                }
            }
        }
        _ => {}
    }
    found.sort_unstable();
    found.dedup();
    found
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
