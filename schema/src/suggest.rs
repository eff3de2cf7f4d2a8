//! "Did you mean" suggestions for misspelled names.
//!
//! A candidate is suggested when it matches ignoring case, `_` and `-` (`enableTesting` →
//! `enable_testing`, `ALLOW_ALL` → `allow_all`), or when the edit distance (optimal string
//! alignment: insertions, deletions, substitutions and swaps of neighbours) is at most a third
//! of the longer name, and at least 1. `biuld` → `build`, `dockerFile` → `dockerfile`.

/// The closest candidate to `name`, if any is close enough to be a plausible typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let fold = |s: &str| s.chars().filter(|c| !matches!(c, '_' | '-')).collect::<String>().to_lowercase();
    let lower = name.to_lowercase();
    let folded = fold(name);
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let candidate_lower = candidate.to_lowercase();
        if candidate_lower == lower || fold(candidate) == folded {
            return Some(candidate);
        }
        let distance = edit_distance(&lower, &candidate_lower);
        let limit = (lower.chars().count().max(candidate_lower.chars().count()) / 3).max(1);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal string alignment distance over Unicode characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rolling rows: two back (for transpositions), previous, current.
    let mut two_back = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(two_back[j - 2] + 1);
            }
        }
        std::mem::swap(&mut two_back, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("build", "biuld"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions() {
        let names = ["install", "start", "terminals", "build", "agentCanUpdateSnapshot"];
        assert_eq!(closest("biuld", names), Some("build"));
        assert_eq!(closest("Install", names), Some("install"));
        assert_eq!(closest("terminal", names), Some("terminals"));
        assert_eq!(closest("agentCanUpdateSnapshots", names), Some("agentCanUpdateSnapshot"));
        assert_eq!(closest("xyz", names), None);
    }
}
