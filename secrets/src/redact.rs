//! Keeping secret values out of everything envbuild prints, logs or stores.
//!
//! [`Patterns`] expands each redacted value into the forms it commonly takes in output: the
//! raw bytes (with `\r\n` line endings too, and each line of a multi-line value on its own,
//! however short: a line printed alone is part of the secret all the same; only lines with no
//! letter or digit, which carry none of it, are left out),
//! hex in both cases, URL encoding (`%XX` in both cases, `+` for spaces), and base64 (standard
//! and URL-safe) at each of the three alignments the value can have inside a longer encoded
//! string: the characters that depend only on the value's own bits, so a match does not depend
//! on what is encoded around it. Every pattern is at least [`MIN_SECRET_LEN`] bytes long
//! before encoding; shorter values would mask ordinary words.
//!
//! [`Redactor`] replaces them in a stream with `***`. Of each write it holds back only the
//! tail that could still become a match (a suffix that is the beginning of some pattern, at
//! most `longest - 1` bytes), so a value split across reads (or across lines) is still found,
//! while ordinary output is emitted at once: `logs -f` shows a line as soon as it is written,
//! not when the next one arrives. [`Patterns::find`] reports matches by offset instead of
//! replacing them, for the leak scan of snapshots.

use std::sync::RwLock;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;

use crate::error::{Result, SecretError};

/// Shortest value that may be marked redacted.
pub const MIN_SECRET_LEN: usize = 8;
/// What a redacted value becomes.
pub const MASK: &[u8] = b"***";

/// The byte patterns of a set of named secret values.
#[derive(Debug, Clone)]
pub struct Patterns {
    /// Pattern bytes and the name of the secret each came from.
    forms: Vec<(Vec<u8>, String)>,
    automaton: Option<AhoCorasick>,
    longest: usize,
}

fn push(out: &mut Vec<Vec<u8>>, pattern: Vec<u8>) {
    if pattern.len() >= MIN_SECRET_LEN && !out.contains(&pattern) {
        out.push(pattern);
    }
}

fn url_encode(value: &[u8], upper: bool, plus_for_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else if b == b' ' && plus_for_space {
            out.push(b'+');
        } else if upper {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

/// The base64 characters of `value` that do not depend on neighbouring bytes, when `value`
/// starts `shift` bytes into a 3-byte group.
fn base64_core(value: &[u8], shift: usize, engine: &base64::engine::GeneralPurpose) -> Vec<u8> {
    let mut padded = vec![0u8; shift];
    padded.extend_from_slice(value);
    let encoded = engine.encode(&padded).into_bytes();
    // Characters covering bits of the prefix: 0 for no prefix, 2 for one byte, 3 for two.
    let skip = [0, 2, 3][shift];
    // Characters wholly inside the value: its last full 6-bit groups only.
    let end_bits = (shift + value.len()) * 8;
    let keep_end = end_bits / 6;
    if keep_end <= skip {
        return Vec::new();
    }
    encoded[skip..keep_end.min(encoded.len())].to_vec()
}

/// Every form `value` is looked for in.
pub fn encodings(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    push(&mut out, value.to_vec());
    if value.contains(&b'\n') {
        let crlf: Vec<u8> =
            value.iter().flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] }).collect();
        push(&mut out, crlf);
        for line in value.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().any(u8::is_ascii_alphanumeric) && !out.iter().any(|p| p == line) {
                out.push(line.to_vec());
            }
        }
    }
    push(&mut out, hex::encode(value).into_bytes());
    push(&mut out, hex::encode_upper(value).into_bytes());
    for (upper, plus) in [(true, false), (false, false), (true, true)] {
        let encoded = url_encode(value, upper, plus);
        if encoded != value {
            push(&mut out, encoded);
        }
    }
    for engine in [&base64::engine::general_purpose::STANDARD, &base64::engine::general_purpose::URL_SAFE] {
        for shift in 0..3 {
            push(&mut out, base64_core(value, shift, engine));
        }
    }
    out
}

impl Patterns {
    /// No patterns: output passes unchanged.
    pub fn none() -> Self {
        Self { forms: Vec::new(), automaton: None, longest: 0 }
    }

    /// Patterns for `secrets` (name, value). Fails closed: a value too short to be masked
    /// without masking ordinary words, or a matcher that cannot be built, is an error, never a
    /// value left unmasked.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<Self> {
        let mut forms: Vec<(Vec<u8>, String)> = Vec::new();
        for (name, value) in secrets {
            if value.len() < MIN_SECRET_LEN {
                return Err(SecretError::TooShortToRedact { name: name.to_owned(), len: value.len() });
            }
            for pattern in encodings(value) {
                if !forms.iter().any(|(p, _)| *p == pattern) {
                    forms.push((pattern, name.to_owned()));
                }
            }
        }
        Self::compile(forms)
    }

    fn compile(forms: Vec<(Vec<u8>, String)>) -> Result<Self> {
        let longest = forms.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
        let automaton = if forms.is_empty() {
            None
        } else {
            let built = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(forms.iter().map(|(p, _)| p))
                .map_err(|e| SecretError::Redaction { reason: e.to_string() })?;
            Some(built)
        };
        Ok(Self { forms, automaton, longest })
    }

    /// These patterns without the short ones (lines of a multi-line value shorter than
    /// [`MIN_SECRET_LEN`]): for the leak scan of a snapshot, where a two-letter line would
    /// match in any binary. Masking output keeps them.
    pub fn for_scanning(&self) -> Result<Self> {
        Self::compile(self.forms.iter().filter(|(p, _)| p.len() >= MIN_SECRET_LEN).cloned().collect())
    }

    /// These patterns and `other`'s.
    pub fn merged(&self, other: &Patterns) -> Result<Self> {
        let mut forms = self.forms.clone();
        for form in &other.forms {
            if !forms.iter().any(|(p, _)| *p == form.0) {
                forms.push(form.clone());
            }
        }
        Self::compile(forms)
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// The longest pattern, in bytes.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// Where the shortest suffix of `tail` that is the beginning of some pattern starts
    /// (`tail.len()` if none is): the bytes from there on may still become a match.
    fn pending_from(&self, tail: &[u8]) -> usize {
        (0..tail.len())
            .find(|&at| self.forms.iter().any(|(pattern, _)| pattern.starts_with(&tail[at..])))
            .unwrap_or(tail.len())
    }

    /// Non-overlapping matches in `haystack`: (start, end, secret name).
    pub fn find<'p>(&'p self, haystack: &[u8]) -> Vec<(usize, usize, &'p str)> {
        let Some(automaton) = &self.automaton else { return Vec::new() };
        automaton
            .find_iter(haystack)
            .map(|m| (m.start(), m.end(), self.forms[m.pattern().as_usize()].1.as_str()))
            .collect()
    }

    /// `text` with every match masked, at once (for whole strings such as error messages).
    pub fn redact_str(&self, text: &str) -> String {
        let mut redactor = Redactor::new(self.clone());
        let mut out = redactor.push(text.as_bytes());
        out.extend(redactor.finish());
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A streaming redactor: feed it output as it arrives, print what it returns.
#[derive(Debug, Clone)]
pub struct Redactor {
    patterns: Patterns,
    held: Vec<u8>,
}

impl Redactor {
    pub fn new(patterns: Patterns) -> Self {
        Self { patterns, held: Vec::new() }
    }

    /// The redacted bytes that are safe to emit after `chunk`.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.patterns.is_empty() {
            return chunk.to_vec();
        }
        self.held.extend_from_slice(chunk);
        // A match not yet complete starts within the last `longest - 1` bytes, and there only
        // where the rest of the buffer begins some pattern; everything before is decided now
        // (a match starting earlier is complete, and the search sees it).
        let keep = self.patterns.longest().saturating_sub(1);
        let window = self.held.len().saturating_sub(keep);
        let mut decided = window + self.patterns.pending_from(&self.held[window..]);
        let mut out = Vec::with_capacity(self.held.len());
        let mut last = 0;
        for (start, end, _) in self.patterns.find(&self.held) {
            if start >= decided {
                break;
            }
            out.extend_from_slice(&self.held[last..start]);
            out.extend_from_slice(MASK);
            last = end;
            decided = decided.max(end);
        }
        out.extend_from_slice(&self.held[last..decided]);
        self.held.drain(..decided);
        out
    }

    /// The rest, at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::with_capacity(held.len());
        let mut last = 0;
        for (start, end, _) in self.patterns.find(&held) {
            out.extend_from_slice(&held[last..start]);
            out.extend_from_slice(MASK);
            last = end;
        }
        out.extend_from_slice(&held[last..]);
        out
    }
}

/// The values to mask in everything this process prints or logs, whoever prints it: the
/// workflows register the patterns of every secret they open, and the printers of the binary
/// (stdout, stderr, the tracing writer) mask with what is registered. Registration only ever
/// adds: a value once masked stays masked for the life of the process.
static GLOBAL: RwLock<Option<Patterns>> = RwLock::new(None);

/// Adds `patterns` to the process-wide set.
pub fn register(patterns: &Patterns) -> Result<()> {
    if patterns.is_empty() {
        return Ok(());
    }
    let mut slot = GLOBAL.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    let merged = match slot.as_ref() {
        Some(current) => current.merged(patterns)?,
        None => patterns.clone(),
    };
    *slot = Some(merged);
    Ok(())
}

/// The process-wide set (empty when nothing was registered).
pub fn registered() -> Patterns {
    GLOBAL.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone().unwrap_or_else(Patterns::none)
}

/// `text` with every registered value masked.
pub fn mask(text: &str) -> String {
    let patterns = registered();
    if patterns.is_empty() { text.to_owned() } else { patterns.redact_str(text) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-Value/with+chars";

    fn redact_in_pieces(text: &[u8], piece: usize) -> String {
        let mut redactor = Redactor::new(Patterns::new([("TOKEN", SECRET.as_bytes())]).unwrap());
        let mut out = Vec::new();
        for chunk in text.chunks(piece.max(1)) {
            out.extend(redactor.push(chunk));
        }
        out.extend(redactor.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn raw_and_encoded_values_are_masked_however_split() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
        let cases = [
            format!("token={SECRET}\n"),
            format!("hex {} end", hex::encode(SECRET)),
            format!("HEX {} end", hex::encode_upper(SECRET)),
            format!("url {} end", String::from_utf8(url_encode(SECRET.as_bytes(), true, false)).unwrap()),
            format!("b64 {b64} end"),
        ];
        for case in &cases {
            for piece in [1, 2, 3, 5, 7, 64, 4096] {
                let out = redact_in_pieces(case.as_bytes(), piece);
                assert!(out.contains("***"), "{case:?} in pieces of {piece}: {out:?}");
                assert!(!out.contains(SECRET), "{out:?}");
                assert!(!out.contains(&b64[..20]), "{out:?}");
            }
        }
    }

    #[test]
    fn base64_is_found_at_every_alignment() {
        for prefix in ["", "a", "ab", "abc", "{\"auth\":\""] {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{prefix}{SECRET}"));
            let out = redact_in_pieces(encoded.as_bytes(), 3);
            assert!(out.contains("***"), "prefix {prefix:?}: {encoded} -> {out}");
        }
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("xy{SECRET}"));
        assert!(redact_in_pieces(url_safe.as_bytes(), 2).contains("***"));
    }

    #[test]
    fn multi_line_values_and_their_lines() {
        let pem = "-----BEGIN KEY-----\nMIIEabcdefgh1234\nMIIEzyxwvuts9876\n-----END KEY-----";
        let patterns = Patterns::new([("KEY", pem.as_bytes())]).unwrap();
        assert!(!patterns.redact_str(&format!("dump:\n{pem}\n")).contains("MIIE"));
        assert!(!patterns.redact_str(&pem.replace('\n', "\r\n")).contains("MIIE"));
        assert_eq!(patterns.redact_str("only MIIEzyxwvuts9876 leaked"), "only *** leaked");
        // A short line is masked too; a line of punctuation carries nothing and is not.
        let short = "user=ab\nk9\n}\n";
        let patterns = Patterns::new([("CREDS", short.as_bytes())]).unwrap();
        assert_eq!(patterns.redact_str("the code is k9 now }"), "the code is *** now }");
    }

    #[test]
    fn only_a_possible_beginning_of_a_value_is_held_back() {
        let mut redactor = Redactor::new(Patterns::new([("TOKEN", SECRET.as_bytes())]).unwrap());
        // Nothing in this line can begin a pattern: all of it comes out at once.
        assert_eq!(redactor.push(b"client sees ***\n"), b"client sees ***\n");
        // The tail `s3cr` may be the start of the value: it waits for the next write.
        assert_eq!(redactor.push(b"key: s3cr"), b"key: ");
        assert_eq!(redactor.push(b"3t-Value/with+chars!\n"), b"***!\n");
        assert_eq!(redactor.push(b"ends with s3"), b"ends with ");
        assert_eq!(redactor.finish(), b"s3");
    }

    #[test]
    fn ordinary_output_is_untouched_and_short_values_ignored() {
        let text = "compiling 42 crates\nok\n".repeat(50);
        assert_eq!(redact_in_pieces(text.as_bytes(), 7), text);
    }

    #[test]
    fn fails_closed_on_a_value_it_cannot_mask() {
        // A redacted value too short to mask is an error naming it, never silently unmasked.
        let err = Patterns::new([("TOKEN", SECRET.as_bytes()), ("PIN", b"1234".as_slice())]).unwrap_err();
        assert!(matches!(&err, SecretError::TooShortToRedact { name, .. } if name == "PIN"), "{err}");
        assert!(!err.to_string().contains("1234"), "{err}");
    }
}
