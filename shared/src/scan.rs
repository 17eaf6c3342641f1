//! Picks a few top-level fields out of a large JSON object without tokenising the rest.
//!
//! A PokeAPI pokemon document is about 150 KB (up to 1.3 MB), and almost all of it is in fields
//! pokeq never reads: `moves`, `game_indices`, most of `sprites`. serde_json tokenises every
//! byte of those even when it only skips them, at about 1 GB/s: that was half of the consumer's
//! CPU (measured by the benchmark). [`pick`] instead classifies the bytes 64 at a time (quotes,
//! backslashes, brackets, commas, colons, whitespace, control characters, sixteen bytes per
//! SSE2 compare), and visits only the tokens: structural characters and the first byte of each
//! string and scalar, never the inside of a string or the whitespace.
//!
//! It refuses what serde_json refuses when it reads a document into transform's struct, where
//! every member the struct lacks is skipped as `IgnoredAny`: the grammar (commas, colons,
//! brackets that match), numbers, literals, escapes, control characters in strings, and field
//! names that are not UTF-8. Like serde_json's skipping, it does not decode what skipped strings
//! hold (their UTF-8 and `\u` surrogate pairs) and has no nesting limit. The fields it keeps
//! are handed to serde_json, which decodes them fully.

/// Why a document could not be scanned; the message names the first problem and its offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct ScanError {
    pub what: &'static str,
    pub at: usize,
}

/// The compact JSON object made of the top-level fields of `body` whose names are in `wanted`,
/// in document order (a repeated field stays repeated, for the deserializer to refuse). `body`
/// must be one JSON object, surrounded by nothing but whitespace.
pub fn pick(body: &[u8], wanted: &[&str]) -> Result<Vec<u8>, ScanError> {
    let mut out = Vec::with_capacity(1024);
    out.push(b'{');
    let mut i = skip_ws(body, 0);
    expect(body, i, b'{', "expected a JSON object")?;
    i = skip_ws(body, i + 1);
    if body.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            expect(body, i, b'"', "expected a field name")?;
            let key_end = skip_string(body, i)?;
            let key = &body[i..key_end];
            let keep = is_wanted(key, wanted).ok_or(error("invalid field name", i))?;
            i = skip_ws(body, key_end);
            expect(body, i, b':', "expected ':' after a field name")?;
            let value_start = skip_ws(body, i + 1);
            let value_end = skip_value(body, value_start)?;
            if keep {
                if out.len() > 1 {
                    out.push(b',');
                }
                out.extend_from_slice(key);
                out.push(b':');
                out.extend_from_slice(&body[value_start..value_end]);
            }
            i = skip_ws(body, value_end);
            match body.get(i) {
                Some(b',') => i = skip_ws(body, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err(error("expected ',' or '}' after a field", i)),
            }
        }
    }
    if skip_ws(body, i) != body.len() {
        return Err(error("trailing characters after the object", i));
    }
    out.push(b'}');
    Ok(out)
}

/// `key` is a well-formed JSON string with its quotes. `None` when its name is not text, as
/// serde_json decodes a field name: UTF-8, and no `\u` escape of half a surrogate pair.
fn is_wanted(key: &[u8], wanted: &[&str]) -> Option<bool> {
    let name = &key[1..key.len() - 1];
    if !name.contains(&b'\\') {
        let name = std::str::from_utf8(name).ok()?;
        return Some(wanted.contains(&name));
    }
    let name: String = serde_json::from_slice(key).ok()?;
    Some(wanted.contains(&name.as_str()))
}

fn error(what: &'static str, at: usize) -> ScanError {
    ScanError { what, at }
}

fn expect(body: &[u8], at: usize, byte: u8, what: &'static str) -> Result<(), ScanError> {
    if body.get(at) == Some(&byte) {
        Ok(())
    } else {
        Err(error(what, at))
    }
}

fn skip_ws(body: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = body.get(at) {
        at += 1;
    }
    at
}

/// Index just past the value starting at `at`.
fn skip_value(body: &[u8], at: usize) -> Result<usize, ScanError> {
    match body.get(at) {
        Some(b'"') => skip_string(body, at),
        Some(b'{' | b'[') => skip_nested(body, at),
        Some(_) => skip_scalar(body, at),
        None => Err(error("expected a value", at)),
    }
}

/// Index just past the string whose opening quote is at `at`: a byte at a time, for the few
/// short strings at top level (the ones inside objects and arrays go 64 bytes at a time).
fn skip_string(body: &[u8], at: usize) -> Result<usize, ScanError> {
    let mut i = at + 1;
    loop {
        match body.get(i) {
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => i = escape_end(body, i)?,
            Some(0..=0x1f) => return Err(error("control character in a string", i)),
            Some(_) => i += 1,
            None => return Err(error("unterminated string", at)),
        }
    }
}

/// Index just past the escape whose backslash is at `at`: `\\`, `\"`, `\/`, `\b`, `\f`,
/// `\n`, `\r`, `\t`, or `\u` and four hex digits.
fn escape_end(body: &[u8], at: usize) -> Result<usize, ScanError> {
    match body.get(at + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(at + 2),
        Some(b'u') => match body.get(at + 2..at + 6) {
            Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => Ok(at + 6),
            _ => Err(error("invalid escape", at)),
        },
        _ => Err(error("invalid escape", at)),
    }
}

/// Index just past the number, `true`, `false` or `null` at `at`, which must end where a token
/// does (whitespace, a structural character, a quote or the end): `01`, `1.`, `-`, `tru`,
/// `truex` are refused.
fn skip_scalar(body: &[u8], at: usize) -> Result<usize, ScanError> {
    let literal = |text: &[u8]| {
        body.get(at..at + text.len())
            .is_some_and(|bytes| bytes == text)
            .then_some(at + text.len())
    };
    let end = match body[at] {
        b't' => literal(b"true"),
        b'f' => literal(b"false"),
        b'n' => literal(b"null"),
        _ => number_end(body, at),
    };
    match end {
        Some(end) if ends_scalar(body.get(end)) => Ok(end),
        _ => Err(error("expected a value", at)),
    }
}

fn ends_scalar(next: Option<&u8>) -> bool {
    matches!(
        next,
        None | Some(b' ' | b'\n' | b'\r' | b'\t' | b',' | b':' | b'"' | b'{' | b'}' | b'[' | b']')
    )
}

/// Index just past the JSON number at `at`: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number_end(body: &[u8], at: usize) -> Option<usize> {
    let digits = |from: usize| {
        from + body[from.min(body.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut i = at + usize::from(body.get(at) == Some(&b'-'));
    i = match body.get(i) {
        Some(b'0') => i + 1,
        Some(b'1'..=b'9') => digits(i + 1),
        _ => return None,
    };
    if body.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = body.get(i) {
        let from = i + 1 + usize::from(matches!(body.get(i + 1), Some(b'+' | b'-')));
        i = digits(from);
        if i == from {
            return None;
        }
    }
    Some(i)
}

/// Index just past the object or array whose opening bracket is at `at`, every value inside it
/// checked. Any depth is fine: the open brackets are bits on a stack, not frames of a
/// recursion.
///
/// The bytes go 64 at a time, as in simdjson: one bit per byte for quotes, backslashes,
/// structural characters, whitespace and control characters; escaped quotes are cleared, and a
/// prefix XOR of the quotes marks what lies inside strings. The tokens are the structural
/// characters outside strings, the opening quotes, and the first byte of each run of other
/// bytes outside strings (a number or literal). Only they are visited, one by one, through a
/// table of what may follow what ([`NEXT`]); the numbers and literals (each checked as a
/// whole), control characters in strings and escapes are checked after each block, up to where
/// the value ends.
fn skip_nested(body: &[u8], at: usize) -> Result<usize, ScanError> {
    let mut open = Brackets::default();
    let mut state = TOP;
    // Carried from block to block: whether the first byte is escaped, inside a string, or
    // continues a scalar.
    let mut escape_carry = 0u64;
    let mut string_carry = 0u64;
    let mut scalar_carry = 0u64;
    let mut start = at;
    while start < body.len() {
        let marks = Marks::of(&body[start..]);
        let escaped = escaped_bytes(marks.backslash, &mut escape_carry);
        let quotes = marks.quote & !escaped;
        let in_string = prefix_xor(quotes) ^ string_carry;
        string_carry = 0u64.wrapping_sub(in_string >> 63);
        let outside = !(in_string | quotes);
        let scalar = outside & !(marks.structural | marks.ws);
        let scalar_starts = scalar & !((scalar << 1) | scalar_carry);
        scalar_carry = scalar >> 63;
        let mut tokens = (marks.structural & outside) | (quotes & in_string) | scalar_starts;
        let checks = Checks {
            ctrl: marks.ctrl & in_string,
            escapes: escaped & in_string,
            scalars: scalar_starts,
        };
        while tokens != 0 {
            let k = tokens.trailing_zeros();
            tokens &= tokens - 1;
            let i = start + k as usize;
            let class = CLASS[usize::from(body[i])];
            let next = NEXT[usize::from(state)][usize::from(class)];
            if next < STATES {
                state = next;
                continue;
            }
            state = match next {
                PUSH_OBJECT => {
                    open.push(true);
                    KEY_OR_CLOSE
                }
                PUSH_ARRAY => {
                    open.push(false);
                    VALUE_OR_CLOSE
                }
                POP => {
                    open.pop();
                    if open.is_empty() {
                        checks.before(k).run(body, start)?;
                        return Ok(i + 1);
                    }
                    if open.in_object() {
                        AFTER_MEMBER
                    } else {
                        AFTER_ELEMENT
                    }
                }
                _ => {
                    checks.before(k).run(body, start)?;
                    return Err(token_error(state, class, i));
                }
            };
        }
        checks.run(body, start)?;
        start += BLOCK;
    }
    Err(error("unterminated object or array", at))
}

/// What [`skip_nested`] checks after a block, bit k for `body[start + k]`: control characters
/// in strings (refused), escaped bytes (each must complete a valid escape), and the starts of
/// numbers and literals (each must be one, whole).
struct Checks {
    ctrl: u64,
    escapes: u64,
    scalars: u64,
}

impl Checks {
    /// Only the bytes before byte k, where the value ended or went wrong.
    fn before(self, k: u32) -> Self {
        let below = (1u64 << k) - 1;
        Self {
            ctrl: self.ctrl & below,
            escapes: self.escapes & below,
            scalars: self.scalars & below,
        }
    }

    fn run(self, body: &[u8], start: usize) -> Result<(), ScanError> {
        if self.ctrl != 0 {
            let k = self.ctrl.trailing_zeros() as usize;
            return Err(error("control character in a string", start + k));
        }
        for_each_bit(self.escapes, |k| escape_end(body, start + k - 1).map(drop))?;
        for_each_bit(self.scalars, |k| skip_scalar(body, start + k).map(drop))
    }
}

fn for_each_bit(
    mut bits: u64,
    mut check: impl FnMut(usize) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    while bits != 0 {
        check(bits.trailing_zeros() as usize)?;
        bits &= bits - 1;
    }
    Ok(())
}

// What may come next inside an object or array: the states of [`skip_nested`]. Each says in
// which kind of container it is, so that a closing bracket of the other kind is refused by the
// table alone.
/// A member's value, after its `:`.
const MEMBER_VALUE: u8 = 0;
/// An element, after a `,` in an array.
const ELEMENT: u8 = 1;
/// An element or `]`, after `[`.
const VALUE_OR_CLOSE: u8 = 2;
/// A field name, after a `,` in an object.
const KEY: u8 = 3;
/// A field name or `}`, after `{`.
const KEY_OR_CLOSE: u8 = 4;
/// `:`, after a field name.
const COLON: u8 = 5;
/// `,` or `}`, after a member's value.
const AFTER_MEMBER: u8 = 6;
/// `,` or `]`, after an element.
const AFTER_ELEMENT: u8 = 7;
/// The opening bracket of the value being skipped.
const TOP: u8 = 8;
const STATES: u8 = 9;
// Entries of [`NEXT`] past the states: what to do before the next state is known.
const PUSH_OBJECT: u8 = STATES;
const PUSH_ARRAY: u8 = STATES + 1;
/// A closing bracket that may come: the next state depends on the bracket below.
const POP: u8 = STATES + 2;
/// A token that may not come.
const REFUSE: u8 = STATES + 3;

// The kinds of token bytes, the columns of [`NEXT`].
const QUOTE: u8 = 0;
const COMMA: u8 = 1;
const COLON_BYTE: u8 = 2;
const OPEN_OBJECT: u8 = 3;
const OPEN_ARRAY: u8 = 4;
const CLOSE_OBJECT: u8 = 5;
const CLOSE_ARRAY: u8 = 6;
/// `-`, a digit, `t`, `f` or `n`: what a number or literal starts with.
const SCALAR: u8 = 7;
const BACKSLASH: u8 = 8;
const OTHER: u8 = 9;
const CLASSES: usize = 10;

/// The kind of each byte that starts a token.
const CLASS: [u8; 256] = {
    let mut class = [OTHER; 256];
    class[b'"' as usize] = QUOTE;
    class[b',' as usize] = COMMA;
    class[b':' as usize] = COLON_BYTE;
    class[b'{' as usize] = OPEN_OBJECT;
    class[b'[' as usize] = OPEN_ARRAY;
    class[b'}' as usize] = CLOSE_OBJECT;
    class[b']' as usize] = CLOSE_ARRAY;
    class[b'\\' as usize] = BACKSLASH;
    let mut byte = b'0';
    while byte <= b'9' {
        class[byte as usize] = SCALAR;
        byte += 1;
    }
    class[b'-' as usize] = SCALAR;
    class[b't' as usize] = SCALAR;
    class[b'f' as usize] = SCALAR;
    class[b'n' as usize] = SCALAR;
    class
};

/// `NEXT[state][class]`: the state after a token of `class`, or what to do first
/// ([`PUSH_OBJECT`] ... [`REFUSE`]).
const NEXT: [[u8; CLASSES]; STATES as usize] = {
    let mut next = [[REFUSE; CLASSES]; STATES as usize];
    let mut state = 0;
    while state < STATES as usize {
        let s = state as u8;
        if matches!(s, MEMBER_VALUE | ELEMENT | VALUE_OR_CLOSE | TOP) {
            next[state][OPEN_OBJECT as usize] = PUSH_OBJECT;
            next[state][OPEN_ARRAY as usize] = PUSH_ARRAY;
        }
        if matches!(s, MEMBER_VALUE | ELEMENT | VALUE_OR_CLOSE) {
            let after = if s == MEMBER_VALUE {
                AFTER_MEMBER
            } else {
                AFTER_ELEMENT
            };
            next[state][QUOTE as usize] = after;
            next[state][SCALAR as usize] = after;
        }
        match s {
            KEY | KEY_OR_CLOSE => next[state][QUOTE as usize] = COLON,
            COLON => next[state][COLON_BYTE as usize] = MEMBER_VALUE,
            AFTER_MEMBER => next[state][COMMA as usize] = KEY,
            AFTER_ELEMENT => next[state][COMMA as usize] = ELEMENT,
            _ => {}
        }
        if matches!(s, KEY_OR_CLOSE | AFTER_MEMBER) {
            next[state][CLOSE_OBJECT as usize] = POP;
        }
        if matches!(s, VALUE_OR_CLOSE | AFTER_ELEMENT) {
            next[state][CLOSE_ARRAY as usize] = POP;
        }
        state += 1;
    }
    next
};

/// Why a token of `class` cannot come in `state`.
#[cold]
fn token_error(state: u8, class: u8, at: usize) -> ScanError {
    let closes_object = matches!(state, KEY_OR_CLOSE | AFTER_MEMBER);
    let closes_array = matches!(state, VALUE_OR_CLOSE | AFTER_ELEMENT);
    let what = match (class, state) {
        (BACKSLASH, _) => "backslash outside a string",
        (CLOSE_OBJECT, _) if closes_array => "mismatched bracket",
        (CLOSE_ARRAY, _) if closes_object => "mismatched bracket",
        (_, MEMBER_VALUE | ELEMENT | VALUE_OR_CLOSE | TOP) => "expected a value",
        (_, KEY | KEY_OR_CLOSE) => "expected a field name",
        (_, COLON) => "expected ':' after a field name",
        _ => "expected ',' or a closing bracket",
    };
    error(what, at)
}

const BLOCK: usize = 64;

/// One bit per byte of a block (bit k for byte k; bytes past the end count as blanks).
struct Marks {
    quote: u64,
    backslash: u64,
    /// `{`, `}`, `[`, `]`, `,` and `:`.
    structural: u64,
    /// Space, tab, line feed and carriage return.
    ws: u64,
    /// Bytes below 0x20, which a string must escape.
    ctrl: u64,
}

impl Marks {
    fn of(bytes: &[u8]) -> Self {
        match bytes.first_chunk::<BLOCK>() {
            Some(block) => Self::of_block(block),
            None => {
                let mut block = [b' '; BLOCK];
                block[..bytes.len()].copy_from_slice(bytes);
                Self::of_block(&block)
            }
        }
    }

    /// Sixteen bytes per compare with SSE2, which every x86_64 CPU has. OR-ing 0x20 maps `[`
    /// onto `{` and `]` onto `}`, and no other byte onto either.
    #[cfg(target_arch = "x86_64")]
    fn of_block(block: &[u8; BLOCK]) -> Self {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8,
        };
        let mut marks = Self {
            quote: 0,
            backslash: 0,
            structural: 0,
            ws: 0,
            ctrl: 0,
        };
        for (n, chunk) in block.chunks_exact(16).enumerate() {
            // SAFETY: SSE2 is in the x86_64 baseline, so every x86_64 CPU runs these; `chunk` is
            // 16 readable bytes, and an unaligned load has no alignment requirement.
            let [quote, backslash, structural, ws, ctrl] = unsafe {
                let bytes = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
                let splat = |byte: u8| _mm_set1_epi8(byte as i8);
                let equal = |v, byte: u8| _mm_cmpeq_epi8(v, splat(byte));
                let folded = _mm_or_si128(bytes, splat(0x20));
                let structural = _mm_or_si128(
                    _mm_or_si128(equal(folded, b'{'), equal(folded, b'}')),
                    _mm_or_si128(equal(bytes, b','), equal(bytes, b':')),
                );
                let ws = _mm_or_si128(
                    _mm_or_si128(equal(bytes, b' '), equal(bytes, b'\n')),
                    _mm_or_si128(equal(bytes, b'\t'), equal(bytes, b'\r')),
                );
                // min(byte, 0x1f) == byte: the byte is at most 0x1f (unsigned).
                let ctrl = _mm_cmpeq_epi8(_mm_min_epu8(bytes, splat(0x1f)), bytes);
                [
                    equal(bytes, b'"'),
                    equal(bytes, b'\\'),
                    structural,
                    ws,
                    ctrl,
                ]
                .map(|v| _mm_movemask_epi8(v) as u16)
            };
            let shift = 16 * n;
            marks.quote |= u64::from(quote) << shift;
            marks.backslash |= u64::from(backslash) << shift;
            marks.structural |= u64::from(structural) << shift;
            marks.ws |= u64::from(ws) << shift;
            marks.ctrl |= u64::from(ctrl) << shift;
        }
        marks
    }

    /// The same, a byte at a time, elsewhere.
    #[cfg(not(target_arch = "x86_64"))]
    fn of_block(block: &[u8; BLOCK]) -> Self {
        let bits = |test: fn(u8) -> bool| {
            block
                .iter()
                .enumerate()
                .fold(0u64, |bits, (k, &byte)| bits | (u64::from(test(byte)) << k))
        };
        Self {
            quote: bits(|b| b == b'"'),
            backslash: bits(|b| b == b'\\'),
            structural: bits(|b| matches!(b, b'{' | b'}' | b'[' | b']' | b',' | b':')),
            ws: bits(|b| matches!(b, b' ' | b'\n' | b'\t' | b'\r')),
            ctrl: bits(|b| b < 0x20),
        }
    }
}

/// The bytes escaped by a backslash: the one after each odd-length run of backslashes
/// (simdjson's branchless `find_escaped`). `carry` says whether the block's first byte is
/// escaped by the previous block, and is set for the next one.
fn escaped_bytes(backslash: u64, carry: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let backslash = backslash & !*carry;
    let follows_escape = (backslash << 1) | *carry;
    let odd_starts = backslash & !EVEN & !follows_escape;
    let (even_starts, overflow) = odd_starts.overflowing_add(backslash);
    *carry = u64::from(overflow);
    let invert = even_starts << 1;
    (EVEN ^ invert) & follows_escape
}

/// Bit k is the XOR of bits 0..=k: between an opening quote (included) and its closing quote
/// (excluded), bits are set.
fn prefix_xor(mut bits: u64) -> u64 {
    bits ^= bits << 1;
    bits ^= bits << 2;
    bits ^= bits << 4;
    bits ^= bits << 8;
    bits ^= bits << 16;
    bits ^= bits << 32;
    bits
}

/// A stack of open brackets, one bit each (1 for an object): the first 128 levels without
/// allocating.
#[derive(Default)]
struct Brackets {
    top: u128,
    below: Vec<u128>,
    depth: usize,
}

impl Brackets {
    fn push(&mut self, object: bool) {
        if self.depth > 0 && self.depth.is_multiple_of(128) {
            self.below.push(self.top);
            self.top = 0;
        }
        self.top = (self.top << 1) | u128::from(object);
        self.depth += 1;
    }

    fn pop(&mut self) -> Option<bool> {
        if self.depth == 0 {
            return None;
        }
        let object = self.top & 1 == 1;
        self.top >>= 1;
        self.depth -= 1;
        if self.depth > 0 && self.depth.is_multiple_of(128) {
            self.top = self.below.pop().unwrap_or_default();
        }
        Some(object)
    }

    fn is_empty(&self) -> bool {
        self.depth == 0
    }

    /// Whether the innermost open bracket is an object's.
    fn in_object(&self) -> bool {
        self.depth > 0 && self.top & 1 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picked(body: &str, wanted: &[&str]) -> Result<String, ScanError> {
        pick(body.as_bytes(), wanted).map(|out| String::from_utf8(out).unwrap())
    }

    #[test]
    fn keeps_only_the_wanted_fields_in_document_order() {
        let body = r#" {
            "moves": [{"move": {"name": "cut", "url": "/m/15/"}, "x": [1, 2.5e3, -1, true, null]}],
            "name" : "bulba\"saur",
            "tricky": "]}[{\\\"",
            "id": 1,
            "sprites": {"front_default": null, "other": {"a": ["[", "]"]}}
        } "#;
        assert_eq!(
            picked(body, &["id", "name", "sprites"]).unwrap(),
            r#"{"name":"bulba\"saur","id":1,"sprites":{"front_default": null, "other": {"a": ["[", "]"]}}}"#
        );
        assert_eq!(picked("{}", &["id"]).unwrap(), "{}");
        assert_eq!(
            picked(r#"{"n\u0061me": 1}"#, &["name"]).unwrap(),
            r#"{"n\u0061me":1}"#
        );
    }

    #[test]
    fn refuses_what_is_not_one_well_delimited_object() {
        for (body, what) in [
            ("", "expected a JSON object"),
            ("[1]", "expected a JSON object"),
            (r#"{"a": [1, 2}"#, "mismatched bracket"),
            (r#"{"a": {"b": 1]}"#, "mismatched bracket"),
            (r#"{"a": [1, 2]"#, "expected ',' or '}' after a field"),
            (r#"{"a": [1, "2]}"#, "unterminated object or array"),
            (r#"{"a": "x}"#, "unterminated string"),
            (r#"{"a": tru}"#, "expected a value"),
            (r#"{"a": }"#, "expected a value"),
            (r#"{"a" 1}"#, "expected ':' after a field name"),
            (r#"{"a": 1,}"#, "expected a field name"),
            (r#"{"a": 1} x"#, "trailing characters after the object"),
            (r#"{"a": [\"]}"#, "backslash outside a string"),
        ] {
            let got = pick(body.as_bytes(), &["a"]).unwrap_err();
            assert_eq!(got.what, what, "{body}");
        }
        // Nesting across the 128 levels the bracket stack holds without allocating.
        for depth in [127, 128, 129, 300] {
            let open = r#"[{"k":"#.repeat(depth);
            let deep = format!(r#"{{"a": {open}0{}}}"#, "}]".repeat(depth));
            assert_eq!(picked(&deep, &["b"]).unwrap(), "{}", "depth {depth}");
            let wrong = format!(r#"{{"a": {open}0{}}}"#, "]}".repeat(depth));
            assert_eq!(
                pick(wrong.as_bytes(), &[]).unwrap_err().what,
                "mismatched bracket"
            );
        }
    }

    /// What serde_json refuses when it reads a document into a struct: the members it skips as
    /// `IgnoredAny`, and the field names it decodes. `pick` must refuse exactly that.
    fn serde_json_refuses(body: &[u8]) -> bool {
        serde_json::from_slice::<std::collections::BTreeMap<String, serde::de::IgnoredAny>>(body)
            .is_err()
    }

    #[test]
    fn refuses_what_serde_json_refuses_in_a_member_it_skips() {
        for (member, what) in [
            ("[1,,2]", "expected a value"),
            ("[1,]", "expected a value"),
            ("[,1]", "expected a value"),
            ("[1 2]", "expected ',' or a closing bracket"),
            ("[1:2]", "expected ',' or a closing bracket"),
            (r#"["x":1]"#, "expected ',' or a closing bracket"),
            (r#"{"a":1,}"#, "expected a field name"),
            (r#"{"a" 1}"#, "expected ':' after a field name"),
            (r#"{"a":1 "b":2}"#, "expected ',' or a closing bracket"),
            (r#"{"a"::1}"#, "expected a value"),
            ("{1:2}", "expected a field name"),
            ("{,}", "expected a field name"),
            ("[tru]", "expected a value"),
            ("[truex]", "expected a value"),
            ("[nul]", "expected a value"),
            ("[True]", "expected a value"),
            ("[01]", "expected a value"),
            ("[-01]", "expected a value"),
            ("[1.]", "expected a value"),
            ("[.5]", "expected a value"),
            ("[-]", "expected a value"),
            ("[+1]", "expected a value"),
            ("[1e]", "expected a value"),
            ("[1e+]", "expected a value"),
            ("[1.5e3.2]", "expected a value"),
            ("[0x10]", "expected a value"),
            ("[NaN]", "expected a value"),
            (r#"["\x"]"#, "invalid escape"),
            (r#"["\u12"]"#, "invalid escape"),
            (r#"["\u12G4"]"#, "invalid escape"),
            (r#"["\U0041"]"#, "invalid escape"),
            ("[\"a\tb\"]", "control character in a string"),
            ("[\"a\nb\"]", "control character in a string"),
            ("[\"\u{1}\"]", "control character in a string"),
            ("{\"a\u{1f}\":1}", "control character in a string"),
            ("[1,\u{0}]", "expected a value"),
            ("[1\u{c}]", "expected a value"),
            ("[}", "mismatched bracket"),
            ("{]", "mismatched bracket"),
            // The same at top level.
            ("01", "expected a value"),
            ("-", "expected a value"),
            ("1.", "expected a value"),
            ("tru", "expected a value"),
            (r#""\x""#, "invalid escape"),
            ("\"a\tb\"", "control character in a string"),
        ] {
            for body in [
                format!(r#"{{"id": 1, "moves": {member}, "name": "x"}}"#),
                format!(r#"{{"moves": [{{"a": {member}}}], "id": 1}}"#),
            ] {
                assert!(
                    serde_json_refuses(body.as_bytes()),
                    "serde_json accepts {body}"
                );
                if body.starts_with(r#"{"moves": [{"a": "#) && !member.starts_with(['[', '{']) {
                    // Inside an array, a top-level-only case is just another value.
                    assert!(pick(body.as_bytes(), &["id"]).is_err(), "{body}");
                    continue;
                }
                let got = pick(body.as_bytes(), &["id"]).unwrap_err();
                assert_eq!(got.what, what, "{body}");
            }
        }
    }

    #[test]
    fn refuses_field_names_serde_json_cannot_decode() {
        for body in [
            &b"{\"\xff\": 1}"[..],
            b"{\"a\xc3\x28\": 1}",
            br#"{"\ud800": 1}"#,
            br#"{"\udc00x": 1}"#,
        ] {
            assert!(serde_json_refuses(body));
            assert_eq!(pick(body, &["id"]).unwrap_err().what, "invalid field name");
        }
    }

    /// What serde_json accepts when it skips a member, `pick` accepts too: every number form,
    /// every escape, and what serde_json does not check there either (the UTF-8 of a skipped
    /// string, and the pairing of its `\u` surrogates).
    #[test]
    fn accepts_what_serde_json_accepts_in_a_member_it_skips() {
        let strings = [
            "\"\\u00e9\\n\\t\\/\\\\\\\"\\b\\f\\r\"",
            "\"\\ud800\"",
            "\"\u{7f}é\"",
            "\"\"",
            "\"]}[{,:\"",
        ];
        let numbers = [
            "0",
            "-0",
            "12",
            "-12.50",
            "1e5",
            "1E+05",
            "2.5e-3",
            "1e999",
            "123456789012345678901234567890",
        ];
        for value in strings.iter().chain(&numbers).chain(&[
            "true",
            "false",
            "null",
            "[]",
            "{}",
            "[[],{}]",
            r#"{"":""}"#,
        ]) {
            for body in [
                format!(r#"{{"moves":{value},"id":1}}"#),
                format!("{{\"moves\" :\n[ {value} ,\t{{ \"k\" : {value} }} ]\r\n, \"id\":1}}"),
            ] {
                assert!(!serde_json_refuses(body.as_bytes()), "{body}");
                assert_eq!(picked(&body, &["id"]).unwrap(), r#"{"id":1}"#, "{body}");
            }
        }
        let not_utf8 = b"{\"moves\": [\"\xff\xfe\"], \"id\": 1}";
        assert!(!serde_json_refuses(not_utf8));
        assert_eq!(pick(not_utf8, &["id"]).unwrap(), br#"{"id":1}"#);
    }

    /// Tokens, strings and escapes that straddle the 64-byte blocks, at every offset.
    #[test]
    fn agrees_with_serde_json_across_block_boundaries() {
        let tails = [
            r#""\\\"\u00e9""#,
            "-12.5e+3",
            "true",
            r#"[1,,2]"#,
            r#""\x""#,
            "\"\t\"",
            "01",
            r#"{"a" 1}"#,
        ];
        for pad in 0..140 {
            for tail in tails {
                let body = format!(
                    r#"{{"moves": [{{"{}": [{tail}, "x"]}}], "id": 1}}"#,
                    "p".repeat(pad)
                );
                let got = pick(body.as_bytes(), &["id"]);
                assert_eq!(
                    got.is_err(),
                    serde_json_refuses(body.as_bytes()),
                    "{body}: {got:?}"
                );
            }
        }
    }

    /// Any document serde_json accepts is scanned, and the fields picked are the ones
    /// serde_json sees.
    #[test]
    fn agrees_with_serde_json_on_generated_documents() {
        let dataset = pokeapi_stub::dataset::Dataset::synthetic(50, 7);
        for &id in dataset.ids() {
            let body = dataset.payload(id).unwrap();
            let full: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let wanted = ["id", "name", "types", "stats", "sprites"];
            let picked: serde_json::Value =
                serde_json::from_slice(&pick(&body, &wanted).unwrap()).unwrap();
            for name in wanted {
                assert_eq!(picked[name], full[name], "{name} of {id}");
            }
        }
    }
}
