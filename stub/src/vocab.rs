//! Static name tables used by the synthetic generator.
//!
//! Type, stat, version and version-group names (with their API ids) are the real ones so that
//! consumers validating against PokeAPI vocabularies accept the synthetic data. Move, ability and
//! pokemon names are built from fragments here: they only need to look plausible and be unique.

/// The 18 real types with their `/api/v2/type/<id>/` ids.
pub(crate) const TYPES: [(&str, u16); 18] = [
    ("normal", 1),
    ("fighting", 2),
    ("flying", 3),
    ("poison", 4),
    ("ground", 5),
    ("rock", 6),
    ("bug", 7),
    ("ghost", 8),
    ("steel", 9),
    ("fire", 10),
    ("water", 11),
    ("grass", 12),
    ("electric", 13),
    ("psychic", 14),
    ("ice", 15),
    ("dragon", 16),
    ("dark", 17),
    ("fairy", 18),
];

/// The six standard stats, in payload order, with their `/api/v2/stat/<id>/` ids.
pub(crate) const STATS: [(&str, u16); 6] = [
    ("hp", 1),
    ("attack", 2),
    ("defense", 3),
    ("special-attack", 4),
    ("special-defense", 5),
    ("speed", 6),
];

/// Move learn methods with their ids.
pub(crate) const LEARN_METHODS: [(&str, u16); 4] =
    [("level-up", 1), ("egg", 2), ("tutor", 3), ("machine", 4)];

/// Version groups with their ids, as referenced by `moves[].version_group_details[]`.
pub(crate) const VERSION_GROUPS: [(&str, u16); 29] = [
    ("red-blue", 1),
    ("yellow", 2),
    ("gold-silver", 3),
    ("crystal", 4),
    ("ruby-sapphire", 5),
    ("emerald", 6),
    ("firered-leafgreen", 7),
    ("diamond-pearl", 8),
    ("platinum", 9),
    ("heartgold-soulsilver", 10),
    ("black-white", 11),
    ("colosseum", 12),
    ("xd", 13),
    ("black-2-white-2", 14),
    ("x-y", 15),
    ("omega-ruby-alpha-sapphire", 16),
    ("sun-moon", 17),
    ("ultra-sun-ultra-moon", 18),
    ("lets-go-pikachu-lets-go-eevee", 19),
    ("sword-shield", 20),
    ("the-isle-of-armor", 21),
    ("the-crown-tundra", 22),
    ("brilliant-diamond-and-shining-pearl", 23),
    ("legends-arceus", 24),
    ("scarlet-violet", 25),
    ("the-teal-mask", 26),
    ("the-indigo-disk", 27),
    ("red-green-japan", 28),
    ("blue-japan", 29),
];

/// Game versions (name, id, generation) for `game_indices` and `held_items`.
pub(crate) const VERSIONS: [(&str, u16, u8); 20] = [
    ("red", 1, 1),
    ("blue", 2, 1),
    ("yellow", 3, 1),
    ("gold", 4, 2),
    ("silver", 5, 2),
    ("crystal", 6, 2),
    ("ruby", 7, 3),
    ("sapphire", 8, 3),
    ("emerald", 9, 3),
    ("firered", 10, 3),
    ("leafgreen", 11, 3),
    ("diamond", 12, 4),
    ("pearl", 13, 4),
    ("platinum", 14, 4),
    ("heartgold", 15, 4),
    ("soulsilver", 16, 4),
    ("black", 17, 5),
    ("white", 18, 5),
    ("black-2", 21, 5),
    ("white-2", 22, 5),
];

/// Generation names; index `g - 1` is generation `g`.
pub(crate) const GENERATIONS: [&str; 9] = [
    "generation-i",
    "generation-ii",
    "generation-iii",
    "generation-iv",
    "generation-v",
    "generation-vi",
    "generation-vii",
    "generation-viii",
    "generation-ix",
];

/// Held items (name, id).
pub(crate) const ITEMS: [(&str, u16); 12] = [
    ("stardust", 91),
    ("oran-berry", 132),
    ("sitrus-berry", 135),
    ("quick-claw", 194),
    ("kings-rock", 198),
    ("silver-powder", 199),
    ("leftovers", 211),
    ("light-ball", 213),
    ("smoke-ball", 228),
    ("everstone", 229),
    ("lucky-egg", 231),
    ("metal-coat", 233),
];

/// Syllables for default pokemon names (no hyphens, so they never collide with form names).
pub(crate) const SYLLABLES: [&str; 60] = [
    "a", "ba", "bel", "bi", "bra", "bu", "chu", "da", "dra", "e", "fa", "fle", "ga", "gon", "gu",
    "i", "ka", "ki", "ko", "la", "lo", "lu", "ma", "mi", "mo", "na", "ne", "no", "o", "pa", "pi",
    "po", "ra", "ri", "ro", "sa", "saur", "se", "shi", "ta", "tor", "tu", "u", "va", "vi", "wa",
    "xa", "ya", "ze", "zu", "chomp", "mon", "ly", "rex", "zard", "dos", "nite", "puff", "tle",
    "quil",
];

/// Suffixes for alternate forms (ids 10001 and up), like `venusaur-mega`.
pub(crate) const FORM_SUFFIXES: [&str; 20] = [
    "mega",
    "mega-x",
    "mega-y",
    "alola",
    "galar",
    "hisui",
    "paldea",
    "gmax",
    "origin",
    "therian",
    "primal",
    "totem",
    "crowned",
    "eternamax",
    "school",
    "busted",
    "dusk",
    "dawn",
    "ultra",
    "starter",
];

const MOVE_A: [&str; 31] = [
    "mega", "thunder", "fire", "ice", "hyper", "quick", "shadow", "dragon", "aqua", "leaf", "rock",
    "iron", "poison", "psycho", "night", "bullet", "giga", "double", "sky", "mud", "flame",
    "power", "dark", "stone", "steel", "crush", "wing", "seed", "dazzling", "sacred", "razor",
];
const MOVE_B: [&str; 30] = [
    "punch", "kick", "beam", "fang", "claw", "slash", "wave", "storm", "pulse", "blast", "tail",
    "wing", "bite", "strike", "dance", "drain", "shot", "ball", "spin", "edge", "rush", "cannon",
    "bomb", "wind", "slam", "impact", "break", "charge", "crash", "tackle",
];

/// Number of distinct moves (move `i` has id `i + 1`).
pub(crate) const MOVE_COUNT: usize = MOVE_A.len() * MOVE_B.len();

/// The two fragments of move `i`'s name, joined by a hyphen.
pub(crate) fn move_name(i: usize) -> [&'static str; 2] {
    let i = i % MOVE_COUNT;
    [MOVE_A[i / MOVE_B.len()], MOVE_B[i % MOVE_B.len()]]
}

const ABILITY_A: [&str; 20] = [
    "swift", "rough", "iron", "static", "flame", "water", "sand", "shadow", "inner", "clear",
    "thick", "keen", "battle", "solar", "pure", "huge", "speed", "early", "shed", "magic",
];
const ABILITY_B: [&str; 16] = [
    "swim", "skin", "fist", "body", "guard", "veil", "tag", "focus", "eye", "armor", "power",
    "boost", "bird", "point", "bounce", "force",
];

/// Number of distinct abilities (ability `i` has id `i + 1`).
pub(crate) const ABILITY_COUNT: usize = ABILITY_A.len() * ABILITY_B.len();

/// The two fragments of ability `i`'s name, joined by a hyphen.
pub(crate) fn ability_name(i: usize) -> [&'static str; 2] {
    let i = i % ABILITY_COUNT;
    [
        ABILITY_A[i / ABILITY_B.len()],
        ABILITY_B[i % ABILITY_B.len()],
    ]
}

/// The types without pokemon of their own (`stellar`, and the `unknown` and `shadow` types of
/// spin-off games, whose ids continue at 10001 like alternate forms), with their ids.
pub(crate) const EXTRA_TYPES: [(&str, u16); 3] =
    [("stellar", 19), ("unknown", 10001), ("shadow", 10002)];

/// Evolution triggers with their ids.
pub(crate) const TRIGGERS: [(&str, u16); 3] = [("level-up", 1), ("trade", 2), ("use-item", 3)];

/// Items used on a pokemon to evolve it (name, id).
pub(crate) const EVOLUTION_ITEMS: [(&str, u16); 10] = [
    ("sun-stone", 80),
    ("moon-stone", 81),
    ("fire-stone", 82),
    ("thunder-stone", 83),
    ("water-stone", 84),
    ("leaf-stone", 85),
    ("shiny-stone", 107),
    ("dusk-stone", 108),
    ("dawn-stone", 109),
    ("ice-stone", 885),
];

/// Items held while trading to evolve (name, id).
pub(crate) const TRADE_ITEMS: [(&str, u16); 4] = [
    ("kings-rock", 198),
    ("metal-coat", 233),
    ("dragon-scale", 235),
    ("up-grade", 252),
];

/// Move damage classes with their ids.
pub(crate) const DAMAGE_CLASSES: [(&str, u16); 3] =
    [("status", 1), ("physical", 2), ("special", 3)];

/// Status conditions a move may cause (name, `/api/v2/move-ailment/<id>/`), with the verb of
/// its effect text.
pub(crate) const AILMENTS: [(&str, u16, &str); 5] = [
    ("paralysis", 1, "paralyze"),
    ("sleep", 2, "put to sleep"),
    ("freeze", 3, "freeze"),
    ("burn", 4, "burn"),
    ("poison", 5, "poison"),
];

/// Game versions whose Pokédex entries species carry (name, id), oldest first.
pub(crate) const FLAVOR_VERSIONS: [(&str, u16); 9] = [
    ("red", 1),
    ("gold", 4),
    ("ruby", 7),
    ("diamond", 12),
    ("black", 17),
    ("x", 23),
    ("sun", 27),
    ("sword", 33),
    ("scarlet", 40),
];

/// Fragments of genera and Pokédex texts.
pub(crate) const GENUS_WORDS: [&str; 16] = [
    "Seed",
    "Lizard",
    "Mouse",
    "Evolution",
    "Flame",
    "Bubble",
    "Cocoon",
    "Bird",
    "Poison",
    "Mole",
    "Psi",
    "Balloon",
    "Drill",
    "Shadow",
    "Frost",
    "Thunder",
];
pub(crate) const FLAVOR_SUBJECTS: [&str; 8] = [
    "It stores energy in its tail",
    "Its body glows faintly at night",
    "It lives in deep forests",
    "This Pokémon is rarely seen",
    "It sleeps for most of the day",
    "Its cry echoes across valleys",
    "It hides from strangers",
    "It is very loyal to its Trainer",
];
pub(crate) const FLAVOR_ENDINGS: [&str; 8] = [
    "and releases it when threatened.",
    "so that travellers can find their way.",
    "where few people ever go.",
    "and only a few have been caught.",
    "but wakes at the slightest noise.",
    "when a storm is coming.",
    "until it learns to trust them.",
    "and follows it everywhere.",
];

/// Generation whose games introduced the type of a given id (`type_generation(13)`: 1).
pub(crate) fn type_generation(type_id: u16) -> u8 {
    match type_id {
        9 | 17 | 10001 => 2,
        10002 => 3,
        18 => 6,
        19 => 9,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn move_and_ability_names_are_unique() {
        let moves: HashSet<_> = (0..MOVE_COUNT).map(move_name).collect();
        assert_eq!(moves.len(), MOVE_COUNT);
        let abilities: HashSet<_> = (0..ABILITY_COUNT).map(ability_name).collect();
        assert_eq!(abilities.len(), ABILITY_COUNT);
    }
}
