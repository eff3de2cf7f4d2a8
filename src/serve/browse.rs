//! The snapshot browser: server-rendered HTML pages, no script, no build step.
//!
//! - `/`: the store's snapshots (newest first) with size, stored size, how much of each is
//!   shared with the others (dedup), file count and age; the cache keys and what they point
//!   at; a form to diff two snapshots;
//! - `/snapshots/{id}`: one snapshot's manifest summary, image configuration, environment,
//!   build inputs and file list (paged, filterable by path prefix);
//! - `/diff?a=ID&b=ID`: the files added, removed and changed between two snapshots.
//!
//! Ids may be given as anything `envbuild` accepts (full, a unique prefix, a ref). Every
//! string from the store is HTML-escaped; pages are bounded (at most [`MAX_LISTED`]
//! snapshots and keys, [`PAGE`] files, [`MAX_DIFF_ROWS`] rows per diff section) so a huge
//! store cannot make one page huge.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use envbuild_cache::catalog::{self, KeyRecord};
use envbuild_cache::diff;
use envbuild_cache::layout;
use envbuild_cache::manifest::{Manifest, TocEntry};
use envbuild_cache::{Digest, SnapshotId};
use futures::StreamExt;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::format;

/// Most snapshots (and keys) listed on the index.
const MAX_LISTED: usize = 200;
/// Files per page of a snapshot's file list.
const PAGE: usize = 500;
/// Rows per section of a diff.
const MAX_DIFF_ROWS: usize = 2000;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/snapshots/{id}", get(snapshot))
        .route("/diff", get(diff_page))
}

/// The answer to a browser without credentials (the `WWW-Authenticate` header is added by
/// the caller).
pub fn unauthorized() -> Response {
    let body = page(
        "sign in",
        "<h1>Sign in</h1><p>This snapshot browser needs a token with the <code>read</code> role. \
         Your browser asks for it: any user name, the token as the password.</p>\
         <p>Create one on the server with <code>envbuild token new --role read --tokens FILE</code>.</p>",
    );
    (StatusCode::UNAUTHORIZED, Html(body)).into_response()
}

/// An error shown as a page rather than as JSON.
#[derive(Debug)]
pub struct PageError(ApiError);

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        self.0.log();
        let body = format!(
            "<h1>{}</h1><p>{}</p><p><a href=\"/\">all snapshots</a></p>",
            self.0.status,
            esc(&self.0.message)
        );
        (self.0.status, Html(page("error", &body))).into_response()
    }
}

/// HTML-escapes `text`.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn short(id: &SnapshotId) -> String {
    id.0.hex()[..12].to_owned()
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "–".into();
    }
    #[allow(clippy::cast_precision_loss)]
    let share = part as f64 * 100.0 / whole as f64;
    format!("{share:.0}%")
}

const STYLE: &str = "
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:14px 28px;display:flex;gap:24px;align-items:baseline}
header a{color:#fff;text-decoration:none;font-weight:600}header span{color:#aab3c5}
main{padding:20px 28px;max-width:1280px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:17px;margin:26px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%;box-shadow:0 1px 2px #0001}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e6e8ec;vertical-align:top}
th{background:#eef0f4;font-weight:600;font-size:13px;color:#4a5366}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
code,pre,.id{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}
pre{background:#fff;padding:12px;overflow:auto;box-shadow:0 1px 2px #0001}
a{color:#2457c5}.muted{color:#6b7385}.add{color:#17803d}.del{color:#b42318}.chg{color:#9a6700}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin:10px 0}
.card{background:#fff;padding:10px 16px;box-shadow:0 1px 2px #0001;min-width:140px}
.card b{display:block;font-size:20px}
form{margin:10px 0}select,input{font:inherit;padding:4px}
";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · envbuild</title><style>{STYLE}</style></head><body>\
         <header><a href=\"/\">envbuild snapshots</a><span>environment snapshot cache</span></header>\
         <main>{body}</main></body></html>",
        esc(title)
    )
}

fn card(label: &str, value: &str) -> String {
    format!("<div class=\"card\"><span class=\"muted\">{}</span><b>{}</b></div>", esc(label), esc(value))
}

/// Snapshots with their manifests, newest first, at most [`MAX_LISTED`].
async fn listed(
    state: &AppState,
) -> Result<Vec<(SnapshotId, std::time::SystemTime, Arc<Manifest>)>, ApiError> {
    let snapshots = catalog::list_snapshots(&*state.store).await?;
    let loaded: Vec<_> = futures::stream::iter(snapshots.into_iter().take(MAX_LISTED))
        .map(|(id, meta)| async move { state.manifest(&id).await.map(|m| (id, meta.last_modified, m)) })
        .buffered(8)
        .collect()
        .await;
    loaded.into_iter().collect()
}

async fn keys(state: &AppState) -> Result<Vec<KeyRecord>, ApiError> {
    let mut metas = state.store.list(layout::KEYS).await?;
    metas.sort_by_key(|meta| std::cmp::Reverse(meta.last_modified));
    let records: Vec<_> = futures::stream::iter(metas.into_iter().take(MAX_LISTED))
        .filter_map(|meta| async move {
            let key = layout::parse_key(meta.path.as_str())?;
            catalog::read_key(&*state.store, &key).await.ok().flatten()
        })
        .collect()
        .await;
    Ok(records)
}

async fn index(State(state): State<Arc<AppState>>) -> Result<Response, PageError> {
    let snapshots = listed(&state).await?;
    let keys = keys(&state).await?;
    // How many of the listed snapshots use each chunk, to tell shared bytes from own bytes.
    let mut users: HashMap<Digest, usize> = HashMap::new();
    let mut stored: HashMap<Digest, u64> = HashMap::new();
    for (_, _, manifest) in &snapshots {
        for chunk in manifest.unique_chunks() {
            *users.entry(chunk.digest).or_default() += 1;
            stored.insert(chunk.digest, chunk.stored_size);
        }
    }
    let logical: u64 = snapshots.iter().map(|(_, _, m)| m.size).sum();
    let unique_stored: u64 = stored.values().sum();
    let mut body = String::from("<h1>Snapshots</h1>");
    body.push_str("<div class=\"cards\">");
    body.push_str(&card("snapshots", &snapshots.len().to_string()));
    body.push_str(&card("keys", &keys.len().to_string()));
    body.push_str(&card("root filesystems", &format::bytes(logical)));
    body.push_str(&card("stored (deduplicated, zstd)", &format::bytes(unique_stored)));
    #[allow(clippy::cast_precision_loss)]
    let ratio = if unique_stored == 0 {
        "–".into()
    } else {
        format!("{:.1}×", logical as f64 / unique_stored as f64)
    };
    body.push_str(&card("saving", &ratio));
    body.push_str("</div>");

    let mut keys_of: HashMap<SnapshotId, usize> = HashMap::new();
    for record in &keys {
        *keys_of.entry(record.snapshot).or_default() += 1;
    }
    if snapshots.is_empty() {
        body.push_str("<p class=\"muted\">The store has no snapshots yet. Build one with <code>envbuild build</code>.</p>");
    } else {
        body.push_str(
            "<table><tr><th>snapshot</th><th class=n>size</th><th class=n>stored</th>\
             <th class=n>shared</th><th class=n>chunks</th><th class=n>files</th><th class=n>keys</th><th>age</th></tr>",
        );
        for (id, modified, manifest) in &snapshots {
            let unique = manifest.unique_chunks();
            let own: u64 = unique.iter().map(|c| c.stored_size).sum();
            let shared: u64 = unique.iter().filter(|c| users[&c.digest] > 1).map(|c| c.stored_size).sum();
            let _ = write!(
                body,
                "<tr><td><a class=id href=\"/snapshots/{hex}\">{short}</a></td><td class=n>{size}</td>\
                 <td class=n>{stored}</td><td class=n>{shared}</td><td class=n>{chunks}</td><td class=n>{files}</td>\
                 <td class=n>{keys}</td><td>{age}</td></tr>",
                hex = id.0.hex(),
                short = short(id),
                size = format::bytes(manifest.size),
                stored = format::bytes(own),
                shared = percent(shared, own),
                chunks = unique.len(),
                files = manifest.toc.len(),
                keys = keys_of.get(id).copied().unwrap_or(0),
                age = esc(&format::age(*modified)),
            );
        }
        body.push_str("</table>");
        body.push_str("<p class=muted>shared: the part of a snapshot's stored bytes that other snapshots listed here use too.</p>");
    }

    if snapshots.len() >= 2 {
        body.push_str("<h2>Compare two snapshots</h2><form action=\"/diff\" method=\"get\">");
        for (name, pick) in [("a", 1), ("b", 0)] {
            let _ = write!(body, "<select name=\"{name}\" aria-label=\"snapshot {name}\">");
            for (i, (id, _, _)) in snapshots.iter().enumerate() {
                let selected = if i == pick { " selected" } else { "" };
                let _ = write!(body, "<option value=\"{}\"{selected}>{}</option>", id.0.hex(), short(id));
            }
            body.push_str("</select> ");
        }
        body.push_str("<button type=\"submit\">diff</button></form>");
    }

    body.push_str("<h2>Cache keys</h2>");
    if keys.is_empty() {
        body.push_str("<p class=\"muted\">No key records.</p>");
    } else {
        body.push_str("<table><tr><th>key</th><th>snapshot</th><th>created</th><th>builder</th></tr>");
        for record in &keys {
            let _ = write!(
                body,
                "<tr><td class=id>{key}</td><td><a class=id href=\"/snapshots/{hex}\">{short}</a></td><td>{created}</td><td>{builder}</td></tr>",
                key = &record.key.hex()[..16],
                hex = record.snapshot.0.hex(),
                short = short(&record.snapshot),
                created = esc(&record.created),
                builder = esc(&record.builder),
            );
        }
        body.push_str("</table>");
    }
    Ok(Html(page("snapshots", &body)).into_response())
}

#[derive(Deserialize)]
struct FilesQuery {
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    prefix: String,
}

fn kind_and_detail(entry: &TocEntry) -> (String, String) {
    let kind = entry.kind.as_str().to_owned();
    let detail = entry.link.as_deref().map(|l| format!("→ {l}")).unwrap_or_default();
    (kind, detail)
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

async fn snapshot(
    State(state): State<Arc<AppState>>,
    Path(query): Path<String>,
    Query(files): Query<FilesQuery>,
) -> Result<Response, PageError> {
    let id = catalog::resolve(&*state.store, &query).await?;
    let manifest = state.manifest(&id).await?;
    let unique = manifest.unique_chunks();
    let hex = id.0.hex();
    let mut body = format!("<h1>Snapshot <span class=id>{}</span></h1>", short(&id));
    let _ = write!(
        body,
        "<p class=\"id muted\">{id}</p><p><a href=\"/v1/snapshots/{hex}/rootfs.tar\">rootfs.tar</a> · \
         <a href=\"/v1/snapshots/{hex}\">manifest JSON</a></p>"
    );
    body.push_str("<div class=\"cards\">");
    body.push_str(&card("size", &format::bytes(manifest.size)));
    body.push_str(&card("stored", &format::bytes(unique.iter().map(|c| c.stored_size).sum())));
    body.push_str(&card("chunks", &format!("{} ({} distinct)", manifest.chunks.len(), unique.len())));
    body.push_str(&card("files", &manifest.toc.len().to_string()));
    body.push_str(&card("zstd level", &manifest.compression.level.to_string()));
    body.push_str("</div>");
    for (title, value) in [
        ("Image configuration", &manifest.image_config),
        ("environment.json (normalized)", &manifest.environment),
        ("Build inputs", &manifest.keys),
    ] {
        let _ = write!(body, "<h2>{title}</h2>");
        match value {
            Some(value) => {
                let _ = write!(body, "<pre>{}</pre>", esc(&pretty(value)));
            }
            None => body.push_str("<p class=muted>not recorded (an imported snapshot)</p>"),
        }
    }

    let matching: Vec<&TocEntry> =
        manifest.toc.iter().filter(|e| e.path.starts_with(&files.prefix)).collect();
    let _ = write!(
        body,
        "<h2>Files</h2><form method=\"get\"><input name=\"prefix\" value=\"{}\" placeholder=\"path prefix, e.g. etc/\" aria-label=\"path prefix\"> \
         <button type=\"submit\">filter</button> <span class=muted>{} of {} entries</span></form>",
        esc(&files.prefix),
        matching.len(),
        manifest.toc.len()
    );
    body.push_str(
        "<table><tr><th>path</th><th>type</th><th class=n>size</th><th>mode</th><th>owner</th></tr>",
    );
    for entry in matching.iter().skip(files.offset).take(PAGE) {
        let (kind, detail) = kind_and_detail(entry);
        let _ = write!(
            body,
            "<tr><td><code>{}</code> <span class=muted>{}</span></td><td>{kind}</td><td class=n>{}</td><td><code>{:04o}</code></td><td>{}:{}</td></tr>",
            esc(&entry.path),
            esc(&detail),
            format::bytes(entry.size),
            entry.mode & 0o7777,
            entry.uid,
            entry.gid
        );
    }
    body.push_str("</table>");
    if files.offset + PAGE < matching.len() {
        let prefix = files.prefix.bytes().fold(String::new(), |mut out, b| {
            let _ = write!(out, "%{b:02X}");
            out
        });
        let _ = write!(
            body,
            "<p><a href=\"/snapshots/{hex}?offset={}&amp;prefix={prefix}\">next {PAGE} entries</a></p>",
            files.offset + PAGE
        );
    }
    Ok(Html(page(&format!("snapshot {}", short(&id)), &body)).into_response())
}

#[derive(Deserialize)]
struct DiffQuery {
    a: String,
    b: String,
}

async fn diff_page(
    State(state): State<Arc<AppState>>,
    Query(q): Query<DiffQuery>,
) -> Result<Response, PageError> {
    let a = catalog::resolve(&*state.store, &q.a).await?;
    let b = catalog::resolve(&*state.store, &q.b).await?;
    let (old, new) = (state.manifest(&a).await?, state.manifest(&b).await?);
    let d = diff::diff(&old, &new, false);
    let mut body = format!(
        "<h1>Diff</h1><p><a class=id href=\"/snapshots/{}\">{}</a> → <a class=id href=\"/snapshots/{}\">{}</a></p>",
        a.0.hex(),
        short(&a),
        b.0.hex(),
        short(&b)
    );
    body.push_str("<div class=\"cards\">");
    body.push_str(&card("added", &d.added.len().to_string()));
    body.push_str(&card("removed", &d.removed.len().to_string()));
    body.push_str(&card("changed", &d.changed.len().to_string()));
    body.push_str(&card("size change", &signed_bytes(new.size, old.size)));
    body.push_str("</div>");
    if d.is_empty() {
        body.push_str("<p>The two snapshots have the same files.</p>");
    }
    for (title, class, sign, entries) in
        [("Added", "add", "+", &d.added), ("Removed", "del", "−", &d.removed)]
    {
        if entries.is_empty() {
            continue;
        }
        let _ = write!(
            body,
            "<h2 class={class}>{title} ({})</h2><table><tr><th>path</th><th>type</th><th class=n>size</th></tr>",
            entries.len()
        );
        for entry in entries.iter().take(MAX_DIFF_ROWS) {
            let (kind, detail) = kind_and_detail(entry);
            let _ = write!(
                body,
                "<tr><td class={class}><code>{sign} {}</code> <span class=muted>{}</span></td><td>{kind}</td><td class=n>{}</td></tr>",
                esc(&entry.path),
                esc(&detail),
                format::bytes(entry.size)
            );
        }
        body.push_str("</table>");
        truncated(&mut body, entries.len());
    }
    if !d.changed.is_empty() {
        let _ = write!(
            body,
            "<h2 class=chg>Changed ({})</h2><table><tr><th>path</th><th>what</th><th class=n>size</th></tr>",
            d.changed.len()
        );
        for change in d.changed.iter().take(MAX_DIFF_ROWS) {
            let _ = write!(
                body,
                "<tr><td class=chg><code>~ {}</code></td><td>{}</td><td class=n>{} → {}</td></tr>",
                esc(&change.path),
                change.aspects.join(", "),
                format::bytes(change.old.size),
                format::bytes(change.new.size)
            );
        }
        body.push_str("</table>");
        truncated(&mut body, d.changed.len());
    }
    Ok(Html(page("diff", &body)).into_response())
}

fn truncated(body: &mut String, total: usize) {
    if total > MAX_DIFF_ROWS {
        let _ = write!(
            body,
            "<p class=muted>… and {} more (envbuild diff lists them all)</p>",
            total - MAX_DIFF_ROWS
        );
    }
}

fn signed_bytes(new: u64, old: u64) -> String {
    if new >= old {
        format!("+{}", format::bytes(new - old))
    } else {
        format!("−{}", format::bytes(old - new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(percent(1, 4), "25%");
        assert_eq!(percent(1, 0), "–");
        assert_eq!(signed_bytes(1, 2049), "−2.0 KiB");
    }
}
