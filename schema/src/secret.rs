//! A secret value that cannot be printed by accident.
//!
//! [`SecretString`] prints `****` in `Debug` and `Display`, so no log line, error or panic
//! message can carry it; the value is reachable only through [`SecretString::expose`], a call
//! that is easy to find in review. The memory is zeroed when the value is dropped. It lives in
//! this crate, which every other one depends on, so no layer has to handle a bare `String`.

use std::fmt;

use zeroize::Zeroizing;

#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The plain value. Every caller is a place where the secret leaves envbuild's hands.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let secret = SecretString::new("hunter2-hunter2".into());
        assert_eq!(format!("{secret} {secret:?} {:?}", Some(&secret)), "**** **** Some(****)");
        assert_eq!(secret.expose(), "hunter2-hunter2");
    }
}
