//! A JSONC parser that keeps the byte span of every value and key.
//!
//! `serde_json` cannot tell where a value came from, and validation must point at
//! `file:line:col` for every problem, so the config is first parsed into a small spanned tree
//! ([`Node`]) and then checked field by field (see `validate`). The grammar is JSON (RFC 8259)
//! plus `//` and `/* */` comments, which is what Cursor accepts (`allowComments: true,
//! allowTrailingCommas: false` in its published schema). A UTF-8 byte order mark is skipped.
//!
//! The parser is written for hostile input: it never panics, nesting is limited to
//! [`MAX_DEPTH`] levels (so recursion cannot exhaust the stack), and it stops at the first
//! syntax error, whose message says what was expected and, where the fix is clear, a hint.
//! Size is bounded by the caller (`load`) before the bytes reach this module.

use std::fmt;

/// Deepest nesting of arrays and objects accepted. environment.json needs three levels
/// (`terminals[i][j]`), so 64 leaves ample room while keeping recursion shallow.
pub const MAX_DEPTH: usize = 64;

/// Byte range `[start, end)` of a token in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub const fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }
}

/// A parsed JSON value together with where it sits in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Span,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Node>),
    /// Members in source order; duplicate keys are kept so validation can report them.
    Object(Vec<Member>),
}

/// One `"key": value` pair of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

/// A JSON number, kept as written so integers of any size are judged exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct Number {
    pub text: String,
}

impl Number {
    /// The value as an integer when it is one (`3000` and `3000.0` and `3e3` all are).
    pub fn as_i64(&self) -> Option<i64> {
        if let Ok(value) = self.text.parse::<i64>() {
            return Some(value);
        }
        let value: f64 = self.text.parse().ok()?;
        // Exact integers only; beyond 2^53 an f64 cannot say, so those are not integers here.
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        if value.fract() == 0.0 && value.abs() <= 9_007_199_254_740_992.0 { Some(value as i64) } else { None }
    }
}

impl Node {
    /// The value as `serde_json` would parse it: duplicate keys resolved as JSON.parse does
    /// (the last wins). Numbers that do not fit an `f64` become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Number(n) => serde_json::from_str(&n.text).unwrap_or(Value::Null),
            NodeKind::String(s) => Value::String(s.clone()),
            NodeKind::Array(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Object(members) => {
                let mut map = serde_json::Map::new();
                for member in members {
                    map.insert(member.key.clone(), member.value.to_json());
                }
                Value::Object(map)
            }
        }
    }
}

impl NodeKind {
    /// How the kind is named in messages: "a string", "an array", ...
    pub fn describe(&self) -> &'static str {
        match self {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Number(_) => "a number",
            NodeKind::String(_) => "a string",
            NodeKind::Array(_) => "an array",
            NodeKind::Object(_) => "an object",
        }
    }
}

/// A syntax error: where it is, what is wrong, and how to fix it when that is clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub offset: usize,
    /// The JSON path of the value being parsed when the error was found (`$` at the top).
    pub json_path: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

impl std::error::Error for SyntaxError {}

/// Parses a complete JSONC document. Trailing content after the value is an error.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut parser = Parser { text, bytes: text.as_bytes(), pos: 0, path: Vec::new() };
    if text.starts_with('\u{feff}') {
        parser.pos = '\u{feff}'.len_utf8();
    }
    parser.skip_trivia()?;
    if parser.pos >= parser.bytes.len() {
        return Err(parser.error_at(
            parser.pos,
            "the file is empty; expected a JSON object".to_owned(),
            Some("run `envbuild init` to write a commented starter file".to_owned()),
        ));
    }
    if let Some(err) = parser.detect_yaml() {
        return Err(err);
    }
    let node = parser.value(0)?;
    parser.skip_trivia()?;
    if parser.pos < parser.bytes.len() {
        return Err(parser.error_here(
            format!("unexpected {} after the end of the JSON value", parser.describe_here()),
            Some("a file holds exactly one JSON object; remove what follows it".to_owned()),
        ));
    }
    Ok(node)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// Where the parser is, for the JSON path of errors.
    path: Vec<PathSegment>,
}

#[derive(Debug)]
enum PathSegment {
    Key(String),
    Index(usize),
}

/// `parent.key`, or `parent["odd key"]` when the key is not an identifier; `$` is the root.
pub fn child_path(parent: &str, key: &str) -> String {
    let simple = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    match (parent == "$", simple) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{}]", serde_json::Value::String(key.to_owned())),
    }
}

/// `parent[index]`.
pub fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

impl Parser<'_> {
    fn error_at(&self, offset: usize, message: String, hint: Option<String>) -> SyntaxError {
        let json_path = self.path.iter().fold("$".to_owned(), |path, segment| match segment {
            PathSegment::Key(key) => child_path(&path, key),
            PathSegment::Index(i) => index_path(&path, *i),
        });
        SyntaxError { offset, json_path, message, hint }
    }

    fn error_here(&self, message: String, hint: Option<String>) -> SyntaxError {
        self.error_at(self.pos, message, hint)
    }

    /// Names the token at the cursor for messages: "`x`", "end of file".
    fn describe_here(&self) -> String {
        match self.text.get(self.pos..).and_then(|rest| rest.chars().next()) {
            None => "end of file".to_owned(),
            Some(c) if c.is_control() => format!("character U+{:04X}", u32::from(c)),
            Some(c) => format!("`{c}`"),
        }
    }

    /// Skips whitespace and comments. An unterminated block comment is an error.
    fn skip_trivia(&mut self) -> Result<(), SyntaxError> {
        loop {
            match self.bytes.get(self.pos) {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(b'/') => match self.bytes.get(self.pos + 1) {
                    Some(b'/') => {
                        while let Some(&b) = self.bytes.get(self.pos) {
                            if b == b'\n' {
                                break;
                            }
                            self.pos += 1;
                        }
                    }
                    Some(b'*') => {
                        let start = self.pos;
                        match self.text[self.pos + 2..].find("*/") {
                            Some(end) => self.pos += 2 + end + 2,
                            None => {
                                return Err(self.error_at(
                                    start,
                                    "unterminated block comment".to_owned(),
                                    Some("close the comment with `*/`".to_owned()),
                                ));
                            }
                        }
                    }
                    _ => {
                        return Err(self.error_here(
                            "unexpected `/`".to_owned(),
                            Some("comments start with `//` or `/*`".to_owned()),
                        ));
                    }
                },
                _ => return Ok(()),
            }
        }
    }

    /// Recognizes the most common wrong format, YAML, so the message can say so.
    fn detect_yaml(&self) -> Option<SyntaxError> {
        let rest = &self.text[self.pos..];
        let first_line = rest.lines().next().unwrap_or_default();
        let looks_like_yaml = first_line.starts_with("---")
            || first_line.starts_with("- ")
            || first_line.split_once(':').is_some_and(|(key, _)| {
                !key.is_empty()
                    && key.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '))
            });
        (looks_like_yaml && !rest.starts_with(['{', '[', '"'])).then(|| {
            self.error_at(
                self.pos,
                format!("expected a JSON object, found {}", self.describe_here()),
                Some(
                    "this looks like YAML; environment.json must be JSON (`//` comments are allowed)"
                        .to_owned(),
                ),
            )
        })
    }

    fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        let start = self.pos;
        let kind = match self.bytes.get(self.pos) {
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => NodeKind::String(self.string()?),
            Some(b'-' | b'0'..=b'9') => NodeKind::Number(self.number()?),
            Some(b't') => self.keyword("true", NodeKind::Bool(true))?,
            Some(b'f') => self.keyword("false", NodeKind::Bool(false))?,
            Some(b'n') => self.keyword("null", NodeKind::Null)?,
            Some(b'\'') => {
                return Err(self.error_here(
                    "strings must use double quotes".to_owned(),
                    Some("replace the single quotes with `\"`".to_owned()),
                ));
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let word: String =
                    self.text[self.pos..].chars().take_while(char::is_ascii_alphanumeric).take(40).collect();
                return Err(self.error_here(
                    format!("expected a JSON value, found `{word}`"),
                    Some(format!("text values must be strings in double quotes: `\"{word}\"`")),
                ));
            }
            _ => {
                return Err(
                    self.error_here(format!("expected a JSON value, found {}", self.describe_here()), None)
                );
            }
        };
        Ok(Node { span: Span::new(start, self.pos), kind })
    }

    fn enter(&self, depth: usize) -> Result<usize, SyntaxError> {
        if depth >= MAX_DEPTH {
            return Err(self.error_here(
                format!("arrays and objects are nested more than {MAX_DEPTH} levels deep"),
                Some("environment.json needs at most three levels; check for a runaway generator".to_owned()),
            ));
        }
        Ok(depth + 1)
    }

    fn object(&mut self, depth: usize) -> Result<NodeKind, SyntaxError> {
        let depth = self.enter(depth)?;
        self.pos += 1; // `{`
        let mut members = Vec::new();
        self.skip_trivia()?;
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(NodeKind::Object(members));
        }
        loop {
            self.skip_trivia()?;
            let key_start = self.pos;
            let key = match self.bytes.get(self.pos) {
                Some(b'"') => self.string()?,
                Some(b'}') if !members.is_empty() => {
                    return Err(self.error_here(
                        "trailing comma before `}`".to_owned(),
                        Some(
                            "remove the comma after the last member; Cursor does not allow trailing commas"
                                .to_owned(),
                        ),
                    ));
                }
                Some(c) if c.is_ascii_alphabetic() || *c == b'_' || *c == b'\'' => {
                    return Err(self.error_here(
                        "object keys must be strings in double quotes".to_owned(),
                        Some("write the key as `\"name\"`".to_owned()),
                    ));
                }
                _ => {
                    return Err(self
                        .error_here(format!("expected a `\"key\"`, found {}", self.describe_here()), None));
                }
            };
            let key_span = Span::new(key_start, self.pos);
            self.skip_trivia()?;
            if self.bytes.get(self.pos) != Some(&b':') {
                return Err(self.error_here(
                    format!("expected `:` after the key `{key}`, found {}", self.describe_here()),
                    None,
                ));
            }
            self.pos += 1;
            self.skip_trivia()?;
            self.path.push(PathSegment::Key(key));
            let value = self.value(depth)?;
            let Some(PathSegment::Key(key)) = self.path.pop() else { unreachable!("pushed above") };
            members.push(Member { key, key_span, value });
            self.skip_trivia()?;
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(NodeKind::Object(members));
                }
                Some(b'"') => {
                    return Err(self.error_here(
                        "expected `,` or `}` between object members".to_owned(),
                        Some("add a comma after the previous value".to_owned()),
                    ));
                }
                None => {
                    return Err(self.error_here(
                        "unexpected end of file inside an object".to_owned(),
                        Some("close the object with `}`".to_owned()),
                    ));
                }
                _ => {
                    return Err(self
                        .error_here(format!("expected `,` or `}}`, found {}", self.describe_here()), None));
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<NodeKind, SyntaxError> {
        let depth = self.enter(depth)?;
        self.pos += 1; // `[`
        let mut items = Vec::new();
        self.skip_trivia()?;
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(NodeKind::Array(items));
        }
        loop {
            self.skip_trivia()?;
            if self.bytes.get(self.pos) == Some(&b']') && !items.is_empty() {
                return Err(self.error_here(
                    "trailing comma before `]`".to_owned(),
                    Some(
                        "remove the comma after the last item; Cursor does not allow trailing commas"
                            .to_owned(),
                    ),
                ));
            }
            self.path.push(PathSegment::Index(items.len()));
            items.push(self.value(depth)?);
            self.path.pop();
            self.skip_trivia()?;
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(NodeKind::Array(items));
                }
                None => {
                    return Err(self.error_here(
                        "unexpected end of file inside an array".to_owned(),
                        Some("close the array with `]`".to_owned()),
                    ));
                }
                _ => {
                    return Err(self.error_here(
                        format!("expected `,` or `]`, found {}", self.describe_here()),
                        Some("add a comma between array items".to_owned()),
                    ));
                }
            }
        }
    }

    fn keyword(&mut self, word: &'static str, kind: NodeKind) -> Result<NodeKind, SyntaxError> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(kind)
        } else {
            let hint =
                self.text[self.pos..].chars().take_while(char::is_ascii_alphanumeric).collect::<String>();
            Err(self.error_here(
                format!("expected a JSON value, found `{hint}`"),
                Some("text values must be strings in double quotes".to_owned()),
            ))
        }
    }

    fn number(&mut self) -> Result<Number, SyntaxError> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let from = p.pos;
            while p.bytes.get(p.pos).is_some_and(u8::is_ascii_digit) {
                p.pos += 1;
            }
            p.pos - from
        };
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        let int_len = digits(self);
        if int_len == 0 {
            return Err(self.error_here("expected a digit after `-`".to_owned(), None));
        }
        if int_len > 1 && self.bytes[int_start] == b'0' {
            return Err(self.error_at(
                int_start,
                "numbers cannot have leading zeros".to_owned(),
                Some(format!("write `{}`", self.text[int_start..self.pos].trim_start_matches('0'))),
            ));
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return Err(self.error_here("expected a digit after the decimal point".to_owned(), None));
            }
        }
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.error_here("expected a digit in the exponent".to_owned(), None));
            }
        }
        Ok(Number { text: self.text[start..self.pos].to_owned() })
    }

    /// Parses a string literal at the cursor (which is on the opening quote).
    fn string(&mut self) -> Result<String, SyntaxError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(self.error_at(
                    open,
                    "unterminated string".to_owned(),
                    Some("add the closing `\"`".to_owned()),
                ));
            };
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                b'\n' | b'\r' => {
                    return Err(self.error_at(
                        open,
                        "unterminated string: a line break inside a string must be written `\\n`".to_owned(),
                        Some("add the closing `\"` or escape the line break".to_owned()),
                    ));
                }
                0..=0x1f => {
                    return Err(self.error_here(
                        format!("control character U+{b:04X} inside a string"),
                        Some("escape it, for example `\\t` for a tab".to_owned()),
                    ));
                }
                _ => {
                    // Copy the run of ordinary characters in one go; the text is valid UTF-8 and
                    // the run stops only at ASCII bytes, so the slice bounds are char boundaries.
                    let run_end = self.bytes[self.pos..]
                        .iter()
                        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                        .map_or(self.bytes.len(), |n| self.pos + n);
                    out.push_str(&self.text[self.pos..run_end]);
                    self.pos = run_end;
                }
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), SyntaxError> {
        let Some(&b) = self.bytes.get(self.pos) else {
            return Err(self.error_here("unterminated escape sequence".to_owned(), None));
        };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.unicode_escape(out),
            _ => {
                self.pos -= 1;
                return Err(self.error_here(
                    format!("invalid escape `\\{}`", self.describe_here().trim_matches('`')),
                    Some("valid escapes are \\\" \\\\ \\/ \\b \\f \\n \\r \\t and \\uXXXX; write `\\\\` for a backslash".to_owned()),
                ));
            }
        };
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let digits =
            self.text.get(self.pos..self.pos + 4).filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()));
        let Some(digits) = digits else {
            return Err(self.error_here("expected four hex digits after `\\u`".to_owned(), None));
        };
        self.pos += 4;
        u32::from_str_radix(digits, 16)
            .map_err(|_| self.error_here("expected four hex digits after `\\u`".to_owned(), None))
    }

    fn unicode_escape(&mut self, out: &mut String) -> Result<(), SyntaxError> {
        let escape_start = self.pos - 2;
        let high = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if !self.text[self.pos..].starts_with("\\u") {
                return Err(self.error_at(
                    escape_start,
                    "unpaired UTF-16 surrogate in `\\u` escape".to_owned(),
                    None,
                ));
            }
            self.pos += 2;
            let low = self.hex4()?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(self.error_at(
                    escape_start,
                    "invalid UTF-16 surrogate pair in `\\u` escape".to_owned(),
                    None,
                ));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        match char::from_u32(code) {
            Some(c) => {
                out.push(c);
                Ok(())
            }
            None => {
                Err(self.error_at(escape_start, "unpaired UTF-16 surrogate in `\\u` escape".to_owned(), None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> NodeKind {
        parse(text).unwrap().kind
    }

    #[test]
    fn parses_values_with_comments() {
        let text = "// leading\n{ /* a */ \"a\": [1, -2.5e3, true, false, null], \"b\": \"x\\n\\u00e9\\ud83d\\ude00\" }";
        let NodeKind::Object(members) = kind(text) else { panic!("object") };
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].key, "a");
        assert_eq!(&text[members[0].key_span.start..members[0].key_span.end], "\"a\"");
        assert_eq!(members[1].value.kind, NodeKind::String("x\né😀".to_owned()));
    }

    #[test]
    fn integers_are_exact() {
        let NodeKind::Number(n) = kind("3000.0") else { panic!() };
        assert_eq!(n.as_i64(), Some(3000));
        let NodeKind::Number(n) = kind("3e3") else { panic!() };
        assert_eq!(n.as_i64(), Some(3000));
        let NodeKind::Number(n) = kind("1.5") else { panic!() };
        assert_eq!(n.as_i64(), None);
        let NodeKind::Number(n) = kind("1e400") else { panic!() };
        assert_eq!(n.as_i64(), None);
    }

    #[test]
    fn errors_point_at_the_problem() {
        let err = parse("{\"a\": \"open").unwrap_err();
        assert_eq!(err.offset, 6);
        assert!(err.message.contains("unterminated string"));
        let err = parse("{\"a\": 1,}").unwrap_err();
        assert_eq!(err.offset, 8);
        assert!(err.message.contains("trailing comma"));
        let err = parse("").unwrap_err();
        assert!(err.message.contains("empty"));
        let err = parse("install: npm ci\n").unwrap_err();
        assert!(err.hint.unwrap().contains("YAML"));
        let err = parse("{} {}").unwrap_err();
        assert_eq!(err.offset, 3);
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion_overflow() {
        let text = "[".repeat(200_000);
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("nested more than"));
        assert_eq!(err.offset, MAX_DEPTH);
    }

    #[test]
    fn bom_is_skipped() {
        assert!(matches!(kind("\u{feff}{}"), NodeKind::Object(_)));
    }
}
