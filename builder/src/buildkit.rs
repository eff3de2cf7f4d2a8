//! BuildKit through the Engine API: the session a BuildKit build talks back to.
//!
//! A BuildKit build (`POST /build?version=2&session=ID`) calls back into a session the client
//! opened beforehand: `POST /session`, upgraded to HTTP/2 (`h2c`), on which the *engine* is
//! the gRPC client and envbuild serves. envbuild serves the build secrets
//! (`moby.buildkit.secrets.v1.Secrets/GetSecret`, what `RUN --mount=type=secret` reads) and a
//! health check; the build context goes in the request body, as with the classic builder, so
//! no file-sync service is needed. This is what the Docker CLI does with `DOCKER_BUILDKIT=1`
//! and `--secret`, over the same API; bollard 0.21's own session serves no secrets and its
//! solve path cannot ask for host networking, hence this module.
//!
//! Secret values live in memory only, are handed to the engine over the session when a
//! `RUN --mount=type=secret` asks for them, and are zeroed when the session ends: never a build
//! arg, an environment variable, a file, or a layer.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse, health_check_response,
};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use envbuild_schema::SecretString;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::engine::{Cause, EngineError};

/// The gRPC methods the session offers, announced when it opens.
const METHODS: [&str; 2] = ["/moby.buildkit.secrets.v1.Secrets/GetSecret", "/grpc.health.v1.Health/Check"];

/// An open session; the engine may call it until it is dropped.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The build secrets, by id.
struct SecretStore(HashMap<String, SecretString>);

#[tonic::async_trait]
impl Secrets for SecretStore {
    async fn get_secret(
        &self,
        request: tonic::Request<GetSecretRequest>,
    ) -> Result<tonic::Response<GetSecretResponse>, tonic::Status> {
        let id = request.into_inner().id;
        match self.0.get(&id) {
            Some(value) => {
                Ok(tonic::Response::new(GetSecretResponse { data: value.expose().as_bytes().to_vec() }))
            }
            None => Err(tonic::Status::not_found(format!(
                "the build asks for secret `{id}`, which envbuild does not have in scope"
            ))),
        }
    }
}

struct Healthy;

#[tonic::async_trait]
impl Health for Healthy {
    async fn check(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(HealthCheckResponse {
            status: health_check_response::ServingStatus::Serving as i32,
        }))
    }

    type WatchStream = futures::stream::Empty<Result<HealthCheckResponse, tonic::Status>>;

    async fn watch(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("the session does not stream its health"))
    }

    async fn list(
        &self,
        _: tonic::Request<HealthListRequest>,
    ) -> Result<tonic::Response<HealthListResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("the session lists no services"))
    }
}

/// The upgraded connection, as tonic's server takes it.
struct Upgraded(TokioIo<hyper::upgrade::Upgraded>);

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Upgraded {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

fn failed(source: impl Into<Cause>) -> EngineError {
    EngineError::Failed { operation: "open a BuildKit session".into(), source: source.into() }
}

/// Opens a session on the engine at the unix socket `socket`, serving `secrets`.
pub async fn open(socket: &Path, secrets: &BTreeMap<String, SecretString>) -> Result<Session, EngineError> {
    let id = format!("envbuild-{:032x}", rand::random::<u128>());
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(failed)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, http_body_util::Empty<bytes::Bytes>>(TokioIo::new(stream))
            .await
            .map_err(failed)?;
    let driver = tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let mut request = hyper::Request::post("/session")
        .header(hyper::header::HOST, "docker")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "h2c")
        .header("X-Docker-Expose-Session-Uuid", &id)
        .header("X-Docker-Expose-Session-Name", "envbuild")
        .header("X-Docker-Expose-Session-Sharedkey", "");
    for method in METHODS {
        request = request.header("X-Docker-Expose-Session-Grpc-Method", method);
    }
    let request = request.body(http_body_util::Empty::new()).map_err(failed)?;
    let response = sender.send_request(request).await.map_err(failed)?;
    if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        driver.abort();
        return Err(EngineError::Rejected {
            operation: "open a BuildKit session".into(),
            message: format!("the engine answered {} instead of switching protocols", response.status()),
        });
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(failed)?;
    let store = SecretStore(secrets.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let io = Upgraded(TokioIo::new(upgraded));
    let server = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(HealthServer::new(Healthy))
            .add_service(SecretsServer::new(store))
            .serve_with_incoming(futures::stream::iter([Ok::<_, std::io::Error>(io)]))
            .await;
        if let Err(e) = served {
            tracing::debug!("the BuildKit session ended: {e}");
        }
        driver.abort();
    });
    Ok(Session { id, server })
}

/// The secret ids a Dockerfile's `RUN --mount=type=secret` lines ask for: `id=`, else the
/// base name of `target=` (BuildKit's default).
pub fn secret_ids(dockerfile: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for line in dockerfile.lines() {
        for word in line.split_whitespace() {
            let Some(mount) = word.strip_prefix("--mount=") else { continue };
            let fields: HashMap<&str, &str> = mount.split(',').filter_map(|f| f.split_once('=')).collect();
            if fields.get("type") != Some(&"secret") {
                continue;
            }
            let id = fields.get("id").map(|id| (*id).to_owned()).or_else(|| {
                fields
                    .get("target")
                    .or(fields.get("dst"))
                    .and_then(|t| t.rsplit('/').next())
                    .map(str::to_owned)
            });
            if let Some(id) = id.filter(|id| !ids.contains(id)) {
                ids.push(id);
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_ids_from_mounts() {
        let dockerfile = "FROM x\nRUN --mount=type=secret,id=npm_token,required=true npm ci\n\
            RUN --mount=type=cache,target=/root/.npm --mount=type=secret,target=/run/secrets/pip_conf pip install x\n\
            RUN --mount=type=secret,id=npm_token cat /run/secrets/npm_token\n";
        assert_eq!(secret_ids(dockerfile), ["npm_token", "pip_conf"]);
        assert!(secret_ids("FROM x\nRUN echo --mount=type=bind,source=a\n").is_empty());
    }
}
