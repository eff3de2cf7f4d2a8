//! The leak scan: the cache's ingest hands every byte of a snapshot about to be published to a
//! [`LeakScanner`]; this one looks for the values of the redacted secrets in scope and their
//! encodings (the same [`Patterns`] the redactor uses), so a value that install wrote into a
//! file stops the publication, named by secret and file.

use envbuild_cache::ingest::LeakScanner;

use crate::redact::Patterns;

/// Finds the values of a set of secrets in a snapshot's stream.
#[derive(Debug)]
pub struct SecretScanner(Patterns);

impl SecretScanner {
    /// A scanner for `patterns` (all but the short lines of multi-line values, which would
    /// match in any binary), or `None` when there is nothing to look for.
    pub fn new(patterns: &Patterns) -> crate::error::Result<Option<Self>> {
        let patterns = patterns.for_scanning()?;
        Ok((!patterns.is_empty()).then_some(Self(patterns)))
    }
}

impl LeakScanner for SecretScanner {
    fn longest(&self) -> usize {
        self.0.longest()
    }

    fn find(&self, haystack: &[u8]) -> Vec<(usize, String)> {
        self.0.find(haystack).into_iter().map(|(start, _, name)| (start, name.to_owned())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_and_encodings_by_name() {
        let patterns = Patterns::new([("NPM_TOKEN", b"npm_abcdefghijklmnop".as_slice())]).unwrap();
        let scanner = SecretScanner::new(&patterns).unwrap().unwrap();
        let found = scanner.find(b"//registry/:_authToken=npm_abcdefghijklmnop\n");
        assert_eq!(found, vec![(23, "NPM_TOKEN".to_owned())]);
        assert!(scanner.find(b"nothing here").is_empty());
        assert!(SecretScanner::new(&Patterns::none()).unwrap().is_none());
        // The short line of a multi-line value is masked in output, not searched for in files.
        let patterns = Patterns::new([("CREDS", b"user=someone\nk9".as_slice())]).unwrap();
        assert_eq!(patterns.redact_str("k9"), "***");
        let scanner = SecretScanner::new(&patterns).unwrap().unwrap();
        assert!(scanner.find(b"binary k9 bytes").is_empty());
        assert_eq!(scanner.find(b"user=someone\nk9").len(), 1);
    }
}
