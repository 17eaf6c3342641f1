//! The resources the stub serves, by PokeAPI's names.

use std::fmt;

/// A PokeAPI resource: `/api/v2/<name>/` lists it, `/api/v2/<name>/<id>/` serves one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Pokemon,
    PokemonSpecies,
    EvolutionChain,
    Type,
    Ability,
    Move,
}

impl Resource {
    pub const ALL: [Resource; 6] = [
        Resource::Pokemon,
        Resource::PokemonSpecies,
        Resource::EvolutionChain,
        Resource::Type,
        Resource::Ability,
        Resource::Move,
    ];

    /// The path segment, as PokeAPI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Pokemon => "pokemon",
            Resource::PokemonSpecies => "pokemon-species",
            Resource::EvolutionChain => "evolution-chain",
            Resource::Type => "type",
            Resource::Ability => "ability",
            Resource::Move => "move",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Position in [`Resource::ALL`], for per-resource tables.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Mixed into the seed of rate-based faults, so that each resource's ids fail
    /// independently; 0 for pokemon, whose faults stay what they were before the other
    /// resources existed.
    pub(crate) fn salt(self) -> u64 {
        match self {
            Resource::Pokemon => 0,
            other => 0x5EED_0000 + other.index() as u64,
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in Resource::ALL {
            assert_eq!(Resource::from_name(r.name()), Some(r));
            assert_eq!(Resource::ALL[r.index()], r);
        }
        assert_eq!(Resource::from_name("berry"), None);
        assert_eq!(Resource::PokemonSpecies.to_string(), "pokemon-species");
    }
}
