//! The client side: one HTTP/1.1 connection per request over the unix
//! socket (requests are rare and short; streams hold their connection).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::types::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach orchestratord at {socket}: no such socket (is the daemon running? see `systemctl status orchestratord`)"
    )]
    NoSocket { socket: PathBuf },
    #[error(
        "cannot reach orchestratord at {socket}: permission denied (is your user in the socket's group?)"
    )]
    PermissionDenied { socket: PathBuf },
    #[error("cannot reach orchestratord at {socket}: {reason}")]
    Unreachable { socket: PathBuf, reason: String },
    #[error("{0}")]
    Api(ApiError),
    #[error("unexpected answer from orchestratord: {0}")]
    Protocol(String),
}

impl ClientError {
    /// True when the daemon could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::NoSocket { .. }
                | ClientError::PermissionDenied { .. }
                | ClientError::Unreachable { .. }
        )
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => ClientError::NoSocket {
                    socket: self.socket.clone(),
                },
                std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                    socket: self.socket.clone(),
                },
                _ => ClientError::Unreachable {
                    socket: self.socket.clone(),
                    reason: e.to_string(),
                },
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Unreachable {
                socket: self.socket.clone(),
                reason: e.to_string(),
            })?;
        // The connection task ends with the response body.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let has_body = body.is_some();
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "orchestratord");
        if has_body {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Unreachable {
                socket: self.socket.clone(),
                reason: e.to_string(),
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) => Err(ClientError::Api(e)),
            Err(_) => Err(ClientError::Protocol(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            ))),
        }
    }

    async fn json<T: DeserializeOwned>(resp: Response<Incoming>) -> Result<T, ClientError> {
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Self::json(self.send(Method::GET, path, None).await?).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        Self::json(self.send(Method::POST, path, Some(body)).await?).await
    }

    /// The raw body of a streamed answer, chunk by chunk.
    pub async fn stream(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>> + use<>, ClientError> {
        let body = self.send(Method::GET, path, None).await?.into_body();
        Ok(body
            .into_data_stream()
            .map(|r| r.map_err(|e| ClientError::Protocol(e.to_string()))))
    }

    /// A newline-delimited JSON stream, decoded item by item.
    pub async fn lines<T: DeserializeOwned + 'static>(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<T, ClientError>> + use<T>, ClientError> {
        let chunks = self.stream(path).await?;
        Ok(ndjson(chunks))
    }
}

/// Splits a byte stream into lines and decodes each one.
pub fn ndjson<T, S>(chunks: S) -> impl Stream<Item = Result<T, ClientError>>
where
    T: DeserializeOwned,
    S: Stream<Item = Result<Bytes, ClientError>>,
{
    futures_util::stream::unfold(
        (Box::pin(chunks), Vec::<u8>::new(), false),
        |(mut chunks, mut buf, done)| async move {
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let line = &line[..line.len() - 1];
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let item = serde_json::from_slice::<T>(line)
                        .map_err(|e| ClientError::Protocol(e.to_string()));
                    return Some((item, (chunks, buf, done)));
                }
                if done {
                    return None;
                }
                match chunks.next().await {
                    Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                    Some(Err(e)) => return Some((Err(e), (chunks, buf, true))),
                    None => {
                        if buf.iter().all(u8::is_ascii_whitespace) {
                            return None;
                        }
                        buf.push(b'\n');
                        return Some((
                            serde_json::from_slice::<T>(&buf[..buf.len() - 1])
                                .map_err(|e| ClientError::Protocol(e.to_string())),
                            (chunks, Vec::new(), true),
                        ));
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ndjson_splits_across_chunk_boundaries() {
        let chunks = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"{\"a\":1}\n{\"a\"")),
            Ok(Bytes::from_static(b":2}\n\n{\"a\":3}")),
        ]);
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct A {
            a: u32,
        }
        let items: Vec<A> = ndjson(chunks).map(|r| r.unwrap()).collect().await;
        assert_eq!(items, vec![A { a: 1 }, A { a: 2 }, A { a: 3 }]);
    }

    #[tokio::test]
    async fn a_missing_socket_says_so() {
        let c = Client::new("/nonexistent/orchestrator.sock");
        let err = c.get::<serde_json::Value>("/v1/status").await.unwrap_err();
        assert!(matches!(err, ClientError::NoSocket { .. }), "{err}");
        assert!(err.is_unreachable());
    }
}
