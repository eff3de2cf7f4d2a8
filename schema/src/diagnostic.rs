//! Diagnostics: one problem found in a config, where it is, and how to fix it.
//!
//! Every diagnostic renders as `PATH:LINE:COL: JSON.path: message` (warnings add `warning: `
//! before the message), followed by an indented `hint:` line when the fix is clear. Lines and
//! columns are 1-based; columns count Unicode characters, as editors and `rustc` do. Problems
//! about the file as a whole (missing, a directory, too large) have no position and render as
//! `PATH: message`. The JSON form (`--json`) carries the same fields.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file as the user named it.
    pub file: PathBuf,
    /// Where in the file; `None` for problems with the file itself.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// The JSON path of the offending value, such as `terminals[1].name`; `$` is the root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(position) = self.position {
            write!(f, ":{}:{}", position.line, position.column)?;
        }
        if let Some(path) = &self.json_path {
            write!(f, ": {path}")?;
        }
        f.write_str(": ")?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Maps byte offsets of one text to line and column in `O(log n + BLOCK)` per query, so a
/// minified megabyte on one line with thousands of diagnostics stays fast.
#[derive(Debug)]
pub struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
    /// `chars_before[k]` is the number of characters in `text[..k * BLOCK]`.
    chars_before: Vec<usize>,
}

const BLOCK: usize = 1024;

fn count_chars(bytes: &[u8]) -> usize {
    // A character starts at every byte that is not a UTF-8 continuation byte.
    bytes.iter().filter(|&&b| (b & 0xC0) != 0x80).count()
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        let mut chars_before = vec![0];
        let mut total = 0;
        for block in text.as_bytes().chunks(BLOCK) {
            total += count_chars(block);
            chars_before.push(total);
        }
        Self { text, line_starts, chars_before }
    }

    fn chars_up_to(&self, offset: usize) -> usize {
        let block = offset / BLOCK;
        self.chars_before[block] + count_chars(&self.text.as_bytes()[block * BLOCK..offset])
    }

    /// The position of `offset`, clamped to the text. Offsets inside a multi-byte character
    /// count as that character.
    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let start = self.line_starts[line];
        let column = self.chars_up_to(offset) - self.chars_up_to(start) + 1;
        Position { line: line + 1, column }
    }
}

/// Collects the diagnostics of one file, turning offsets into positions.
#[derive(Debug)]
pub struct Sink<'a> {
    file: &'a Path,
    index: LineIndex<'a>,
    pub(crate) items: Vec<Diagnostic>,
    /// Diagnostics dropped beyond [`MAX_DIAGNOSTICS`].
    truncated: usize,
}

/// Diagnostics kept per file; a generated file can hold millions of problems, and nobody reads
/// past the first thousand.
pub const MAX_DIAGNOSTICS: usize = 1000;

impl<'a> Sink<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Self { file, index: LineIndex::new(text), items: Vec::new(), truncated: 0 }
    }

    pub fn push(
        &mut self,
        severity: Severity,
        offset: usize,
        json_path: &str,
        message: String,
        hint: Option<String>,
    ) {
        if self.items.len() >= MAX_DIAGNOSTICS {
            self.truncated += 1;
            return;
        }
        self.items.push(Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            position: Some(self.index.position(offset)),
            json_path: Some(json_path.to_owned()),
            message,
            hint,
        });
    }

    pub fn error(&mut self, offset: usize, json_path: &str, message: String, hint: Option<String>) {
        self.push(Severity::Error, offset, json_path, message, hint);
    }

    pub fn warning(&mut self, offset: usize, json_path: &str, message: String, hint: Option<String>) {
        self.push(Severity::Warning, offset, json_path, message, hint);
    }

    /// The diagnostics in file order, errors before warnings at the same place.
    pub fn finish(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|d| (d.position, d.severity));
        if self.truncated > 0 {
            self.items.push(Diagnostic {
                severity: Severity::Error,
                file: self.file.to_path_buf(),
                position: None,
                json_path: None,
                message: format!("{} more problems not shown", self.truncated),
                hint: Some("fix the ones above first".into()),
            });
        }
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters() {
        let text = "ab\n\u{e9}x\n\nz";
        let index = LineIndex::new(text);
        assert_eq!(index.position(0), Position { line: 1, column: 1 });
        assert_eq!(index.position(2), Position { line: 1, column: 3 });
        assert_eq!(index.position(3), Position { line: 2, column: 1 });
        // `x` follows a two-byte character: byte 5, column 2.
        assert_eq!(index.position(5), Position { line: 2, column: 2 });
        assert_eq!(index.position(8), Position { line: 4, column: 1 });
        assert_eq!(index.position(999), Position { line: 4, column: 2 });
    }

    #[test]
    fn renders_the_documented_format() {
        let d = Diagnostic {
            severity: Severity::Error,
            file: PathBuf::from(".cursor/environment.json"),
            position: Some(Position { line: 3, column: 5 }),
            json_path: Some("build.dockerfile".to_owned()),
            message: "expected a string, found a number".to_owned(),
            hint: Some("write the path in quotes".to_owned()),
        };
        assert_eq!(
            d.to_string(),
            ".cursor/environment.json:3:5: build.dockerfile: expected a string, found a number\n  hint: write the path in quotes"
        );
    }
}
