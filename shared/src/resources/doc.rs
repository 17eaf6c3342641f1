//! What the resource transforms share: PokeAPI's links and localised texts, the rule that picks
//! one English text, and the checks that keep what Postgres refuses out of a record.

use std::borrow::Cow;

use serde::Deserialize;

use super::MalformedPayload;
use crate::pokeapi::id_from_url;

/// A link to another resource: `{"name": .., "url": ..}` (evolution chains have no `name`).
#[derive(Deserialize)]
pub(super) struct Link<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub url: Cow<'a, str>,
}

impl Link<'_> {
    /// The linked resource's id, from the last segment of its URL; `field` names the link in
    /// the reason when there is none.
    pub fn id(&self, field: &str) -> Result<i32, MalformedPayload> {
        id_from_url(&self.url)
            .ok_or_else(|| MalformedPayload(format!("{field}.url {:?} has no id", self.url)))
    }

    /// The id when the URL has one: for links only used to order entries.
    pub fn id_or_zero(&self) -> i32 {
        id_from_url(&self.url).unwrap_or(0)
    }

    pub fn name(&self) -> Option<String> {
        self.name.as_deref().map(str::to_owned)
    }
}

/// A link of which only the name is kept.
#[derive(Deserialize)]
pub(super) struct Named<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

/// One entry of `names[]`: the resource's name in a language.
#[derive(Deserialize)]
pub(super) struct LocalName<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub language: Named<'a>,
}

/// One entry of `effect_entries[]` (abilities, moves).
#[derive(Deserialize)]
pub(super) struct Effect<'a> {
    #[serde(borrow)]
    pub effect: Cow<'a, str>,
    #[serde(borrow, default)]
    pub short_effect: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub language: Named<'a>,
}

/// One entry of `flavor_text_entries[]`: a game's text, tied to a `version` (species) or a
/// `version_group` (abilities, moves).
#[derive(Deserialize)]
pub(super) struct FlavorText<'a> {
    #[serde(borrow)]
    pub flavor_text: Cow<'a, str>,
    #[serde(borrow)]
    pub language: Named<'a>,
    #[serde(borrow, default)]
    pub version: Option<Link<'a>>,
    #[serde(borrow, default)]
    pub version_group: Option<Link<'a>>,
}

pub(super) const ENGLISH: &str = "en";

/// The English entry of `names[]`, the name a Pokédex shows ("Mr. Mime" for `mr-mime`).
pub(super) fn english_name(names: &[LocalName]) -> Option<String> {
    names
        .iter()
        .find(|n| n.language.name == ENGLISH)
        .map(|n| n.name.clone().into_owned())
}

/// The first English entry of `effect_entries[]` (there is at most one).
pub(super) fn english_effect<'e, 'a>(effects: &'e [Effect<'a>]) -> Option<&'e Effect<'a>> {
    effects.iter().find(|e| e.language.name == ENGLISH)
}

/// The English flavour text of the latest game: the entry whose version (or version group) has
/// the highest id, the first of them in the document if several; tidied by [`tidy`]. With the
/// name of that version (or version group), so that a reader knows which game it quotes.
pub(super) fn latest_english_flavor(entries: &[FlavorText]) -> Option<(String, Option<String>)> {
    fn game<'e, 'a>(entry: &'e FlavorText<'a>) -> Option<&'e Link<'a>> {
        entry.version.as_ref().or(entry.version_group.as_ref())
    }
    let (_, latest) = entries
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.language.name == ENGLISH)
        .max_by_key(|(position, entry)| {
            (
                game(entry).map_or(0, Link::id_or_zero),
                std::cmp::Reverse(*position),
            )
        })?;
    Some((tidy(&latest.flavor_text), game(latest).and_then(Link::name)))
}

/// Game text as one line: the games break it for their text boxes with `\n` and `\f` (a new
/// box), and hyphenate words at a break with a soft hyphen (`com\u{ad}\nposition`). A soft hyphen
/// before a break joins the word again; every other run of whitespace becomes one space, none
/// at either end.
pub(super) fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut space = false;
    while let Some(c) = chars.next() {
        if c == '\u{ad}' && chars.peek().is_some_and(|next| next.is_whitespace()) {
            while chars.peek().is_some_and(|next| next.is_whitespace()) {
                chars.next();
            }
            continue;
        }
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// Refuses the first of `fields` (`(name, text)`) holding U+0000, which no Postgres `text` can
/// hold, naming it: the document fails as malformed with a reason instead of failing a group
/// commit shared with other items.
pub(super) fn refuse_nul<'t>(
    fields: impl IntoIterator<Item = (&'static str, Option<&'t str>)>,
) -> Result<(), MalformedPayload> {
    for (field, text) in fields {
        if text.is_some_and(|text| text.contains('\0')) {
            return Err(MalformedPayload(format!(
                "{field} contains a NUL character (\\u0000), which Postgres cannot store"
            )));
        }
    }
    Ok(())
}

/// The document as text Postgres's `jsonb` accepts, all of it and not only the fields a
/// transform keeps, since the whole document is stored: UTF-8, every string's escapes real
/// characters (serde skips the members a transform does not read without decoding them, and
/// `jsonb` refuses a lone surrogate such as `\ud800`), and no `\u0000` anywhere.
pub(super) fn storable_document(body: &[u8]) -> Result<&str, MalformedPayload> {
    let text = std::str::from_utf8(body)
        .map_err(|e| MalformedPayload(format!("the document is not UTF-8: {e}")))?;
    serde_json::from_str::<serde_json::Value>(text).map_err(|e| {
        MalformedPayload(format!(
            "the document holds what Postgres cannot store as JSON: {e}"
        ))
    })?;
    if let Some(at) = nul_escape(body) {
        return Err(MalformedPayload(format!(
            "the document holds a NUL character (\\u0000) at byte {at}, which Postgres cannot store"
        )));
    }
    Ok(text)
}

/// Where JSON text `body` first escapes U+0000. Every backslash in JSON text starts an escape
/// (there are none outside strings), so escapes are read in pairs: the second backslash of an
/// escaped backslash (`\\u0000`, the text `\u0000`) never starts one.
fn nul_escape(body: &[u8]) -> Option<usize> {
    let mut from = 0;
    while from < body.len() {
        let at = from + body[from..].iter().position(|&byte| byte == b'\\')?;
        if body[at + 1..].starts_with(b"u0000") {
            return Some(at);
        }
        from = at + 2;
    }
    None
}

/// Refuses a document for another id than the one requested.
pub(super) fn same_id(kind: &str, found: i32, requested: i32) -> Result<(), MalformedPayload> {
    if found == requested {
        Ok(())
    } else {
        Err(MalformedPayload(format!(
            "payload id {found} differs from the requested {kind} id {requested}"
        )))
    }
}

/// Refuses an empty or blank name.
pub(super) fn named(name: &str) -> Result<(), MalformedPayload> {
    if name.trim().is_empty() {
        Err(MalformedPayload("payload name is empty".into()))
    } else {
        Ok(())
    }
}

/// The error for a document serde could not decode as `kind`.
pub(super) fn not_a(kind: &str, error: serde_json::Error) -> MalformedPayload {
    MalformedPayload(format!("payload is not a PokeAPI {kind}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_joins_game_text_into_one_line() {
        assert_eq!(
            tidy("It has the ability\nto alter the com\u{ad}\nposition of its\u{c}body."),
            "It has the ability to alter the composition of its body."
        );
        assert_eq!(tidy("  a \n\n b\r\n"), "a b");
        assert_eq!(tidy("soft\u{ad}hyphen stays"), "soft\u{ad}hyphen stays");
        assert_eq!(tidy(""), "");
    }

    #[test]
    fn nul_escapes_are_found_outside_escaped_backslashes() {
        assert_eq!(nul_escape(br#"{"a":"x\u0000"}"#), Some(7));
        assert_eq!(nul_escape(br#"{"a":"x\\u0000"}"#), None);
        assert_eq!(nul_escape(br#"{"a":"x\\\u0000"}"#), Some(9));
        assert_eq!(nul_escape(br#"{"a\u0000":1}"#), Some(3));
        assert_eq!(nul_escape(br#"{"a":"\u00001"}"#), Some(6));
        assert_eq!(nul_escape(br#"{"a":"\u0001"}"#), None);
        assert_eq!(nul_escape(b"\\"), None);
        assert_eq!(nul_escape(b""), None);
        assert!(storable_document(b"{\"a\":\"\xff\"}").is_err());
    }

    #[test]
    fn the_latest_english_flavor_text_wins() {
        let entries: Vec<FlavorText> = serde_json::from_str(
            r#"[
            {"flavor_text":"old","language":{"name":"en"},"version":{"name":"red","url":"/v/1/"}},
            {"flavor_text":"neu","language":{"name":"de"},"version":{"name":"z","url":"/v/40/"}},
            {"flavor_text":"new\nline","language":{"name":"en"},"version":{"name":"x","url":"/v/23/"}},
            {"flavor_text":"same game","language":{"name":"en"},"version":{"name":"x","url":"/v/23/"}},
            {"flavor_text":"middle","language":{"name":"en"},"version":{"name":"gold","url":"/v/4/"}}
            ]"#,
        )
        .unwrap();
        assert_eq!(
            latest_english_flavor(&entries),
            Some(("new line".to_owned(), Some("x".to_owned())))
        );
        assert_eq!(latest_english_flavor(&entries[1..2]), None);
    }
}
