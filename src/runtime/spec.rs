//! The OCI runtime spec (`config.json`) of an environment, built with `oci-spec`.
//!
//! Close to what Docker gives a container, because installs written for Docker must work:
//! Docker's default capabilities (an `apt-get install` needs CHOWN, DAC_OVERRIDE, FOWNER,
//! SETUID...), `no_new_privileges` off (sudo works, as in Docker), the host's nofile limit, the usual pseudo file systems, masked and read-only paths from oci-spec's
//! defaults, and its own hostname. The environment's settings are its process environment;
//! its secrets never are (they reach processes through a tmpfs file, see
//! `envbuild_builder::workspace`), so this file holds nothing secret.

use std::path::Path;

use envbuild_builder::engine::{ContainerSpec, EngineError, Network};
use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxNamespace, LinuxNamespaceType, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, Spec, UserBuilder,
};

/// Docker's default capability set.
const CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The paths of the files an environment's directory holds for its mounts.
#[derive(Debug, Clone)]
pub struct Files<'a> {
    pub rootfs: &'a Path,
    pub resolv_conf: &'a Path,
    pub hosts: &'a Path,
    /// The network namespace to join (a private network).
    pub netns: Option<&'a Path>,
}

fn failed(e: impl std::fmt::Display) -> EngineError {
    EngineError::Runtime { operation: "write the runtime spec".into(), message: e.to_string() }
}

/// The spec of a container made from `spec` in the bundle whose files are `files`.
pub fn build(spec: &ContainerSpec, hostname: &str, files: &Files<'_>) -> Result<Spec, EngineError> {
    let mut out = Spec::default();
    out.set_hostname(Some(hostname.to_owned()));
    let mut root = oci_spec::runtime::Root::default();
    root.set_path(files.rootfs.to_path_buf()).set_readonly(Some(false));
    out.set_root(Some(root));

    let mut process = out.process().clone().unwrap_or_default();
    let mut args = spec.entrypoint.clone().unwrap_or_default();
    args.extend(spec.cmd.iter().cloned());
    process.set_args(Some(args));
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        format!("HOSTNAME={hostname}"),
    ];
    env.extend(spec.env.iter().cloned());
    process.set_env(Some(env));
    process.set_cwd(spec.working_dir.clone().unwrap_or_else(|| "/".to_owned()).into());
    let (uid, gid) = numeric_user(spec.user.as_deref().unwrap_or("0:0"))?;
    process.set_user(UserBuilder::default().uid(uid).gid(gid).build().map_err(failed)?);
    process.set_no_new_privileges(Some(false));
    let caps: oci_spec::runtime::Capabilities = CAPABILITIES.iter().copied().collect();
    process.set_capabilities(Some(
        LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(caps.clone())
            .permitted(caps)
            .build()
            .map_err(failed)?,
    ));
    // As many open files as this process may have (a container cannot raise it further).
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum.unwrap_or(1_048_576);
    process.set_rlimits(Some(vec![
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(nofile)
            .soft(nofile)
            .build()
            .map_err(failed)?,
    ]));
    out.set_process(Some(process));

    let mut mounts: Vec<Mount> = out.mounts().clone().unwrap_or_default();
    for (path, options) in &spec.tmpfs {
        let mut opts = vec!["nosuid".to_owned(), "nodev".to_owned()];
        opts.extend(options.split(',').filter(|o| !o.is_empty()).map(str::to_owned));
        mounts.push(
            MountBuilder::default()
                .destination(path)
                .typ("tmpfs")
                .source("tmpfs")
                .options(opts)
                .build()
                .map_err(failed)?,
        );
    }
    if spec.network != Network::Host {
        for (destination, source) in [("/etc/resolv.conf", files.resolv_conf), ("/etc/hosts", files.hosts)] {
            mounts.push(
                MountBuilder::default()
                    .destination(destination)
                    .typ("bind")
                    .source(source)
                    .options(vec!["rbind".to_owned(), "ro".to_owned()])
                    .build()
                    .map_err(failed)?,
            );
        }
    }
    out.set_mounts(Some(mounts));

    let mut linux = out.linux().clone().unwrap_or_default();
    let namespaces: Vec<LinuxNamespace> = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|mut ns| {
            if ns.typ() != LinuxNamespaceType::Network {
                return Some(ns);
            }
            match (spec.network, files.netns) {
                (Network::Host, _) => None,
                (Network::Private, Some(path)) => {
                    ns.set_path(Some(path.to_path_buf()));
                    Some(ns)
                }
                _ => Some(ns),
            }
        })
        .collect();
    linux.set_namespaces(Some(namespaces));
    out.set_linux(Some(linux));
    Ok(out)
}

/// `uid:gid` (numbers: the engine's form of a resolved user) as numbers.
fn numeric_user(user: &str) -> Result<(u32, u32), EngineError> {
    let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
    match (uid.parse(), gid.parse()) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => Err(EngineError::Runtime {
            operation: "run a process".into(),
            message: format!(
                "the user `{user}` is not numeric `uid:gid` (resolve it from /etc/passwd first)"
            ),
        }),
    }
}

/// `uid:gid` checked numeric, for `runc exec --user`.
pub fn exec_user(user: &str) -> Result<String, EngineError> {
    numeric_user(user).map(|(uid, gid)| format!("{uid}:{gid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_joins_the_named_namespace_and_holds_only_settings() {
        let spec = ContainerSpec {
            name: Some("web".into()),
            cmd: vec!["sh".into(), "-c".into(), "sleep 1".into()],
            user: Some("1000:1000".into()),
            env: vec!["ENVBUILD_CONFIG=/etc/envbuild/environment.json".into()],
            network: Network::Private,
            tmpfs: vec![("/run/envbuild".into(), "mode=0755".into())],
            ..ContainerSpec::default()
        };
        let netns = Path::new("/run/netns/envbuild-x-web");
        let files = Files {
            rootfs: Path::new("/r/envs/web/rootfs"),
            resolv_conf: Path::new("/r/envs/web/resolv.conf"),
            hosts: Path::new("/r/envs/web/hosts"),
            netns: Some(netns),
        };
        let built = build(&spec, "web", &files).unwrap();
        let text = serde_json::to_string(&built).unwrap();
        assert!(text.contains("/run/netns/envbuild-x-web"), "{text}");
        assert!(text.contains("CAP_CHOWN") && text.contains("\"/run/envbuild\""));
        let process = built.process().as_ref().unwrap();
        assert_eq!((process.user().uid(), process.user().gid()), (1000, 1000));
        // Host networking drops the namespace; a name is refused as a user.
        let host = build(&ContainerSpec { network: Network::Host, ..spec.clone() }, "web", &files).unwrap();
        let namespaces = host.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(namespaces.iter().all(|n| n.typ() != LinuxNamespaceType::Network));
        assert!(build(&ContainerSpec { user: Some("node".into()), ..spec }, "web", &files).is_err());
    }
}
