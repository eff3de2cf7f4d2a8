//! The command line: every command, flag and help text. Doc comments here are the `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use envbuild::env;

/// envbuild: build development environments once, boot them in seconds.
///
/// envbuild reads a repository's `.cursor/environment.json` (Cursor's format), builds the system
/// layer from its Dockerfile, runs its `install` command with the repository at `/workspace`,
/// and stores the resulting root filesystem as an immutable, deduplicated snapshot named by its
/// hash. A cache key computed from every build input maps to the snapshot, so an unchanged
/// repository never rebuilds.
///
/// Start with `envbuild init` in a repository, check the file with `envbuild validate`.
#[derive(Debug, Parser)]
#[command(name = "envbuild", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output on stderr (-v: debug, -vv: trace). `RUST_LOG` overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The snapshot store: a directory, `file://PATH`, `s3://BUCKET/PREFIX` or `http(s)://HOST:PORT` (`envbuild serve`, token in `ENVBUILD_TOKEN`). Default:
    /// `~/.cache/envbuild`. S3 settings come from the AWS environment (`AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, credentials).
    #[arg(long, global = true, env = env::STORE, value_name = "LOCATION")]
    pub store: Option<String>,
    /// Use an S3 server that ignores `If-None-Match` (racing writers could overwrite each other).
    #[arg(long, global = true, env = env::ALLOW_UNCONDITIONAL)]
    pub allow_unconditional_writes: bool,
    /// Chunks transferred, compressed or checked at once. Default: twice the number of cores.
    #[arg(short = 'j', long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: Option<u16>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check an environment.json and report every problem at once.
    ///
    /// Each problem is printed as `PATH:LINE:COL: JSON.path: message`, with a `hint:` line when
    /// the fix is clear. Besides the format itself, it checks that `build` or `snapshot` is set,
    /// that the Dockerfile exists and, like the build context, stays inside the repository,
    /// that terminal names are unique, and that ports are in range and not repeated.
    ///
    /// Exit status: 0 when valid (warnings allowed), 1 when invalid, 2 on a usage error.
    #[command(
        after_help = "Examples:\n  envbuild validate\n  envbuild validate path/to/repo/.cursor/environment.json --json"
    )]
    Validate(ValidateArgs),
    /// Print the JSON Schema of environment.json, for editors.
    ///
    /// Save it and point your editor at it, or reference it from the file itself:
    /// `envbuild schema > .cursor/environment.schema.json` and `"$schema": "./environment.schema.json"`.
    Schema,
    /// Store a root filesystem tar as a snapshot; prints its id as the last line of stdout.
    ///
    /// The tar (a file, or `-` for stdin, such as `docker export CONTAINER | envbuild import -`)
    /// is cut into content-defined chunks; chunks the store already has are not stored again.
    /// Input not in canonical order (`tar --sort=name` order) is put in that order first. The id
    /// is the sha256 of the snapshot's manifest, so importing the same stream twice gives the
    /// same id. Progress and statistics go to stderr.
    #[command(
        after_help = "Examples:\n  envbuild import rootfs.tar\n  docker export my-container | envbuild import -"
    )]
    Import(ImportArgs),
    /// Restore a snapshot: a directory (`--to`), the tar stream (`--tar`), a Docker image, an OCI layout or an ext4 disk image.
    ///
    /// Every chunk is re-hashed before a byte of it is written. `--to DIR` extracts into a
    /// temporary sibling of DIR and renames it into place only when everything is written, so a
    /// failure leaves nothing at DIR; DIR must not exist or be empty. Extraction never writes
    /// outside DIR and never follows a symlink. Owners and device nodes are restored when
    /// running as root. `--tar` writes the exact bytes that were imported (when the input was in
    /// canonical order).
    #[command(
        after_help = "Examples:\n  envbuild fetch sha256:3f2a... --to ./rootfs\n  envbuild fetch 3f2a1b --tar - | tar tv"
    )]
    Fetch(FetchArgs),
    /// List the snapshots in the store, newest first.
    Ls(LsArgs),
    /// Show a snapshot's manifest: sizes, chunks, entries, image config, build inputs.
    Inspect(InspectArgs),
    /// Show the files added, removed and changed between two snapshots.
    Diff(DiffArgs),
    /// Check that snapshots are whole; exit 1 naming any damage.
    ///
    /// Always checks each manifest and that every chunk it lists exists with the recorded
    /// size. `--read-data` also downloads, decompresses and re-hashes every chunk. Without ids,
    /// checks every snapshot, key record and ref.
    Verify(VerifyArgs),
    /// Remove chunks no snapshot references, older than the grace period.
    ///
    /// Snapshots are never removed (that is `rm` and `prune`). gc does not run while another
    /// process writes to the store (it says which), and never removes anything younger than
    /// `--grace`, so an import in progress elsewhere is never cut short. It also removes what
    /// interrupted fetches left on this host, and package-cache volumes past their bounds.
    Gc(GcArgs),
    /// Remove environments by name, or snapshots: their manifests and every key record and head
    /// naming them.
    ///
    /// A name of a booted environment (see `envbuild ps`) removes it and all it made (mount,
    /// network, what it wrote). A snapshot a ref names is refused unless `--force` (which
    /// removes the ref too). The chunks only they used go at the next `gc`; this host's engine
    /// images and unused runc trees of them go now.
    #[command(after_help = "Examples:
  envbuild rm sha256:3f2a...
  envbuild rm 3f2a9c 77b1e0 --force")]
    Rm(RmArgs),
    /// Keep what retention rules say, per repository, and remove the rest; then collect.
    ///
    /// Snapshots are grouped by the repository their key records name (imports form one more
    /// group). In each group the newest `--keep-last` stay, and those made within
    /// `--keep-within`; a snapshot a ref names stays unless `--include-refs`, as does the
    /// checkpoint each repository's next build starts from (its head). The rest are
    /// removed as `rm` would, `gc` collects what only they used, and this host's engine images
    /// of them and stopped install containers go. `--dry-run` lists what would go and the
    /// bytes it would free.
    #[command(after_help = "Examples:
  envbuild prune --keep-last 3 --dry-run
  envbuild prune --keep-last 5 --keep-within 14days")]
    Prune(PruneArgs),
    /// Build the environment of a repository, or find it already built.
    ///
    /// Reads `.cursor/environment.json`, computes the system key (Dockerfile, build context,
    /// base image ids, user) and the env key (system key, install command, the files git
    /// tracks, install's environment). If the env key is in the store, prints its snapshot id
    /// and stops: no build, no container. Otherwise builds the system image from the
    /// Dockerfile (reused when only the env key changed), runs `install` with `sh -c` as
    /// `user` with the repository at /workspace, streams the container's file system into the
    /// store, and records the key. The snapshot id is the last line of stdout.
    #[command(
        after_help = "Examples:\n  envbuild build\n  envbuild build --repo path/to/repo --check-idempotent --json\n  ENVBUILD_STORE=s3://bucket/envbuild envbuild build"
    )]
    Build(BuildArgs),
    /// Print both cache keys and every input with its hash, without building.
    Key(KeyArgs),
    /// Name the inputs that differ between two builds, or a build and the repository now.
    ///
    /// Each differing input is printed with its key (`system` or `env`), before and after; the
    /// summary says whether the system image is shared and how the second build was made
    /// (incremental from which snapshot, or clean). With one build, compares it with the
    /// repository as it is now: what a build would have to do.
    #[command(
        after_help = "Examples:\n  envbuild explain sha256:3f2a... sha256:9b1c...\n  envbuild explain 3f2a1b --repo ."
    )]
    Explain(ExplainArgs),
    /// Boot a snapshot into a running environment: install, start, the terminals, then wait
    /// for its ports.
    ///
    /// On runc (the default where it runs): the snapshot is materialized once per host as a
    /// read-only tree whose files are shared with the trees of other snapshots, and the
    /// environment is an overlay on it, in a network namespace of its own (pasta) with the
    /// config's `ports` published on free host ports (or `--publish HOST:PORT`). On Docker:
    /// the snapshot is imported as an image once. Either way the repository goes to
    /// /workspace (with --repo), `install` runs (with its secrets), then `start`, then each
    /// terminal as a named, supervised process (in one tmux session when the image has tmux);
    /// boot then waits until every declared port listens (`--no-wait` skips it). Secrets
    /// reach the processes through a tmpfs file, never the container's configuration.
    /// Reports each step's time. The environment runs until `envbuild stop NAME`.
    #[command(
        after_help = "Examples:\n  envbuild boot sha256:3f2a... --name agent-1 --repo .\n  envbuild boot --key sha256:0d19... --group platform -p 8080:3000\n  envbuild ps\n  envbuild logs agent-1 web -f\n  envbuild exec agent-1 -- npm test\n  envbuild rm agent-1"
    )]
    Boot(BootArgs),
    /// List booted environments.
    Ps(PsArgs),
    /// Show the output of an environment's terminals (and of `start`), redacted.
    Logs(LogsArgs),
    /// Stop an environment: its processes, mount and network go; on runc, what it wrote (its
    /// logs) stays readable until `envbuild rm NAME`. A Docker environment is removed.
    Stop(StopArgs),
    /// Run a command in an environment, as its user in /workspace, with its secrets.
    ///
    /// Standard input, output and error are the command's; the exit code is its.
    #[command(
        after_help = "Examples:\n  envbuild exec agent-1 -- npm test\n  envbuild exec agent-1 -- sh -c 'echo $PATH'"
    )]
    Exec(ExecArgs),
    /// Open an interactive shell in an environment (bash when it has it, else sh).
    Shell(ShellArgs),
    /// Store, list and remove secrets (encrypted at rest, injected as environment variables).
    ///
    /// Values are encrypted with a fresh data key per version (AES-256-GCM), wrapped by AWS KMS
    /// (`--kms-key-id` or ENVBUILD_KMS_KEY_ID) or by the local master key file
    /// (~/.config/envbuild/master.key, created with mode 0600). Name, scope and version are bound
    /// into the encryption, so a secret cannot be replayed elsewhere. Redacted secrets (the
    /// default) never appear in envbuild's output, logs or snapshots.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Copy a snapshot and its key records to another store, sending only what it lacks.
    ///
    /// Chunks go first, then the manifest, then the key records, so an interrupted push leaves
    /// no visible snapshot and a second push resumes where it stopped. Every chunk is re-hashed
    /// on the way.
    #[command(after_help = "Example:\n  envbuild push sha256:3f2a... --to s3://my-bucket/envbuild")]
    Push(PushArgs),
    /// Copy a snapshot and its key records from another store into this one.
    #[command(after_help = "Example:\n  envbuild pull sha256:3f2a... --from s3://my-bucket/envbuild")]
    Pull(PullArgs),
    /// Serve the store over HTTP: the snapshot cache for orchestrators and CI, and a browser.
    ///
    /// A stateless service over `--store` (any store: a directory, S3, even another server), so
    /// replicas can run side by side behind a load balancer. `/v1` is the API
    /// (`/v1/openapi.json` describes it): orchestrators resolve keys, fetch manifests, chunks or
    /// a snapshot's whole tar stream; CI pushes with `--store http://HOST:PORT` and a write
    /// token. Writes are checked like any store's: a chunk must hash to its digest, a manifest
    /// comes after its chunks. `/v2/` is a read-only OCI registry: every snapshot is the image
    /// `HOST/snapshots:<id hex>` (or a cache key's hex, or a ref; `-tar` for an uncompressed
    /// layer), so `docker pull`, containerd, podman and skopeo boot snapshots, with a read
    /// token as the password. `/` is a snapshot browser (HTML, no script), `/metrics`
    /// Prometheus metrics, `/healthz` a health check; those two need no token.
    ///
    /// Every other request needs a token from `--tokens` (see `envbuild token new`):
    /// `Authorization: Bearer <token>`, or in a browser any user name and the token as the
    /// password. The address listened on is printed on stdout; errors are logged on stderr,
    /// and with `-v` every request (method, path, status, time, request id). SIGINT or SIGTERM
    /// stop it gracefully. Serve plain HTTP on a trusted network, or put a TLS proxy in front.
    #[command(
        after_help = "Examples:\n  envbuild token new --role write --tokens tokens.txt > ci.token\n  envbuild serve --listen 0.0.0.0:7878 --store s3://bucket/envbuild --tokens tokens.txt\n  ENVBUILD_TOKEN=$(cat ci.token) envbuild push sha256:3f2a... --to http://cache:7878\n  echo $READ_TOKEN | docker login cache:7878 -u any --password-stdin && docker pull cache:7878/snapshots:3f2a...-tar"
    )]
    Serve(ServeArgs),
    /// Manage the tokens of `envbuild serve`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write a commented starter `.cursor/environment.json` and `.cursor/Dockerfile`.
    ///
    /// The install command is guessed from the lock files in the repository (npm, pnpm, yarn,
    /// pip, cargo, go). Existing files are never overwritten: if either file exists, nothing is
    /// written.
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The config to check.
    #[arg(default_value = envbuild_schema::DEFAULT_CONFIG_PATH, value_name = "PATH")]
    pub path: PathBuf,
    /// Repository root that paths must stay inside. Default: the parent of `.cursor/`, else the
    /// nearest folder with `.git`, else the folder of the file.
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Print the diagnostics as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The tar file, or `-` for stdin.
    #[arg(value_name = "TAR|-")]
    pub input: String,
    /// Store the stream without searching it for the values of the store's secrets. Without
    /// it, a stream holding one (raw, base64 or hex) is refused, as a build's is.
    #[arg(long)]
    pub no_secret_scan: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["to", "tar", "docker", "oci", "ext4"])))]
pub struct FetchArgs {
    /// The snapshot: its id, a unique prefix of at least 6 hex digits, or a ref name.
    pub snapshot: String,
    /// Extract into this directory (must not exist, or be empty, unless --force).
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// Write the tar stream to this file, or `-` for stdout.
    #[arg(long, value_name = "FILE|-")]
    pub tar: Option<String>,
    /// Load it into the Docker engine as this image, with its OCI configuration restored.
    #[arg(long, value_name = "REPO:TAG")]
    pub docker: Option<String>,
    /// Write an OCI image layout directory (loadable by skopeo, podman, containerd).
    #[arg(long, value_name = "DIR")]
    pub oci: Option<PathBuf>,
    /// The reference name of the image in the OCI layout.
    #[arg(long, value_name = "NAME", default_value = "latest", requires = "oci")]
    pub oci_ref: String,
    /// Write an ext4 disk image of the root file system, for microVMs such as Firecracker.
    #[arg(long, value_name = "FILE")]
    pub ext4: Option<PathBuf>,
    /// Free space to leave in the ext4 image, in percent of what the files need.
    #[arg(long, value_name = "PERCENT", default_value = "20", requires = "ext4")]
    pub headroom: u32,
    /// Replace what is at the destination (a file, or a directory that is not empty) once
    /// the new one is complete; without it, an existing destination is refused.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The snapshot: its id, a unique prefix, or a ref name.
    pub snapshot: String,
    /// Print the whole manifest as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The old snapshot.
    pub old: String,
    /// The new snapshot.
    pub new: String,
    /// Count a changed modification time alone as a change.
    #[arg(long)]
    pub mtime: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Snapshots to check (ids, prefixes or refs). Default: everything in the store.
    pub snapshots: Vec<String>,
    /// Also download, decompress and re-hash every chunk.
    #[arg(long)]
    pub read_data: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Say what would be removed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep unreferenced objects younger than this (`30m`, `2h`, `7days`).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub grace: std::time::Duration,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Environment names, or snapshots: ids, unique prefixes of at least 6 hex digits, or ref
    /// names. An environment's name is matched first.
    #[arg(required = true, value_name = "NAME|SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Remove a snapshot a ref names too, and the ref.
    #[arg(long)]
    pub force: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep the newest N snapshots of each repository.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Keep the snapshots made within this long (`7days`, `36h`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_within: Option<std::time::Duration>,
    /// Let snapshots that refs or head records name go too (and those pointers).
    #[arg(long)]
    pub include_refs: bool,
    /// `--dry-run` (also: the bytes it would free), `--grace` for the chunks left behind,
    /// `--json`: as for `gc`.
    #[command(flatten)]
    pub collect: GcArgs,
}

/// Where the repository is and what feeds its keys.
#[derive(Debug, Clone, Args)]
pub struct RepoArgs {
    /// The repository (the folder holding `.cursor/environment.json`).
    #[arg(long, value_name = "DIR", default_value = ".", env = env::REPO)]
    pub repo: PathBuf,
    /// Narrow the install inputs (default: every file git tracks) to paths matching GLOB.
    #[arg(long, value_name = "GLOB")]
    pub input: Vec<String>,
    /// An environment variable for install, part of the env key.
    #[arg(long, value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// A Dockerfile build arg, part of the system key.
    #[arg(long, value_name = "NAME=VALUE")]
    pub build_arg: Vec<String>,
    /// Network for the build and install.
    #[arg(long, value_enum, default_value = "host")]
    pub network: NetworkArg,
    /// An environment group the repository is in, beside the one `.cursor/envbuild.json`
    /// declares (repeatable): it sees the group's secrets.
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,
    /// The base image of a config that names no `snapshot`, `image` or `build` (Cursor's
    /// default base).
    #[arg(long, value_name = "IMAGE", env = env::BASE_IMAGE, default_value = envbuild_builder::plan::DEFAULT_BASE_IMAGE)]
    pub base_image: String,
    /// Fail where Cursor would fall back with a warning: a `snapshot` that cannot be used (and,
    /// with --check-idempotent, an install that is not idempotent).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum NetworkArg {
    /// The host's network.
    Host,
    /// No network.
    None,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Build even if the key is stored (the key record then points at the new snapshot).
    /// Docker's layer cache is still used (see --no-layer-cache).
    #[arg(long)]
    pub no_cache: bool,
    /// Build the Dockerfile without Docker's layer cache.
    #[arg(long)]
    pub no_layer_cache: bool,
    /// Install from the system image alone, not from the repository's last checkpoint.
    #[arg(long)]
    pub clean: bool,
    /// Give install no package-manager cache (npm, pip, uv, yarn, pnpm, go...) of this host.
    #[arg(long)]
    pub no_package_cache: bool,
    /// Run install a second time on the result and report what it changed.
    #[arg(long)]
    pub check_idempotent: bool,
    /// Print a JSON report (id, keys, hit or miss, timings, sizes) instead of the id.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Print JSON: `system_key`, `env_key` and the inputs.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A key (`sha256:...`), a snapshot id, a unique prefix or a ref.
    pub a: String,
    /// Another; without it, the repository as it is now (`--repo`), before building it.
    pub b: Option<String>,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["snapshot", "key"])))]
pub struct BootArgs {
    /// The snapshot: its id, a unique prefix or a ref name.
    pub snapshot: Option<String>,
    /// Boot the snapshot this cache key (an env key) points at.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Copy this repository's tracked files and its .git to /workspace and use its
    /// environment.json (default: the snapshot's own /workspace and config).
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// The environment's name (default: envbuild-<snapshot id prefix>).
    #[arg(long)]
    pub name: Option<String>,
    /// An environment group the environment is in (repeatable): it sees the group's secrets.
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,
    /// Network of the environment: `private` (a namespace of its own with outbound access and
    /// the config's ports published on host ports; on Docker, the host's), `host`, or `none`.
    #[arg(long, value_enum, default_value = "private")]
    pub network: BootNetworkArg,
    /// The engine: `auto` (runc when this host can run it: root, with runc and pasta;
    /// otherwise the Docker engine), `runc`, or `docker`.
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: EngineArg,
    /// Publish a declared port on a chosen host port (repeatable); the others get free ones.
    #[arg(short = 'p', long, value_name = "HOST:PORT", value_parser = parse_publish)]
    pub publish: Vec<envbuild_builder::engine::PortMapping>,
    /// How long to wait for `start` to finish before leaving it running in the background.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub start_wait: std::time::Duration,
    /// Return once the terminals run, without waiting for the declared ports to listen.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for every declared port to listen before failing (the environment
    /// stays up).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub ready_timeout: std::time::Duration,
    /// Print a JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `HOST:PORT` of `--publish`.
fn parse_publish(text: &str) -> Result<envbuild_builder::engine::PortMapping, String> {
    let (host, container) =
        text.split_once(':').ok_or_else(|| format!("`{text}` is not HOST:PORT (say `8080:3000`)"))?;
    let port =
        |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("`{p}` is not a port"));
    Ok(envbuild_builder::engine::PortMapping { host: port(host)?, container: port(container)? })
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BootNetworkArg {
    /// Its own network namespace, outbound access, ports published.
    Private,
    /// The host's network.
    Host,
    /// No network.
    None,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EngineArg {
    Auto,
    Runc,
    Docker,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Also list everything the runc runtime made on this host: environment directories
    /// (stopped ones, and what interrupted boots left), trees, mounts, network namespaces,
    /// pasta processes and runc containers.
    #[arg(long)]
    pub all: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The environment.
    pub name: String,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
    /// Allocate a terminal (default: when stdin is one).
    #[arg(short, long)]
    pub tty: bool,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The environment.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The environment.
    pub name: String,
    /// A terminal's name, or `start`; default: all.
    pub terminal: Option<String>,
    /// Keep printing as output arrives.
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The environment.
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Store a new version of a secret; the value is read from stdin.
    ///
    /// The secret belongs to the repository it is set in (`--repo`, default `.`: its git
    /// remote, else its path), to a named environment group (`--env NAME`: every repository
    /// that declares the group in `.cursor/envbuild.json`, or is built with `--group NAME`), or
    /// to every repository of the store (`--scope workspace`). Rotating a value rebuilds
    /// nothing, unless the secret is marked `--affects-build`.
    #[command(
        after_help = "Examples:\n  printf %s \"$NPM_TOKEN\" | envbuild secrets set NPM_TOKEN --when install\n  envbuild secrets set DATABASE_URL --env platform < url.txt\n  envbuild secrets set SENTRY_DSN --scope workspace < dsn.txt"
    )]
    Set(SecretSetArgs),
    /// List secrets: names, scopes, versions and dates, never values.
    #[command(after_help = "Examples:\n  envbuild secrets ls\n  envbuild secrets ls --for path/to/repo")]
    Ls(SecretLsArgs),
    /// Remove a secret.
    Rm(SecretRmArgs),
}

/// Which scope a secret is set in or removed from.
#[derive(Debug, Clone, Args)]
pub struct SecretScopeArgs {
    /// The repository the secret belongs to (the default scope).
    #[arg(long, value_name = "DIR", default_value = ".", conflicts_with_all = ["env", "scope"])]
    pub repo: PathBuf,
    /// An environment group instead: every repository in it sees the secret.
    #[arg(long, value_name = "NAME", conflicts_with = "scope")]
    pub env: Option<String>,
    /// `workspace`: every repository of the store sees the secret (opt-in).
    #[arg(long, value_name = "workspace", value_parser = ["workspace"])]
    pub scope: Option<String>,
}

#[derive(Debug, Args)]
pub struct SecretSetArgs {
    /// The environment variable name.
    pub name: String,
    #[command(flatten)]
    pub target: SecretScopeArgs,
    /// A new version changes the env key, so rotating the value rebuilds (off: rotating a
    /// token rebuilds nothing).
    #[arg(long)]
    pub affects_build: bool,
    /// When the value reaches the environment: at boot (start and terminals), in install only,
    /// or both.
    #[arg(long, value_enum, default_value = "boot")]
    pub when: WhenArg,
    /// Do not mask the value in output (for values shorter than 8 bytes, which cannot be masked).
    #[arg(long)]
    pub no_redact: bool,
    /// Encrypt with this AWS KMS key (id, ARN or alias) instead of the local master key.
    #[arg(long, env = env::KMS_KEY_ID, value_name = "KEY")]
    pub kms_key_id: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum WhenArg {
    Boot,
    Install,
    Both,
}

#[derive(Debug, Args)]
pub struct SecretLsArgs {
    /// Only the secrets this repository sees (its own, its groups', the workspace's).
    #[arg(long = "for", value_name = "REPO")]
    pub for_repo: Option<PathBuf>,
    /// With --for: environment groups the repository is in besides the one it declares.
    #[arg(long = "group", value_name = "NAME", requires = "for_repo")]
    pub groups: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SecretRmArgs {
    pub name: String,
    #[command(flatten)]
    pub target: SecretScopeArgs,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The snapshot in this store: its id, a unique prefix, or a ref name.
    pub snapshot: String,
    /// The destination store.
    #[arg(long, value_name = "LOCATION")]
    pub to: String,
    /// Print a JSON report on stdout instead of the id.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The snapshot in the source store: its id, a unique prefix, or a ref name.
    pub snapshot: String,
    /// The source store.
    #[arg(long, value_name = "LOCATION")]
    pub from: String,
    /// Print a JSON report on stdout instead of the id.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub listen: std::net::SocketAddr,
    /// The tokens file (hashes and roles; see `envbuild token new`). Re-read when it changes.
    #[arg(long, value_name = "FILE", env = env::TOKENS)]
    pub tokens: PathBuf,
    /// Largest manifest accepted, in bytes (`128M`).
    #[arg(long, value_name = "SIZE", default_value = "128M")]
    pub max_manifest: String,
    /// Largest other object accepted (secrets, leases...), in bytes.
    #[arg(long, value_name = "SIZE", default_value = "16M")]
    pub max_object: String,
    /// Memory for cached manifests.
    #[arg(long, value_name = "SIZE", default_value = "256M")]
    pub manifest_cache: String,
    /// How long requests in flight may take to finish after SIGINT or SIGTERM.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: std::time::Duration,
    /// How long a client may take to send a request's head; then the connection is closed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: std::time::Duration,
    /// Longest pause in a request's body; then the request is answered 408 and closed.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_timeout: std::time::Duration,
    /// Connections one client address may hold at once; more are closed as they arrive.
    #[arg(long, value_name = "N", default_value = "256")]
    pub max_connections_per_client: usize,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token, add its hash to the tokens file, and print the token on stdout.
    ///
    /// The file (created with mode 0600 when missing) keeps only the token's sha256 and its
    /// role, so it grants nothing if it leaks. The token is shown once: store it where its user
    /// reads it (`ENVBUILD_TOKEN` for the envbuild CLI). Running servers pick it up within two
    /// seconds.
    #[command(
        after_help = "Example:\n  envbuild token new --role read --tokens /etc/envbuild/tokens --label orchestrator > reader.token"
    )]
    New(TokenNewArgs),
}

#[derive(Debug, Args)]
pub struct TokenNewArgs {
    /// What the token may do: `read` (fetch, browse), `write` (also push; never delete), or
    /// `admin` (also delete: `gc`, `rm` and `prune` through the service).
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// The tokens file of the server.
    #[arg(long, value_name = "FILE", env = env::TOKENS)]
    pub tokens: PathBuf,
    /// A note kept beside the hash, to tell tokens apart.
    #[arg(long)]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    /// GET and HEAD: fetch snapshots, resolve keys, browse.
    Read,
    /// Also PUT: push snapshots and key records. Published data cannot be deleted or replaced.
    Write,
    /// Also DELETE: collect garbage, remove and prune snapshots.
    Admin,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The repository to write into.
    #[arg(long, value_name = "DIR", default_value = ".", env = env::REPO)]
    pub repo: PathBuf,
}
