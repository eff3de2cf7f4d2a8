//! Who may do what on `envbuild serve`: bearer tokens with a role, kept as hashes.
//!
//! A token is `ebt_` and 64 hex digits (256 random bits). The tokens file holds one line per
//! token, `sha256:<hex of the token's sha256> <role> [label...]`, and `#` comments: never a
//! token itself, so a leaked file grants nothing. Because tokens are random, a plain sha256
//! is enough (there is nothing to brute-force); the comparison of the presented token's hash
//! with every entry is constant-time and does not stop at the first match, so timing tells
//! nothing about which hashes exist.
//!
//! Roles: `read` may GET and HEAD everything; `write` may also PUT: create any object, update
//! the pointers (key records, heads, refs by compare-and-swap, leases, secrets), and delete its
//! own leases, but never replace or delete a chunk or a manifest (a damaged chunk may be
//! replaced by its verified bytes, which repairs it); `admin` may also DELETE anything, which
//! is what `gc` and `rm` through the service need. A request
//! carries its token as `Authorization: Bearer <token>`, or for browsers as the password of
//! HTTP Basic authentication (any user name), so the snapshot browser works without a line of
//! JavaScript: the browser asks for it once.
//!
//! The file is re-read when it changes (checked every two seconds), so `envbuild token new`
//! takes effect on running servers; a file that no longer parses is reported in the log and
//! the previous tokens stay in force.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use envbuild_cache::Digest;
use subtle::ConstantTimeEq;

use super::ServeError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// GET and HEAD: fetch snapshots, resolve keys, browse.
    Read,
    /// Also PUT: push snapshots and key records; never delete published data.
    Write,
    /// Also DELETE: collect garbage, remove snapshots.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    hash: [u8; 32],
    role: Role,
}

/// The tokens a server accepts, reloaded when their file changes.
#[derive(Debug, Clone)]
pub struct Tokens {
    path: PathBuf,
    entries: Arc<RwLock<Vec<Entry>>>,
}

/// A new random token.
pub fn generate() -> String {
    format!("ebt_{}", hex::encode(rand::random::<[u8; 32]>()))
}

fn hash(token: &str) -> [u8; 32] {
    *Digest::of(token.as_bytes()).as_bytes()
}

/// Parses a tokens file; errors name the line.
fn parse(text: &str, path: &Path) -> Result<Vec<Entry>, ServeError> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let bad = || ServeError::BadTokenLine { path: path.to_owned(), line: number + 1 };
        let digest = fields
            .next()
            .and_then(|f| f.strip_prefix("sha256:"))
            .and_then(|hex| Digest::from_hex(hex).ok())
            .ok_or_else(bad)?;
        let role = fields.next().and_then(Role::parse).ok_or_else(bad)?;
        entries.push(Entry { hash: *digest.as_bytes(), role });
    }
    Ok(entries)
}

impl Tokens {
    /// Loads the tokens file; an unreadable or malformed file is an error (a server that
    /// started with no tokens by mistake would refuse everyone, confusingly).
    pub fn load(path: &Path) -> Result<Self, ServeError> {
        let text = std::fs::read_to_string(path)
            .map_err(ServeError::io(format!("cannot read the tokens file `{}`", path.display())))?;
        let entries = parse(&text, path)?;
        if entries.is_empty() {
            tracing::warn!(path = %path.display(), "the tokens file has no tokens: every request will be refused");
        }
        Ok(Self { path: path.to_owned(), entries: Arc::new(RwLock::new(entries)) })
    }

    /// The role of `token`, if it is one of ours.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let presented = hash(token);
        let entries = self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut role: Option<Role> = None;
        // Every entry is compared, match or not.
        for entry in entries.iter() {
            if bool::from(entry.hash.ct_eq(&presented)) {
                role = role.max(Some(entry.role));
            }
        }
        role
    }

    /// Re-reads the file whenever its modification time or size changes.
    pub fn watch(&self) -> tokio::task::JoinHandle<()> {
        let tokens = self.clone();
        tokio::spawn(async move {
            let stamp = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.modified().ok(), m.len()));
            let mut seen = stamp(&tokens.path);
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let now = stamp(&tokens.path);
                if now == seen {
                    continue;
                }
                seen = now;
                let reread = std::fs::read_to_string(&tokens.path)
                    .map_err(ServeError::io(format!(
                        "cannot read the tokens file `{}`",
                        tokens.path.display()
                    )))
                    .and_then(|t| parse(&t, &tokens.path));
                match reread {
                    Ok(entries) => {
                        tracing::info!(tokens = entries.len(), "reloaded the tokens file");
                        *tokens.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner) = entries;
                    }
                    Err(e) => tracing::error!("keeping the previous tokens: {e}"),
                }
            }
        })
    }
}

/// The token an `Authorization` header carries: `Bearer <token>`, or the password of
/// `Basic base64(user:password)`.
pub fn token_from_header(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (_, password) = decoded.split_once(':')?;
        return Some(password.to_owned());
    }
    None
}

/// Adds a new token of `role` to the file at `path` (created with mode 0600) and returns it.
pub fn add(path: &Path, role: Role, label: Option<&str>) -> Result<String, ServeError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(text) = std::fs::read_to_string(path) {
        parse(&text, path)?;
    }
    let token = generate();
    let created = humantime::format_rfc3339_seconds(SystemTime::now());
    let label = label.map(|l| l.split_whitespace().collect::<Vec<_>>().join("-")).unwrap_or_default();
    let line = format!("sha256:{} {} {created} {label}\n", hex::encode(hash(&token)), role.as_str());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(ServeError::io(format!("cannot open the tokens file `{}`", path.display())))?;
    file.write_all(line.trim_end().as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(ServeError::io(format!("cannot write the tokens file `{}`", path.display())))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash_and_role() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let reader = add(&path, Role::Read, Some("orchestrator a")).unwrap();
        let writer = add(&path, Role::Write, None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&reader) && !text.contains(&writer), "{text}");
        assert!(text.contains(" read ") && text.contains("orchestrator-a"));
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions()) & 0o777,
            0o600
        );

        let tokens = Tokens::load(&path).unwrap();
        assert_eq!(tokens.role_of(&reader), Some(Role::Read));
        assert_eq!(tokens.role_of(&writer), Some(Role::Write));
        assert_eq!(tokens.role_of(&generate()), None);
        assert_eq!(tokens.role_of(""), None);

        std::fs::write(&path, "sha256:nothex read\n").unwrap();
        assert!(Tokens::load(&path).unwrap_err().to_string().contains(":1:"));
        assert!(add(&path, Role::Read, None).is_err(), "added to a broken file");
    }

    #[test]
    fn authorization_headers() {
        assert_eq!(token_from_header("Bearer ebt_abc").as_deref(), Some("ebt_abc"));
        assert_eq!(token_from_header("bearer  ebt_abc ").as_deref(), Some("ebt_abc"));
        // "envbuild:ebt_abc" in base64.
        assert_eq!(token_from_header("Basic ZW52YnVpbGQ6ZWJ0X2FiYw==").as_deref(), Some("ebt_abc"));
        assert_eq!(token_from_header("Basic !!!"), None);
        assert_eq!(token_from_header("Digest x"), None);
        assert_eq!(token_from_header("ebt_abc"), None);
    }
}
