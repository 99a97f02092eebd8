//! Reading a request body into numbers: pure functions, no HTTP.
//!
//! The body is a JSON object (`{"x1": "5", "x2": "[3, 1]", "x3": 7}`) or a JSON
//! array (`[3, 1, 2]`). serde_json checks the JSON and splits an object into its
//! values without building a tree; each value's text then goes through one
//! scanner that reads a number or a Python-style list of numbers, whether the
//! value was a JSON string (`"[5, 3, 9,]"`) or native JSON (`[5, 3, 9]`).

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, RandomState};

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::number::{BigInt, Number};
use crate::sort::Numbers;

/// Why a body was refused, with where in the body the problem is.
#[derive(Debug, Clone, PartialEq)]
pub enum InputError {
    /// The body is empty or only white space.
    EmptyBody,
    /// The body is not valid JSON; serde_json's message says where.
    MalformedJson(String),
    /// The body is valid JSON but neither an object nor an array.
    NotObjectOrArray(&'static str),
    /// A value is not a number or a list of numbers.
    InvalidValue {
        /// The object key holding the value; `None` for a top-level array.
        key: Option<String>,
        /// Character offset inside the value's text (the string's content, or
        /// the native JSON value).
        position: usize,
        reason: Reason,
    },
    /// The body holds more numbers than the configured limit.
    TooManyNumbers { limit: usize },
    /// The object has more keys than the limit (the same as for numbers):
    /// keys hold no numbers, yet each costs memory to read.
    TooManyKeys { limit: usize },
}

/// What exactly is wrong at a position.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    ExpectedNumber { found: Found },
    ExpectedCommaOrEnd { found: Found },
    TrailingText { found: Found },
    NestedList,
    MisplacedUnderscore,
    FloatOutOfRange,
    WrongType(&'static str),
}

/// What the scanner found where it expected something else.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    Char(char),
    End,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Char(c) => write!(f, "{c:?}"),
            Found::End => f.write_str("the end of the value"),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ExpectedNumber { found } => write!(f, "expected a number, found {found}"),
            Reason::ExpectedCommaOrEnd { found } => {
                write!(f, "expected ',' or ']' after a number, found {found}")
            }
            Reason::TrailingText { found } => {
                write!(f, "unexpected {found} after the number or list")
            }
            Reason::NestedList => f.write_str("nested lists are not supported"),
            Reason::MisplacedUnderscore => {
                f.write_str("an underscore in a number must stand between two digits")
            }
            Reason::FloatOutOfRange => f.write_str("the number is too large for a 64-bit float"),
            Reason::WrongType(kind) => {
                write!(f, "expected a number or a list of numbers, found {kind}")
            }
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::EmptyBody => f.write_str(
                "the request body is empty; send a JSON object such as {\"x1\": \"[5, 3, 9]\"}",
            ),
            InputError::MalformedJson(detail) => write!(f, "the body is not valid JSON: {detail}"),
            InputError::NotObjectOrArray(kind) => {
                write!(f, "the body must be a JSON object or array, found {kind}")
            }
            InputError::InvalidValue {
                key,
                position,
                reason,
            } => match key {
                Some(key) => write!(f, "value of key {key:?}, position {position}: {reason}"),
                None => write!(f, "position {position}: {reason}"),
            },
            InputError::TooManyNumbers { limit } => {
                write!(f, "the body holds more than {limit} numbers")
            }
            InputError::TooManyKeys { limit } => {
                write!(f, "the body's object has more than {limit} keys")
            }
        }
    }
}

impl std::error::Error for InputError {}

/// Reads every number of a request body, in document order.
///
/// Object keys are taken in order of first appearance; a repeated key keeps
/// its last value, as Python's `json.loads` did.
pub fn parse_body(body: &[u8], max_numbers: usize) -> Result<Numbers, InputError> {
    let mut numbers = Numbers::with_limit(max_numbers);
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(InputError::EmptyBody),
        Some(b'{') => {
            let seed = Entries {
                body,
                max_keys: max_numbers,
                too_many: Cell::new(false),
            };
            let object = seed
                .deserialize(&mut serde_json::Deserializer::from_slice(body))
                .map_err(|error| match seed.too_many.get() {
                    true => InputError::TooManyKeys { limit: max_numbers },
                    false => malformed(error),
                })?;
            for entry in &object.entries {
                let key = || Some(String::from_utf8_lossy(object.key(entry)).into_owned());
                let value =
                    std::str::from_utf8(object.text(entry.value)).map_err(malformed_utf8)?;
                scan_json_value(value, &mut numbers).map_err(|e| e.at(key()))?;
            }
        }
        Some(b'[') => {
            // A JSON array of numbers is also a valid list for the scanner, so
            // scan it directly; only when that fails does serde_json say
            // whether the body is JSON at all, for the clearer error.
            let scanned = std::str::from_utf8(body)
                .ok()
                .map(|text| scan(text, &mut numbers));
            if let Some(Ok(())) = scanned {
                return Ok(numbers);
            }
            let raw: &RawValue = serde_json::from_slice(body).map_err(malformed)?;
            numbers = Numbers::with_limit(max_numbers);
            scan_json_value(raw.get(), &mut numbers).map_err(|e| e.at(None))?;
        }
        Some(_) => {
            let raw: &RawValue = serde_json::from_slice(body).map_err(malformed)?;
            return Err(InputError::NotObjectOrArray(json_kind(raw.get())));
        }
    }
    Ok(numbers)
}

fn malformed(error: serde_json::Error) -> InputError {
    InputError::MalformedJson(error.to_string())
}

/// serde_json checked the whole body as UTF-8 already; stay total anyway.
fn malformed_utf8(error: std::str::Utf8Error) -> InputError {
    InputError::MalformedJson(error.to_string())
}

fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// An error inside one value, before the key is known.
#[derive(Debug)]
enum ValueError {
    At {
        offset: usize,
        text: String,
        reason: Reason,
    },
    TooMany {
        limit: usize,
    },
}

impl ValueError {
    fn at(self, key: Option<String>) -> InputError {
        match self {
            ValueError::At {
                offset,
                text,
                reason,
            } => InputError::InvalidValue {
                key,
                position: text[..offset].chars().count(),
                reason,
            },
            ValueError::TooMany { limit } => InputError::TooManyNumbers { limit },
        }
    }
}

/// A JSON string whose content borrows from the body when it has no escapes.
#[derive(serde::Deserialize)]
struct JsonString<'a>(#[serde(borrow)] Cow<'a, str>);

/// Scans one value given as its JSON text.
fn scan_json_value(text: &str, numbers: &mut Numbers) -> Result<(), ValueError> {
    match text.as_bytes().first() {
        Some(b'"') => {
            // Valid JSON was checked already, so this cannot fail; stay total anyway.
            let JsonString(content) = serde_json::from_str(text).map_err(|_| ValueError::At {
                offset: 0,
                text: text.to_owned(),
                reason: Reason::WrongType("a malformed string"),
            })?;
            scan(&content, numbers)
        }
        Some(b'{' | b't' | b'f' | b'n') => Err(ValueError::At {
            offset: 0,
            text: text.to_owned(),
            reason: Reason::WrongType(json_kind(text)),
        }),
        _ => scan(text, numbers),
    }
}

/// Reads an object's entries in order of first appearance, each with its
/// last value, refusing more than `max_keys` of them: a key holds
/// no number, so the number limit alone would not bound what a body of keys
/// costs to read. Each entry is only where its key and value are in the body
/// (16 bytes): a body of a million keys costs ~16 MB of entries, not ~40.
struct Entries<'b> {
    body: &'b [u8],
    max_keys: usize,
    too_many: Cell<bool>,
}

/// A part of the body: its start and length, or, with ESCAPED set in
/// `start`, a key that had escapes, by its place in `Object::escaped`.
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

/// Marks a `Span` that names an unescaped copy of a key (bodies are at
/// most 1 GiB: `Config` refuses larger limits, so real starts stay below).
const ESCAPED: u32 = 1 << 31;

#[derive(Clone, Copy)]
struct Entry {
    key: Span,
    value: Span,
}

/// An object's entries in order of first appearance, each with its last value.
struct Object<'b> {
    body: &'b [u8],
    entries: Vec<Entry>,
    /// Keys that had escapes, unescaped (rare: most keys are borrowed).
    escaped: Vec<String>,
}

impl Object<'_> {
    fn text(&self, span: Span) -> &[u8] {
        &self.body[span.start as usize..][..span.len as usize]
    }

    /// The key's text, unescaped.
    fn key(&self, entry: &Entry) -> &[u8] {
        match entry.key.start {
            start if start & ESCAPED != 0 => self.escaped[(start & !ESCAPED) as usize].as_bytes(),
            _ => self.text(entry.key),
        }
    }

    /// Where `part`, a slice of the body, is in it.
    fn span_of(&self, part: &str) -> Option<Span> {
        let start = (part.as_ptr() as usize).checked_sub(self.body.as_ptr() as usize)?;
        let span = Span {
            start: u32::try_from(start).ok().filter(|&s| s < ESCAPED)?,
            len: u32::try_from(part.len()).ok()?,
        };
        (start + part.len() <= self.body.len()).then_some(span)
    }
}

impl<'de> DeserializeSeed<'de> for &Entries<'de> {
    type Value = Object<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &Entries<'de> {
    type Value = Object<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = Object {
            body: self.body,
            entries: Vec::new(),
            escaped: Vec::new(),
        };
        let outside = || A::Error::custom("a key or value outside the body");
        let too_many = || {
            self.too_many.set(true);
            A::Error::custom("too many keys")
        };
        // A repeated key is one key, so repeats are merged once the entries
        // reach twice the keys allowed (and at the end): at most that many
        // are held, and each merge has at least the limit's worth of new
        // entries to pay for it.
        let room = self.max_keys.saturating_mul(2);
        while let Some(JsonString(key)) = map.next_key::<JsonString<'de>>()? {
            if object.entries.len() >= room {
                object.merge_repeated_keys();
                if object.entries.len() > self.max_keys {
                    return Err(too_many());
                }
            }
            let value: &'de RawValue = map.next_value()?;
            let value = object.span_of(value.get()).ok_or_else(outside)?;
            let key = match key {
                Cow::Borrowed(key) => object.span_of(key).ok_or_else(outside)?,
                Cow::Owned(key) => {
                    let place = u32::try_from(object.escaped.len())
                        .ok()
                        .filter(|&p| p < ESCAPED)
                        .ok_or_else(outside)?;
                    object.escaped.push(key);
                    Span {
                        start: ESCAPED | place,
                        len: 0,
                    }
                }
            };
            object.entries.push(Entry { key, value });
        }
        object.merge_repeated_keys();
        if object.entries.len() > self.max_keys {
            return Err(too_many());
        }
        Ok(object)
    }
}

impl Object<'_> {
    /// Gives each key that appears more than once its last value, at its
    /// first place, and drops its later entries. Done on all entries at
    /// once, by sorting (hash, place) pairs packed in a `u64` (8 bytes an
    /// entry) rather than probing a hash table per key: on a body of a
    /// million keys the table's cache misses took most of the time. Keys
    /// whose 32-bit hashes are equal are compared as text.
    fn merge_repeated_keys(&mut self) {
        let hasher = RandomState::new();
        let mut by_hash: Vec<u64> = self
            .entries
            .iter()
            .zip(0u32..)
            .map(|(entry, at)| {
                hasher.hash_one(self.key(entry)) & !u64::from(u32::MAX) | u64::from(at)
            })
            .collect();
        by_hash.sort_unstable();
        let mut merged: Vec<bool> = Vec::new();
        for run in by_hash.chunk_by(|a, b| a >> 32 == b >> 32) {
            // In place order within the run; each key's first place takes
            // the value of its last one. Linear for one key repeated, however
            // often: every later place of it is merged in the first pass.
            for (i, &first) in run.iter().enumerate() {
                let first = first as u32;
                if merged.get(first as usize) == Some(&true) {
                    continue;
                }
                let key = self.key(&self.entries[first as usize]);
                let mut last = first;
                for &at in &run[i + 1..] {
                    let at = at as u32;
                    if merged.get(at as usize) != Some(&true)
                        && self.key(&self.entries[at as usize]) == key
                    {
                        if merged.is_empty() {
                            merged = vec![false; self.entries.len()];
                        }
                        merged[at as usize] = true;
                        last = at;
                    }
                }
                self.entries[first as usize].value = self.entries[last as usize].value;
            }
        }
        if !merged.is_empty() {
            let mut keep = merged.iter().map(|&gone| !gone);
            self.entries.retain(|_| keep.next().unwrap_or(true));
        }
    }
}

/// Scans one value's text: a number, or a list of numbers in Python-literal
/// style (`[5, 3, 9]`, `[]`, `[11,14,5,]`), with white space anywhere.
fn scan(text: &str, numbers: &mut Numbers) -> Result<(), ValueError> {
    let mut scanner = Scanner {
        bytes: text.as_bytes(),
        pos: 0,
    };
    scanner.value(numbers).map_err(|fail| match fail {
        Fail::At(offset, reason) => ValueError::At {
            offset,
            text: text.to_owned(),
            reason,
        },
        Fail::TooMany(limit) => ValueError::TooMany { limit },
    })
}

enum Fail {
    At(usize, Reason),
    TooMany(usize),
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// The character at the cursor, for error messages.
    fn found(&self) -> Found {
        // The scanner only stops on ASCII bytes or at the start of a character,
        // so this slice is always at a char boundary.
        std::str::from_utf8(&self.bytes[self.pos..])
            .ok()
            .and_then(|rest| rest.chars().next())
            .map_or(Found::End, Found::Char)
    }

    fn fail<T>(&self, reason: Reason) -> Result<T, Fail> {
        Err(Fail::At(self.pos, reason))
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self, numbers: &mut Numbers) -> Result<(), Fail> {
        self.skip_whitespace();
        if self.peek() == Some(b'[') {
            self.list(numbers)?;
        } else {
            self.element(numbers)?;
        }
        self.skip_whitespace();
        match self.peek() {
            None => Ok(()),
            Some(_) => self.fail(Reason::TrailingText {
                found: self.found(),
            }),
        }
    }

    fn list(&mut self, numbers: &mut Numbers) -> Result<(), Fail> {
        self.pos += 1; // '['
        loop {
            self.skip_whitespace();
            match self.peek() {
                Some(b']') => break,
                Some(b'[') => return self.fail(Reason::NestedList),
                _ => {}
            }
            self.element(numbers)?;
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => break,
                _ => {
                    return self.fail(Reason::ExpectedCommaOrEnd {
                        found: self.found(),
                    })
                }
            }
        }
        self.pos += 1; // ']'
        Ok(())
    }

    /// Reads one number into `numbers`. Plain integers of up to 18 digits
    /// (nearly all input) take a fast path; anything else goes to
    /// [`Scanner::number`], which reads every form.
    #[inline]
    fn element(&mut self, numbers: &mut Numbers) -> Result<(), Fail> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        let digits_start = start + usize::from(negative);
        let mut end = digits_start;
        let mut magnitude: i64 = 0;
        while let Some(&digit @ b'0'..=b'9') = self.bytes.get(end) {
            magnitude = magnitude
                .wrapping_mul(10)
                .wrapping_add(i64::from(digit - b'0'));
            end += 1;
        }
        let plain_end = matches!(
            self.bytes.get(end),
            None | Some(b',' | b']' | b' ' | b'\t' | b'\n' | b'\r')
        );
        if plain_end && (1..=18).contains(&(end - digits_start)) {
            self.pos = end;
            let value = if negative { -magnitude } else { magnitude };
            return numbers.push_int(value).map_err(Fail::TooMany);
        }
        let number = self.number()?;
        numbers.push(number).map_err(Fail::TooMany)
    }

    /// Reads digits (with single underscores between them, as Python allows)
    /// and returns how many digits there were.
    fn digits(&mut self, underscores: &mut bool) -> Result<usize, Fail> {
        let mut count = 0;
        loop {
            match self.peek() {
                Some(b'0'..=b'9') => count += 1,
                // Not after a digit, '_' is not part of a number at all.
                Some(b'_') if count == 0 => return Ok(0),
                Some(b'_') => {
                    if !self.bytes.get(self.pos + 1).is_some_and(u8::is_ascii_digit) {
                        return self.fail(Reason::MisplacedUnderscore);
                    }
                    *underscores = true;
                }
                _ => return Ok(count),
            }
            self.pos += 1;
        }
    }

    /// Reads one number: `[+-]? (digits ('.' digits?)? | '.' digits) ([eE] [+-]? digits)?`.
    fn number(&mut self) -> Result<Number, Fail> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.pos += 1;
        }
        let mut underscores = false;
        let int_digits = self.digits(&mut underscores)?;
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            is_float = true;
            self.pos += 1;
            let frac_digits = self.digits(&mut underscores)?;
            if int_digits == 0 && frac_digits == 0 {
                self.pos = start;
                return self.fail(Reason::ExpectedNumber {
                    found: self.found(),
                });
            }
        } else if int_digits == 0 {
            return self.fail(Reason::ExpectedNumber {
                found: self.found(),
            });
        }
        if let Some(b'e' | b'E') = self.peek() {
            is_float = true;
            self.pos += 1;
            if let Some(b'-' | b'+') = self.peek() {
                self.pos += 1;
            }
            if self.digits(&mut underscores)? == 0 {
                return self.fail(Reason::ExpectedNumber {
                    found: self.found(),
                });
            }
        }
        // "12abc", "0x1F", "1j", "1.2.3": the number must end here.
        if let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' {
                return self.fail(Reason::ExpectedCommaOrEnd {
                    found: self.found(),
                });
            }
        }
        let bytes = &self.bytes[start..self.pos];
        let cleaned: Cow<[u8]> = if underscores {
            Cow::Owned(bytes.iter().copied().filter(|&b| b != b'_').collect())
        } else {
            Cow::Borrowed(bytes)
        };
        // Only ASCII digits, signs, '.', 'e' remain: always valid UTF-8.
        let text = std::str::from_utf8(&cleaned).unwrap_or_default();
        if is_float {
            match text.parse::<f64>() {
                Ok(value) if value.is_finite() => Ok(Number::Float(value)),
                _ => Err(Fail::At(start, Reason::FloatOutOfRange)),
            }
        } else {
            // Plain integers took Scanner::element's fast path; here come the
            // rest ("+7", "1_000", big ones). from_digits keeps i64 values small.
            let digits = text.trim_start_matches(['-', '+']);
            Ok(BigInt::from_digits(negative, digits))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(body: &str) -> Result<String, InputError> {
        let numbers = parse_body(body.as_bytes(), 1000)?;
        Ok(crate::sort::tests::json(&numbers))
    }

    #[test]
    fn scanner_reads_python_list_literals() {
        assert_eq!(numbers(r#"{"a": "[11,14,5,]"}"#).unwrap(), "[11,14,5]");
        assert_eq!(numbers(r#"{"a": "[]"}"#).unwrap(), "[]");
        assert_eq!(
            numbers(r#"{"a": " [ -1 ,\n +2.5e1 , .5, 5. ] "}"#).unwrap(),
            "[-1,25.0,0.5,5.0]"
        );
        assert_eq!(numbers(r#"{"a": "1_000"}"#).unwrap(), "[1000]");
    }

    #[test]
    fn repeated_keys_keep_their_last_value_like_python() {
        assert_eq!(
            numbers(r#"{"a": "1", "b": "2", "a": "3"}"#).unwrap(),
            "[3,2]"
        );
        // The same key spelled with escapes is the same key, as in Python.
        assert_eq!(
            numbers(r#"{"a": 1, "b\u0062": 2, "\u0061": 3, "bb": 4, "\n": 5}"#).unwrap(),
            "[3,4,5]"
        );
        let error = parse_body(br#"{"\u00e9t\u00e9": "[1, x]"}"#, 10).unwrap_err();
        assert!(
            matches!(&error, InputError::InvalidValue { key: Some(key), .. } if key == "\u{e9}t\u{e9}"),
            "{error:?}"
        );
    }

    #[test]
    fn errors_name_the_key_and_the_character_position() {
        let error = numbers(r#"{"x1": "[5, 3, é9]"}"#).unwrap_err();
        assert_eq!(
            error,
            InputError::InvalidValue {
                key: Some("x1".into()),
                position: 7,
                reason: Reason::ExpectedNumber {
                    found: Found::Char('é')
                },
            }
        );
    }

    #[test]
    fn count_limit_is_enforced_across_values() {
        let error = parse_body(br#"{"a": "[1,2]", "b": [3, 4]}"#, 3).unwrap_err();
        assert_eq!(error, InputError::TooManyNumbers { limit: 3 });
    }

    #[test]
    fn key_limit_counts_distinct_keys_however_often_they_repeat() {
        // Repeats past twice the limit are merged while reading.
        let repeats: Vec<String> = (0..20)
            .map(|i| format!(r#""a": {i}, "b": [], "c": 100"#))
            .collect();
        let body = format!("{{{}}}", repeats.join(", "));
        let numbers = parse_body(body.as_bytes(), 3).unwrap();
        assert_eq!(crate::sort::tests::json(&numbers), "[19,100]");
        // Fewer distinct keys than the limit, repeated past twice it.
        let one_key: Vec<String> = (0..20).map(|i| format!(r#""a": {i}"#)).collect();
        let body = format!("{{{}}}", one_key.join(", "));
        assert_eq!(
            crate::sort::tests::json(&parse_body(body.as_bytes(), 3).unwrap()),
            "[19]"
        );
        // A fourth distinct key is refused, early among repeats or last.
        let early = format!(r#"{{"d": 1, {}}}"#, repeats.join(", "));
        let last = format!(r#"{{{}, "d": 1}}"#, repeats.join(", "));
        for body in [early, last] {
            let error = parse_body(body.as_bytes(), 3).unwrap_err();
            assert_eq!(error, InputError::TooManyKeys { limit: 3 }, "{body}");
        }
    }

    #[test]
    fn distinct_keys_whose_hashes_collide_keep_their_own_values() {
        // Keys are grouped by the top 32 bits of a random hash: among
        // 300,000 distinct keys about 10 pairs share them (n^2 / 2^33), and
        // each key of such a pair must keep its own value.
        let keys = 300_000;
        let entries: Vec<String> = (0..keys).map(|i| format!(r#""k{i}": {i}"#)).collect();
        let body = format!("{{{}}}", entries.join(","));
        assert_eq!(parse_body(body.as_bytes(), keys).unwrap().count(), keys);
    }
}
