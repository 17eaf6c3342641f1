//! The `sprites` object of synthetic payloads: the real nested key layout (front/back, shiny,
//! female, `other.*`, `versions.generation-*.*`) as a static tree, rendered per request.
//!
//! It is a sizeable share of the non-move bytes (5-20 KB), so keeping its real shape keeps the
//! per-request size and parsing cost realistic; which leaves are `null` depends on the spec.

use crate::render::{int, raw};
use crate::synth::Spec;

const SPRITE_BASE: &str =
    "https://raw.githubusercontent.com/PokeAPI/sprites/master/sprites/pokemon/";

/// The `sprites.front_default` URL of a pokemon that has one.
pub(crate) fn front_default_url(id: i32) -> String {
    format!("{SPRITE_BASE}{id}.png")
}

/// Writes the whole `sprites` object for `spec`.
pub(crate) fn write(out: &mut Vec<u8>, spec: &Spec) {
    group(out, &SPRITES, spec);
}

/// A sprite object: its URL directory, file extension, and the generation it belongs to
/// (0: not generation-specific). `always` groups keep their URLs for sprite-less pokemon,
/// like `other.home` of the real 10301.
struct Group {
    key: &'static str,
    dir: &'static str,
    ext: &'static str,
    generation: u8,
    always: bool,
    entries: &'static [Entry],
}

enum Entry {
    Leaf(&'static str),
    Node(&'static Group),
}

use Entry::{Leaf as L, Node as N};

const fn g(
    key: &'static str,
    dir: &'static str,
    generation: u8,
    entries: &'static [Entry],
) -> Group {
    Group {
        key,
        dir,
        ext: "png",
        generation,
        always: false,
        entries,
    }
}

const EIGHT: &[Entry] = &[
    L("back_default"),
    L("back_female"),
    L("back_shiny"),
    L("back_shiny_female"),
    L("front_default"),
    L("front_female"),
    L("front_shiny"),
    L("front_shiny_female"),
];
const FRONT2: &[Entry] = &[L("front_default"), L("front_female")];
const FRONT4: &[Entry] = &[
    L("front_default"),
    L("front_female"),
    L("front_shiny"),
    L("front_shiny_female"),
];
const GEN1: &[Entry] = &[
    L("back_default"),
    L("back_gray"),
    L("back_transparent"),
    L("front_default"),
    L("front_gray"),
    L("front_transparent"),
];
const GOLD: &[Entry] = &[
    L("back_default"),
    L("back_shiny"),
    L("front_default"),
    L("front_shiny"),
    L("front_transparent"),
];
const GEN3: &[Entry] = &[
    L("back_default"),
    L("back_shiny"),
    L("front_default"),
    L("front_shiny"),
];

static SPRITES: Group = Group {
    key: "sprites",
    dir: "",
    ext: "png",
    generation: 0,
    always: false,
    entries: &[
        L("back_default"),
        L("back_female"),
        L("back_shiny"),
        L("back_shiny_female"),
        L("front_default"),
        L("front_female"),
        L("front_shiny"),
        L("front_shiny_female"),
        N(&OTHER),
        N(&VERSIONS_GROUP),
    ],
};
static OTHER: Group = g(
    "other",
    "other",
    0,
    &[N(&DREAM_WORLD), N(&HOME), N(&ARTWORK), N(&SHOWDOWN)],
);
static DREAM_WORLD: Group = Group {
    ext: "svg",
    ..g("dream_world", "other/dream-world", 0, FRONT2)
};
static HOME: Group = Group {
    always: true,
    ..g("home", "other/home", 0, FRONT4)
};
static ARTWORK: Group = Group {
    always: true,
    ..g(
        "official-artwork",
        "other/official-artwork",
        0,
        &[L("front_default"), L("front_shiny")],
    )
};
static SHOWDOWN: Group = Group {
    ext: "gif",
    ..g("showdown", "other/showdown", 0, EIGHT)
};
static VERSIONS_GROUP: Group = g(
    "versions",
    "versions",
    0,
    &[
        N(&GEN_I),
        N(&GEN_II),
        N(&GEN_III),
        N(&GEN_IV),
        N(&GEN_IX),
        N(&GEN_V),
        N(&GEN_VI),
        N(&GEN_VII),
        N(&GEN_VIII),
    ],
);
static GEN_I: Group = g("generation-i", "", 1, &[N(&RED_BLUE), N(&YELLOW)]);
static RED_BLUE: Group = g("red-blue", "versions/generation-i/red-blue", 1, GEN1);
static YELLOW: Group = g("yellow", "versions/generation-i/yellow", 1, GEN1);
static GEN_II: Group = g(
    "generation-ii",
    "",
    2,
    &[N(&CRYSTAL), N(&GOLD_G), N(&SILVER)],
);
static CRYSTAL: Group = g(
    "crystal",
    "versions/generation-ii/crystal",
    2,
    &[
        L("back_default"),
        L("back_shiny"),
        L("back_shiny_transparent"),
        L("back_transparent"),
        L("front_default"),
        L("front_shiny"),
        L("front_shiny_transparent"),
        L("front_transparent"),
    ],
);
static GOLD_G: Group = g("gold", "versions/generation-ii/gold", 2, GOLD);
static SILVER: Group = g("silver", "versions/generation-ii/silver", 2, GOLD);
static GEN_III: Group = g(
    "generation-iii",
    "",
    3,
    &[N(&EMERALD), N(&FRLG), N(&RUBY_SAPPHIRE)],
);
static EMERALD: Group = g(
    "emerald",
    "versions/generation-iii/emerald",
    3,
    &[L("front_default"), L("front_shiny")],
);
static FRLG: Group = g(
    "firered-leafgreen",
    "versions/generation-iii/firered-leafgreen",
    3,
    GEN3,
);
static RUBY_SAPPHIRE: Group = g(
    "ruby-sapphire",
    "versions/generation-iii/ruby-sapphire",
    3,
    GEN3,
);
static GEN_IV: Group = g(
    "generation-iv",
    "",
    4,
    &[N(&DIAMOND_PEARL), N(&HGSS), N(&PLATINUM)],
);
static DIAMOND_PEARL: Group = g(
    "diamond-pearl",
    "versions/generation-iv/diamond-pearl",
    4,
    EIGHT,
);
static HGSS: Group = g(
    "heartgold-soulsilver",
    "versions/generation-iv/heartgold-soulsilver",
    4,
    EIGHT,
);
static PLATINUM: Group = g("platinum", "versions/generation-iv/platinum", 4, EIGHT);
static GEN_IX: Group = g("generation-ix", "", 9, &[N(&SCARLET_VIOLET)]);
static SCARLET_VIOLET: Group = g(
    "scarlet-violet",
    "versions/generation-ix/scarlet-violet",
    9,
    FRONT2,
);
static GEN_V: Group = g("generation-v", "", 5, &[N(&BLACK_WHITE)]);
static BLACK_WHITE: Group = g(
    "black-white",
    "versions/generation-v/black-white",
    5,
    &[
        N(&ANIMATED),
        L("back_default"),
        L("back_female"),
        L("back_shiny"),
        L("back_shiny_female"),
        L("front_default"),
        L("front_female"),
        L("front_shiny"),
        L("front_shiny_female"),
    ],
);
static ANIMATED: Group = Group {
    ext: "gif",
    ..g(
        "animated",
        "versions/generation-v/black-white/animated",
        5,
        EIGHT,
    )
};
static GEN_VI: Group = g("generation-vi", "", 6, &[N(&ORAS), N(&XY)]);
static ORAS: Group = g(
    "omegaruby-alphasapphire",
    "versions/generation-vi/omegaruby-alphasapphire",
    6,
    FRONT4,
);
static XY: Group = g("x-y", "versions/generation-vi/x-y", 6, FRONT4);
static GEN_VII: Group = g("generation-vii", "", 7, &[N(&ICONS_VII), N(&USUM)]);
static ICONS_VII: Group = g("icons", "versions/generation-vii/icons", 7, FRONT2);
static USUM: Group = g(
    "ultra-sun-ultra-moon",
    "versions/generation-vii/ultra-sun-ultra-moon",
    7,
    FRONT4,
);
static GEN_VIII: Group = g("generation-viii", "", 8, &[N(&BDSP), N(&ICONS_VIII)]);
static BDSP: Group = g(
    "brilliant-diamond-shining-pearl",
    "versions/generation-viii/brilliant-diamond-shining-pearl",
    8,
    FRONT2,
);
static ICONS_VIII: Group = g("icons", "versions/generation-viii/icons", 8, FRONT2);

/// Writes a sprite object. A leaf holds a URL when the pokemon has sprites, belongs to a
/// generation the group covers, and (for `*_female` keys) has gender differences; else `null`.
fn group(out: &mut Vec<u8>, group_def: &Group, spec: &Spec) {
    out.push(b'{');
    for (i, entry) in group_def.entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match entry {
            Entry::Node(child) => {
                out.push(b'"');
                raw(out, child.key);
                raw(out, "\":");
                group(out, child, spec);
            }
            Entry::Leaf(key) => {
                out.push(b'"');
                raw(out, key);
                raw(out, "\":");
                let in_generation = group_def.generation == 0
                    || (!spec.is_form && spec.generation <= group_def.generation);
                let present = (if spec.has_sprite {
                    in_generation
                } else {
                    group_def.always
                }) && (spec.has_female || !key.contains("female"));
                if present {
                    leaf_url(out, group_def, key, spec.id);
                } else {
                    raw(out, "null");
                }
            }
        }
    }
    out.push(b'}');
}

/// `"<base><dir>/<key path>/<id>.<ext>"`, where the key path drops `front` and `default`
/// (`back_shiny_female` -> `back/shiny/female`, `front_default` -> nothing), like the real URLs.
fn leaf_url(out: &mut Vec<u8>, group_def: &Group, key: &str, id: i32) {
    out.push(b'"');
    raw(out, SPRITE_BASE);
    if !group_def.dir.is_empty() {
        raw(out, group_def.dir);
        out.push(b'/');
    }
    for part in key.split('_').filter(|p| *p != "front" && *p != "default") {
        raw(out, part);
        out.push(b'/');
    }
    int(out, i64::from(id));
    out.push(b'.');
    raw(out, group_def.ext);
    out.push(b'"');
}
