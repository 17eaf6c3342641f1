//! Picks a few top-level fields out of a large JSON object without parsing the rest.
//!
//! A PokeAPI pokemon document is about 150 KB (up to 1.3 MB), and almost all of it is in fields
//! pokeq never reads: `moves`, `game_indices`, most of `sprites`. serde_json tokenises every
//! byte of those even when it only skips them, at about 1 GB/s: that was half of the consumer's
//! CPU (measured by the benchmark). [`pick`] instead only looks for where each value ends:
//! quotes, escapes and brackets, sixteen bytes at a time. The fields it keeps are handed to
//! serde_json, which validates them fully; the ones it skips are only checked to be well
//! delimited: strings end, brackets balance and match in kind, scalars are made of number or
//! literal characters.

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
            i = skip_ws(body, key_end);
            expect(body, i, b':', "expected ':' after a field name")?;
            let value_start = skip_ws(body, i + 1);
            let value_end = skip_value(body, value_start)?;
            if is_wanted(key, wanted) {
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

/// `key` is a JSON string with its quotes; an escaped name is decoded before comparing.
fn is_wanted(key: &[u8], wanted: &[&str]) -> bool {
    let name = &key[1..key.len() - 1];
    if !name.contains(&b'\\') {
        return wanted.iter().any(|w| w.as_bytes() == name);
    }
    serde_json::from_slice::<String>(key).is_ok_and(|name| wanted.contains(&name.as_str()))
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

/// Index just past the string whose opening quote is at `at`.
fn skip_string(body: &[u8], at: usize) -> Result<usize, ScanError> {
    let mut from = at + 1;
    loop {
        match memchr::memchr2(b'"', b'\\', &body[from.min(body.len())..]) {
            Some(offset) if body[from + offset] == b'"' => return Ok(from + offset + 1),
            // A backslash escapes the next byte (for `\u`, the hex digits are harmless).
            Some(offset) => from += offset + 2,
            None => return Err(error("unterminated string", at)),
        }
    }
}

/// A number, `true`, `false` or `null`: checked for its characters, not its grammar.
fn skip_scalar(body: &[u8], at: usize) -> Result<usize, ScanError> {
    let end = body[at..]
        .iter()
        .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
        .map_or(body.len(), |n| at + n);
    let token = &body[at..end];
    let literal = matches!(token, b"true" | b"false" | b"null");
    let number = !token.is_empty()
        && token
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'));
    if literal || number {
        Ok(end)
    } else {
        Err(error("expected a value", at))
    }
}

/// Index just past the object or array whose opening bracket is at `at`. Any depth is fine: the
/// open brackets are bits on a stack, not frames of a recursion.
///
/// The bytes go 64 at a time, as in simdjson: one bit per byte for quotes, backslashes, opening
/// and closing brackets; escaped quotes are cleared, a prefix XOR of the quotes marks what lies
/// inside strings, and only the brackets outside them are visited one by one.
fn skip_nested(body: &[u8], at: usize) -> Result<usize, ScanError> {
    let mut open = Brackets::default();
    // Carried from block to block: whether the first byte is escaped, or inside a string.
    let mut escape_carry = 0u64;
    let mut string_carry = 0u64;
    let mut start = at;
    while start < body.len() {
        let marks = Marks::of(&body[start..]);
        let escaped = escaped_bytes(marks.backslash, &mut escape_carry);
        let in_string = prefix_xor(marks.quote & !escaped) ^ string_carry;
        string_carry = 0u64.wrapping_sub(in_string >> 63);
        let stray = marks.backslash & !in_string & !escaped;
        let mut brackets = (marks.open | marks.close) & !in_string;
        while brackets != 0 {
            let k = brackets.trailing_zeros();
            brackets &= brackets - 1;
            let i = start + k as usize;
            if stray & ((1 << k) - 1) != 0 {
                return Err(error("backslash outside a string", i));
            }
            let byte = body[i];
            if marks.open >> k & 1 == 1 {
                open.push(byte == b'{');
            } else {
                if open.pop() != Some(byte == b'}') {
                    return Err(error("mismatched bracket", i));
                }
                if open.is_empty() {
                    return Ok(i + 1);
                }
            }
        }
        if stray != 0 {
            return Err(error("backslash outside a string", start));
        }
        start += BLOCK;
    }
    Err(error("unterminated object or array", at))
}

const BLOCK: usize = 64;

/// One bit per byte of a block (bit k for byte k; bytes past the end count as blanks).
struct Marks {
    quote: u64,
    backslash: u64,
    open: u64,
    close: u64,
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
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        let mut marks = Self {
            quote: 0,
            backslash: 0,
            open: 0,
            close: 0,
        };
        for (n, chunk) in block.chunks_exact(16).enumerate() {
            // SAFETY: SSE2 is in the x86_64 baseline, so every x86_64 CPU runs these; `chunk` is
            // 16 readable bytes, and an unaligned load has no alignment requirement.
            let [quote, backslash, open, close] = unsafe {
                let bytes = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
                let folded = _mm_or_si128(bytes, _mm_set1_epi8(0x20));
                let equal = |v, byte: u8| {
                    _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8))) as u16
                };
                [
                    equal(bytes, b'"'),
                    equal(bytes, b'\\'),
                    equal(folded, b'{'),
                    equal(folded, b'}'),
                ]
            };
            let shift = 16 * n;
            marks.quote |= u64::from(quote) << shift;
            marks.backslash |= u64::from(backslash) << shift;
            marks.open |= u64::from(open) << shift;
            marks.close |= u64::from(close) << shift;
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
            open: bits(|b| b | 0x20 == b'{'),
            close: bits(|b| b | 0x20 == b'}'),
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
        for depth in [127, 128, 129, 300] {
            let deep = format!(r#"{{"a": {}{}}}"#, "[{".repeat(depth), "}]".repeat(depth));
            assert_eq!(picked(&deep, &["b"]).unwrap(), "{}", "depth {depth}");
            let wrong = format!(r#"{{"a": {}{}}}"#, "[{".repeat(depth), "]}".repeat(depth));
            assert_eq!(
                pick(wrong.as_bytes(), &[]).unwrap_err().what,
                "mismatched bracket"
            );
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
