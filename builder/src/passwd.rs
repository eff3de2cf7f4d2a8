//! Who `user` is inside an image: `/etc/passwd` and `/etc/group` read from the image, the way
//! `docker run --user` resolves names, so files copied to `/workspace` can be owned by the
//! user before anything runs.

use crate::error::{BuildError, Result};

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u64,
    pub gid: u64,
    /// The home directory, when the passwd file names one.
    pub home: Option<String>,
    /// As written, for messages.
    pub spec: String,
}

impl User {
    pub fn root() -> Self {
        Self { uid: 0, gid: 0, home: Some("/root".into()), spec: "root".into() }
    }

    /// `uid:gid`, as the engine takes it.
    pub fn engine_spec(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }
}

/// `name:x:uid:gid:gecos:home:shell` lines, as (name, uid, gid, home).
fn passwd_entries(passwd: &str) -> Vec<(&str, u64, u64, &str)> {
    passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() >= 6).then_some(())?;
            Some((fields[0], fields[2].parse().ok()?, fields[3].parse().ok()?, fields[5]))
        })
        .collect()
}

fn group_id(group: &str, spec: &str) -> Option<u64> {
    spec.parse().ok().or_else(|| {
        group.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() >= 3 && fields[0] == spec).then(|| fields[2].parse().ok()).flatten()
        })
    })
}

/// Resolves `spec` (`name`, `uid`, `name:group`, `uid:gid`) against the image's files.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<User> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entries = passwd_entries(passwd);
    let found = entries.iter().find(|(name, uid, ..)| *name == user_part || user_part.parse() == Ok(*uid));
    let (uid, primary_gid, home) = match (found, user_part.parse::<u64>()) {
        (Some((_, uid, gid, home)), _) => (*uid, *gid, Some((*home).to_owned())),
        // A numeric uid without an entry is allowed, with group 0, as docker does.
        (None, Ok(uid)) => (uid, 0, None),
        (None, Err(_)) => {
            return Err(BuildError::User(format!(
                "the user `{user_part}` does not exist in the image (no entry in /etc/passwd)\nhint: create it in the Dockerfile (`RUN useradd -m {user_part}`), or set `user` to a numeric uid"
            )));
        }
    };
    let gid = match group_part {
        None => primary_gid,
        Some(g) => group_id(group, g).ok_or_else(|| {
            BuildError::User(format!(
                "the group `{g}` of user `{spec}` does not exist in the image (no entry in /etc/group)"
            ))
        })?,
    };
    Ok(User { uid, gid, home, spec: spec.to_owned() })
}

/// The content of the single file in a tar stream (what the engine returns for one path).
pub fn file_from_tar(tar_bytes: &[u8]) -> Option<String> {
    use std::io::Read;
    let mut archive = tar::Archive::new(tar_bytes);
    let mut entry = archive.entries().ok()?.next()?.ok()?;
    if entry.header().size().ok()? > 4 * 1024 * 1024 {
        return None;
    }
    let mut text = String::new();
    entry.read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000::/home/agent:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nagent:x:1000:\nstaff:x:50:\n";

    #[test]
    fn resolves_like_docker() {
        assert_eq!(resolve("agent", PASSWD, GROUP).unwrap().engine_spec(), "1000:1000");
        assert_eq!(resolve("agent", PASSWD, GROUP).unwrap().home.as_deref(), Some("/home/agent"));
        assert_eq!(resolve("agent:staff", PASSWD, GROUP).unwrap().engine_spec(), "1000:50");
        assert_eq!(resolve("4242", PASSWD, GROUP).unwrap().engine_spec(), "4242:0");
        assert_eq!(resolve("1000:7", PASSWD, GROUP).unwrap().engine_spec(), "1000:7");
        let err = resolve("nobody-here", PASSWD, GROUP).unwrap_err().to_string();
        assert!(err.contains("does not exist") && err.contains("hint:"), "{err}");
    }
}
