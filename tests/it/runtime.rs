//! Environments on runc, as a user meets them: two environments of one app serve the same
//! port side by side, boot waits for a slow server, `exec` and `shell` work and are masked,
//! secrets stay out of every piece of runtime metadata, and `stop`, `rm`, `gc` and a kill -9
//! mid-boot leave nothing behind, checked by listing what runc, the kernel and the runtime
//! directory hold.

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output};
use std::time::Duration;

use super::build::{commit, engine, envbuild, json, repo};
use super::export::tool;

/// A runtime directory of the test's own, with a store, home and the `ports` fixture built.
struct Host {
    work: tempfile::TempDir,
    repo: tempfile::TempDir,
    id: String,
}

impl Host {
    async fn new() -> Option<Self> {
        engine().await?;
        for t in ["runc", "pasta"] {
            tool(t)?;
        }
        let work = tempfile::tempdir().unwrap();
        let repo = repo("ports");
        let host = Host { work, repo, id: String::new() };
        let built =
            json(&host.eb().args(["build", "--json", "--repo"]).arg(host.repo.path()).output().unwrap());
        Some(Host { id: built["id"].as_str().unwrap().to_owned(), ..host })
    }

    fn runtime(&self) -> PathBuf {
        self.work.path().join("runtime")
    }

    fn eb(&self) -> assert_cmd::Command {
        let mut cmd = envbuild(&self.work.path().join("store"));
        cmd.env("XDG_CONFIG_HOME", self.work.path().join("config"))
            .env("XDG_CACHE_HOME", self.work.path().join("cache"))
            .env("ENVBUILD_RUNTIME_DIR", self.runtime())
            .env_remove("ENVBUILD_KMS_KEY_ID");
        cmd
    }

    fn boot(&self, name: &str, extra: &[&str]) -> Output {
        self.eb()
            .args(["boot", &self.id, "--engine", "runc", "--json", "--name", name, "--repo"])
            .arg(self.repo.path())
            .args(extra)
            .output()
            .unwrap()
    }

    /// `ps --json`'s environments on this runtime (tests on the shared Docker engine run
    /// beside these, and `ps` lists both engines).
    fn ps(&self) -> Vec<serde_json::Value> {
        let ps: serde_json::Value = json(&self.eb().args(["ps", "--json"]).output().unwrap());
        ps.as_array().unwrap().iter().filter(|e| e["engine"] == "runc").cloned().collect()
    }

    /// What runc, the kernel and the runtime directory hold for this runtime, one line each.
    fn leftovers(&self) -> Vec<String> {
        let root = self.runtime();
        let mut out = Vec::new();
        let runc = Process::new("runc")
            .arg("--root")
            .arg(root.join("runc"))
            .args(["list", "--quiet"])
            .output()
            .unwrap();
        out.extend(String::from_utf8_lossy(&runc.stdout).lines().map(|c| format!("container {c}")));
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        out.extend(
            mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| Path::new(m).starts_with(&root))
                .map(|m| format!("mount {m}")),
        );
        if let Ok(envs) = std::fs::read_dir(root.join("envs")) {
            out.extend(envs.map(|e| format!("environment {}", e.unwrap().file_name().to_string_lossy())));
        }
        let ps = Process::new("ps").args(["-eo", "args"]).output().unwrap();
        let runtime = root.display().to_string();
        out.extend(
            String::from_utf8_lossy(&ps.stdout)
                .lines()
                .filter(|l| l.starts_with("/usr/bin/pasta") && l.contains(&runtime))
                .map(|l| format!("process {l}")),
        );
        // Network namespaces are named after the runtime directory: the listing of `ps --all`
        // finds them; compare with the kernel's own list.
        let all: serde_json::Value = json(&self.eb().args(["ps", "--all", "--json"]).output().unwrap());
        for netns in all["runtime"]["network_namespaces"].as_array().unwrap() {
            let netns = netns.as_str().unwrap();
            assert!(
                Path::new("/run/netns").join(netns).exists(),
                "ps --all lists {netns}, which is not there"
            );
            out.push(format!("netns {netns}"));
        }
        out
    }

    fn trees(&self) -> Vec<String> {
        match std::fs::read_dir(self.runtime().join("trees")) {
            // Trees, not their lock files.
            Ok(trees) => trees
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with('.'))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// The page at `path` from `port` on the host, by a plain HTTP/1.0 request.
fn http_get(port: u64, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", u16::try_from(port).unwrap())).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn host_port(report: &serde_json::Value) -> u64 {
    report["ports"][0]["host"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_environments_of_one_app_serve_their_port_side_by_side() {
    let Some(host) = Host::new().await else { return };
    let a = json(&host.boot("side-a", &[]));
    // A host port is 1-65535: a usage error, and nothing is made.
    let refused = host.boot("side-b", &["--publish", "0:8080"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    // A host port another server holds: refused before anything is made, never "published"
    // where the other server answers.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let publish = format!("{}:8080", taken.local_addr().unwrap().port());
    let refused = host.boot("side-b", &["--publish", &publish]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("is in use"), "{}", text(&refused));
    drop(taken);
    let b = json(&host.boot("side-b", &[]));
    assert_eq!(a["engine"], "runc");
    assert_eq!(
        (a["ports"][0]["container"].as_u64(), b["ports"][0]["container"].as_u64()),
        (Some(8080), Some(8080))
    );
    assert_ne!(host_port(&a), host_port(&b));
    // Boot returned once the port listened: both answer at once, each from its own host name.
    for (report, name) in [(&a, "side-a"), (&b, "side-b")] {
        let page = http_get(host_port(report), "/");
        assert!(page.contains("served from the workspace"), "{page}");
        assert!(http_get(host_port(report), "/host.txt").contains(name));
        assert!(report["ready_seconds"].as_f64().unwrap() >= report["terminals_seconds"].as_f64().unwrap());
    }
    // Outbound: the environment reaches a server of the host (pasta maps the namespace's
    // gateway to the host's loopback; a registry outside goes out the same way). Busybox's nc
    // waits for more after the server closes: `timeout` ends it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = std::io::Write::write_all(&mut conn, b"reached the host\n");
        }
    });
    let script = format!(
        "gw=$(ip route | sed -n 's/^default via \\([^ ]*\\).*/\\1/p'); timeout 5 nc $gw {port} </dev/null"
    );
    let outbound = host.eb().args(["exec", "side-a", "--", "sh", "-c", &script]).output().unwrap();
    assert!(String::from_utf8_lossy(&outbound.stdout).contains("reached the host"), "{}", text(&outbound));
    let steps: Vec<&str> =
        a["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["tree", "container", "install", "start", "terminals", "ready"]);
    // The second boot found the tree in place.
    assert!(b["steps"][0]["detail"].as_str().unwrap().contains("already"), "{b}");
    let listed = host.ps();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for env in &listed {
        assert_eq!(env["running"], true);
        assert_eq!(env["terminal_states"], serde_json::json!(["running"]), "{env}");
        assert_eq!(env["ports"][0]["container"], 8080);
    }
    for name in ["side-a", "side-b"] {
        assert!(host.eb().args(["rm", name]).output().unwrap().status.success());
    }
    assert!(host.leftovers().is_empty(), "{:?}", host.leftovers());
}

#[tokio::test(flavor = "multi_thread")]
async fn boot_waits_for_a_slow_server_and_says_when_one_never_listens() {
    let Some(host) = Host::new().await else { return };
    std::fs::write(host.repo.path().join("delay"), "2\n").unwrap();
    commit(host.repo.path(), "a slow server");
    let slow = json(&host.boot("slow", &[]));
    let (terminals, ready) =
        (slow["terminals_seconds"].as_f64().unwrap(), slow["ready_seconds"].as_f64().unwrap());
    assert!(ready - terminals >= 1.5, "boot did not wait for the server: {slow}");
    assert!(http_get(host_port(&slow), "/").contains("served from the workspace"));

    // A server slower than the bound: boot fails naming the port, and the environment stays.
    std::fs::write(host.repo.path().join("delay"), "30\n").unwrap();
    commit(host.repo.path(), "a server too slow");
    let late = host.boot("late", &["--ready-timeout", "1s"]);
    assert_eq!(late.status.code(), Some(1), "{}", text(&late));
    assert!(text(&late).contains("port 8080") && text(&late).contains("stays up"), "{}", text(&late));
    // --no-wait returns as soon as the terminals run.
    let quick = json(&host.boot("quick", &["--no-wait"]));
    assert!(quick["ready_seconds"].is_null());
    for name in ["slow", "late", "quick"] {
        assert!(host.eb().args(["rm", name]).output().unwrap().status.success());
    }
    assert!(host.leftovers().is_empty(), "{:?}", host.leftovers());
}

const SECRET: &str = "boot-secret-7d41c0a9e2";

#[tokio::test(flavor = "multi_thread")]
async fn exec_and_shell_work_and_secrets_stay_out_of_the_runtime_metadata() {
    let Some(host) = Host::new().await else { return };
    let set =
        host.eb().args(["secrets", "set", "BOOT_TOKEN", "--scope", "workspace"]).write_stdin(SECRET).output();
    assert!(set.unwrap().status.success());
    let booted = host.boot("work", &[]);
    assert!(booted.status.success(), "{}", text(&booted));

    // exec: the environment's user, in /workspace, with its secrets (masked on the way out),
    // stdin passed, the exit code its own.
    let out = host
        .eb()
        .args([
            "exec",
            "work",
            "--",
            "sh",
            "-c",
            "id -u; pwd; cat installed.txt; echo token=$BOOT_TOKEN; cat; exit 3",
        ])
        .write_stdin("from stdin\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said, "1000\n/workspace\ninstalled\ntoken=***\nfrom stdin\n");
    // shell, fed commands on stdin (no terminal here).
    // /workspace is the repository with its .git.
    let head = host.eb().args(["exec", "work", "--", "cat", ".git/HEAD"]).output().unwrap();
    assert!(String::from_utf8_lossy(&head.stdout).starts_with("ref: refs/heads/"), "{}", text(&head));
    let shell = host.eb().args(["shell", "work"]).write_stdin("echo in $0 at $(pwd)\n").output().unwrap();
    assert!(shell.status.success(), "{}", text(&shell));
    assert!(String::from_utf8_lossy(&shell.stdout).contains("at /workspace"), "{}", text(&shell));
    let missing = host.eb().args(["exec", "nowhere", "--", "true"]).output().unwrap();
    assert!(text(&missing).contains("no environment named `nowhere`"), "{}", text(&missing));

    // The value reached the processes, and no runtime metadata holds it: the runtime spec,
    // the environment's record, runc's state, the environment of runc's init, ps and inspect.
    let mut dumps: Vec<(String, Vec<u8>)> = Vec::new();
    for file in super::walk(&host.runtime().join("envs")) {
        if !file.starts_with(host.runtime().join("envs/work/rootfs")) {
            dumps.push((file.display().to_string(), std::fs::read(&file).unwrap_or_default()));
        }
    }
    for file in super::walk(&host.runtime().join("runc")) {
        dumps.push((file.display().to_string(), std::fs::read(&file).unwrap_or_default()));
    }
    let state =
        Process::new("runc").arg("--root").arg(host.runtime().join("runc")).args(["state", "work"]).output();
    let state = state.unwrap().stdout;
    let pid: serde_json::Value = serde_json::from_slice(&state).unwrap();
    let pid = pid["pid"].as_u64().unwrap();
    dumps.push(("runc state".into(), state));
    dumps.push(("init's environment".into(), std::fs::read(format!("/proc/{pid}/environ")).unwrap()));
    dumps.push(("boot output".into(), text(&booted).into_bytes()));
    for args in [vec!["ps", "--json"], vec!["ps", "--all", "--json"], vec!["logs", "work"]] {
        dumps.push((format!("envbuild {}", args.join(" ")), host.eb().args(&args).output().unwrap().stdout));
    }
    let config = std::fs::read_to_string(host.runtime().join("envs/work/config.json")).unwrap();
    assert!(config.contains("ENVBUILD_CONFIG"), "the spec is where settings are: {config}");
    for (sink, bytes) in &dumps {
        assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "the secret is in {sink}");
    }
    assert!(host.eb().args(["rm", "work"]).output().unwrap().status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_keeps_the_logs_until_rm_and_rm_and_gc_leave_nothing() {
    let Some(host) = Host::new().await else { return };
    assert!(host.boot("life", &[]).status.success());
    assert!(host.eb().args(["stop", "life"]).output().unwrap().status.success());
    let ps = host.ps();
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0]["running"], false);
    assert_eq!(ps[0]["terminal_states"], serde_json::json!(["stopped"]));
    // Stopped: no process, mount, network or pasta, only the directory with what it wrote.
    assert_eq!(host.leftovers(), vec!["environment life".to_owned()]);
    let logs = host.eb().args(["logs", "life", "web"]).output().unwrap();
    assert!(String::from_utf8_lossy(&logs.stdout).contains("serving"), "{}", text(&logs));
    let exec = host.eb().args(["exec", "life", "--", "true"]).output().unwrap();
    assert!(text(&exec).contains("is not running"), "{}", text(&exec));
    assert!(host.eb().args(["rm", "life"]).output().unwrap().status.success());
    assert!(host.leftovers().is_empty(), "{:?}", host.leftovers());

    // The tree stays for the next boot until the snapshot goes (or the bound evicts it).
    let hex = host.id.trim_start_matches("sha256:").to_owned();
    assert_eq!(host.trees(), vec![hex.clone()]);
    assert!(host.eb().args(["rm", &host.id]).output().unwrap().status.success());
    assert!(host.trees().is_empty(), "rm of the snapshot left its tree");
    let lock = host.runtime().join(format!("trees/.lock-{hex}"));
    assert!(!lock.exists(), "rm of the snapshot left its tree's lock file");
    let objects = super::walk(&host.runtime().join("objects"));
    assert!(objects.is_empty(), "objects no tree links were left: {objects:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_boot_killed_mid_way_leaves_nothing_gc_does_not_remove() {
    let Some(host) = Host::new().await else { return };
    // An install that takes its time, so the kill lands while the container runs.
    let config = host.repo.path().join(".cursor/environment.json");
    let text_of = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text_of.replace("\"install\": \"", "\"install\": \"sleep 30; ")).unwrap();
    commit(host.repo.path(), "a slow install");
    let mut boot = Process::new(assert_cmd::cargo::cargo_bin("envbuild"));
    boot.env("ENVBUILD_STORE", host.work.path().join("store"))
        .env("XDG_CONFIG_HOME", host.work.path().join("config"))
        .env("XDG_CACHE_HOME", host.work.path().join("cache"))
        .env("ENVBUILD_RUNTIME_DIR", host.runtime())
        .args(["boot", &host.id, "--engine", "runc", "--name", "killed", "--repo"])
        .arg(host.repo.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = boot.spawn().unwrap();
    // Wait until install runs: the container exists and has its network.
    let mut seen = Vec::new();
    for _ in 0..200 {
        seen = host.leftovers();
        if seen.iter().any(|l| l.starts_with("container")) && seen.iter().any(|l| l.starts_with("netns")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.iter().any(|l| l.starts_with("mount")), "the boot never got going: {seen:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!host.leftovers().is_empty(), "a kill -9 leaves the environment's parts");
    let all: serde_json::Value = json(&host.eb().args(["ps", "--all", "--json"]).output().unwrap());
    assert_eq!(all["runtime"]["environments"][0]["state"], "interrupted", "{all}");
    assert_eq!(all["runtime"]["containers"], serde_json::json!(["killed"]), "{all}");
    let gc = host.eb().args(["gc", "--json"]).output().unwrap();
    let gc: serde_json::Value = json(&gc);
    assert_eq!(gc["runtime"]["environments"], serde_json::json!(["killed"]), "{gc}");
    assert!(host.leftovers().is_empty(), "{:?}", host.leftovers());
}
