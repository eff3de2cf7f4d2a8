//! Mutation fuzzing of config loading: no input may panic, hang or produce a diagnostic that
//! points outside the file, and on plain JSON the parser must agree with `serde_json`.
//!
//! The corpus is every fixture config; each case mutates one (byte flips, inserted JSON
//! punctuation and invalid UTF-8, deleted and duplicated ranges, splices of two files) or is
//! random bytes. The run is deterministic for a seed and bounded by a case count and a time
//! budget, both settable: `ENVBUILD_FUZZ_CASES` (default 200000), `ENVBUILD_FUZZ_SECONDS`
//! (default 60), `ENVBUILD_FUZZ_SEED`. It prints how many cases ran.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use envbuild_schema::jsonc;

/// xorshift64*: tiny, deterministic, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { usize::try_from(self.next() % n as u64).unwrap() }
    }
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"//",
    b"/*",
    b"*/",
    b"\n",
    b"0",
    b"-",
    b"1e999",
    b"true",
    b"null",
    b"\"build\"",
    b"\"terminals\"",
    b"\"port\"",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\0",
    b"\xef\xbb\xbf",
    b"65536",
    b"[[[[",
    b"]]]]",
    b"\"dockerfile\": \"../../x\"",
];

fn corpus() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/environments");
    let mut files = Vec::new();
    for dir in ["valid", "invalid"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                files.push(std::fs::read(&path).unwrap());
            }
        }
    }
    assert!(files.len() > 20, "the fixture corpus is missing");
    files
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(20) == 0 {
        let len = rng.below(2048);
        return (0..len).map(|_| u8::try_from(rng.next() & 0xff).unwrap()).collect();
    }
    let mut data = corpus[rng.below(corpus.len())].clone();
    for _ in 0..=rng.below(6) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = at.min(data.len() - 1);
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            2 => {
                let end = (at + rng.below(16)).min(data.len());
                data.drain(at..end);
            }
            3 => {
                let end = (at + rng.below(64)).min(data.len());
                let piece = data[at..end].to_vec();
                data.splice(at..at, piece);
            }
            4 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ => data.truncate(at),
        }
    }
    data
}

/// The invariants every input must satisfy.
/// Returns whether the input was a valid config.
fn check(case: usize, data: &[u8], file: &Path) -> bool {
    let loaded = envbuild_schema::load_bytes(file, data, None);
    let text_len = std::str::from_utf8(data).map_or(usize::MAX, str::len);
    let lines = data.split(|&b| b == b'\n').count();
    for d in &loaded.diagnostics {
        assert!(!d.message.is_empty(), "case {case}: empty message");
        if let Some(p) = d.position {
            assert!(
                p.line >= 1 && p.line <= lines,
                "case {case}: line {} beyond the file ({lines} lines)",
                p.line
            );
            assert!(p.column >= 1, "case {case}: column 0");
        }
    }
    if !loaded.has_errors() {
        assert!(loaded.spec.is_some(), "case {case}: valid without a spec");
    }
    // Differential check against serde_json on comment-free input.
    if text_len != usize::MAX {
        let text = std::str::from_utf8(data).unwrap();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if !text.contains("//") && !text.contains("/*") {
            let ours = jsonc::parse(text);
            let theirs: Result<serde_json::Value, _> = serde_json::from_str(text);
            match (&ours, &theirs) {
                (Ok(node), Ok(value)) => assert_eq!(&node.to_json(), value, "case {case}: values differ"),
                (Err(_), Err(_)) => {}
                (Ok(_), Err(e)) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("out of range") || msg.contains("recursion limit"),
                        "case {case}: we accept what serde_json rejects ({msg}): {text:?}"
                    );
                }
                (Err(e), Ok(_)) => {
                    assert!(
                        e.message.contains("nested more than"),
                        "case {case}: we reject valid JSON ({e}): {text:?}"
                    );
                }
            }
        }
    }
    !loaded.has_errors()
}

#[test]
fn mutated_configs_never_panic_and_agree_with_serde_json() {
    let cases: usize =
        std::env::var("ENVBUILD_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let budget = Duration::from_secs(
        std::env::var("ENVBUILD_FUZZ_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(60),
    );
    let seed: u64 =
        std::env::var("ENVBUILD_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_cafe);
    let corpus = corpus();
    let file = PathBuf::from("fuzz/.cursor/environment.json");
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let mut ran = 0;
    let mut valid = 0;
    while ran < cases && started.elapsed() < budget {
        let data = mutate(&mut rng, &corpus);
        valid += usize::from(check(ran, &data, &file));
        ran += 1;
    }
    eprintln!(
        "config fuzz: {ran} cases ({valid} valid configs) in {:.1?} (seed {seed:#x}), no panic",
        started.elapsed()
    );
    assert!(ran >= cases.min(1000), "only {ran} cases ran within the time budget");
}

#[test]
fn pathological_inputs_are_refused_quickly() {
    let file = PathBuf::from("x.json");
    let deep = "[".repeat(200_000);
    assert!(envbuild_schema::load_bytes(&file, deep.as_bytes(), None).has_errors());
    let deep_objects = "{\"a\":".repeat(100_000);
    assert!(envbuild_schema::load_bytes(&file, deep_objects.as_bytes(), None).has_errors());
    let long_string = format!("{{\"snapshot\": \"{}\"}}", "x".repeat(900_000));
    assert!(!envbuild_schema::load_bytes(&file, long_string.as_bytes(), None).has_errors());
    // Thousands of problems on one long non-ASCII line: positions stay cheap, output is capped.
    let many_keys = (0..20_000).map(|i| format!("\"é{i}\":1,")).collect::<Vec<_>>().concat();
    let loaded =
        envbuild_schema::load_bytes(&file, format!("{{{many_keys}\"snapshot\":\"s\"}}").as_bytes(), None);
    let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), envbuild_schema::diagnostic::MAX_DIAGNOSTICS + 1);
    assert_eq!(errors.last().unwrap().message, "19000 more problems not shown");
    assert_eq!(errors[1].position.unwrap().column, 2 + "\"é0\":1,".chars().count());
}
