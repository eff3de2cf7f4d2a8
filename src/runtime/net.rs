//! An environment's own network: a named network namespace (`ip netns add`) that pasta
//! connects to the outside and publishes the environment's ports through.
//!
//! pasta (Debian's `passt`) needs no bridge, no iptables rules and no daemon: it gives the
//! namespace an `eth0` with outbound TCP/UDP through the host's own sockets (so DNS, HTTP
//! proxies and the host's routes work unchanged), and listens on each published host port,
//! handing connections to the namespace. It cannot join a runc container's namespace by its
//! `/proc/PID/ns/net` on this kind of host (it drops privileges first), so the namespace is
//! made and named before the container, which joins it by path (servers.md has the
//! measurements: 84 ms from `runc run` to the first answer through the host port).
//!
//! Ports are checked from the host without touching the environment: the listening sockets
//! of its namespace are in `/proc/PID/net/tcp` of any process in it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use envbuild_builder::engine::{EngineError, PortMapping};

/// The namespace's path, which runc's spec joins.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Creates the namespace `name`.
pub async fn create_netns(name: &str) -> Result<(), EngineError> {
    run("create a network namespace", "ip", &["netns", "add", name]).await
}

/// Removes the namespace `name`; one that is not there is already removed.
pub async fn delete_netns(name: &str) -> Result<(), EngineError> {
    if !netns_path(name).exists() {
        return Ok(());
    }
    run("remove a network namespace", "ip", &["netns", "delete", name]).await
}

/// The namespaces whose names start with `prefix`.
pub fn list_netns(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Starts pasta for namespace `netns` with `ports` published; returns its process id once it
/// has configured the namespace and gone to the background.
pub async fn start_pasta(netns: &str, ports: &[PortMapping], pid_file: &Path) -> Result<u32, EngineError> {
    let tcp = if ports.is_empty() {
        "none".to_owned()
    } else {
        ports.iter().map(|p| format!("{}:{}", p.host, p.container)).collect::<Vec<_>>().join(",")
    };
    let pid_arg = pid_file.display().to_string();
    let netns_arg = netns_path(netns).display().to_string();
    let args = [
        "--runas",
        "0:0",
        "--config-net",
        "--netns-only",
        "--quiet",
        "--pid",
        &pid_arg,
        "--tcp-ports",
        &tcp,
        "--udp-ports",
        "none",
        "--netns",
        &netns_arg,
    ];
    run("start pasta for the environment's network", "pasta", &args).await?;
    let text = std::fs::read_to_string(pid_file).map_err(|e| EngineError::Runtime {
        operation: "start pasta".into(),
        message: format!("it wrote no pid file `{}`: {e}", pid_file.display()),
    })?;
    text.trim().parse().map_err(|_| EngineError::Runtime {
        operation: "start pasta".into(),
        message: format!("its pid file holds `{}`", text.trim()),
    })
}

/// Ends pasta `pid`, if it is still pasta (a recycled pid is left alone).
pub fn stop_pasta(pid: u32) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() == "pasta"
        && let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap_or(0))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// A TCP port free on the host now (the kernel's choice).
pub fn free_port() -> Result<u16, EngineError> {
    std::net::TcpListener::bind(("0.0.0.0", 0)).and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| {
        EngineError::Runtime { operation: "find a free host port".into(), message: e.to_string() }
    })
}

/// Fails when host port `port` is taken: pasta would start without it (its listener fails in
/// the background), and the environment would seem published where another server answers.
pub fn check_free(port: u16) -> Result<(), EngineError> {
    for address in ["0.0.0.0", "::"] {
        match std::net::TcpListener::bind((address, port)) {
            Ok(_) => {}
            // A host without IPv6.
            Err(e) if address == "::" && e.kind() == std::io::ErrorKind::AddrNotAvailable => {}
            Err(e) => {
                return Err(EngineError::Runtime {
                    operation: format!("publish host port {port}"),
                    message: format!(
                        "it is in use ({e})\nhint: choose another with `-p HOST:PORT`, or leave `-p` out for a free one"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The listening TCP ports in the network namespace of process `pid`.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let table = ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .collect::<Vec<_>>()
        .join("\n");
    envbuild_builder::boot::listening_in(&table)
}

/// The `resolv.conf` for a namespace pasta connects: the host's, whose servers pasta reaches
/// through the host's sockets, less loopback servers, which would be the namespace's own.
pub fn resolv_conf() -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        let loopback = words.next() == Some("nameserver")
            && words.next().is_some_and(|addr| addr.starts_with("127.") || addr == "::1");
        if !loopback {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Runs a tool to its end (its output goes nowhere: pasta's daemon keeps what it inherits).
async fn run(operation: &str, program: &str, args: &[&str]) -> Result<(), EngineError> {
    let mut command =
        tokio::process::Command::new(super::which(program).unwrap_or_else(|| PathBuf::from(program)));
    command.args(args).stdout(Stdio::null());
    super::run(operation, program, command).await.map(drop)
}
