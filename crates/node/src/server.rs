//! The HTTP transport of the node's API: hyper (HTTP/1.1) on one tokio thread, the
//! handlers ([`super::http`]) on a fixed pool of [`MAX_REQUESTS`] threads. Every buffer,
//! connection and wait has a bound (docs/node.md, "Security"):
//!
//! - connections: at most [`MAX_CONNECTIONS`] open, each a task, never a thread; when all
//!   are taken the oldest one without a complete request head is closed for the newcomer;
//!   one request per connection (no keep-alive to hold);
//! - the first byte within [`HEAD_TIMEOUT`], the whole request head within the same, at
//!   most [`MAX_HEAD`] bytes of it (a longer head is refused by hyper with 431);
//! - a body of at most [`MAX_BODY`] bytes (413) within [`BODY_TIMEOUT`] (408);
//! - [`MAX_REQUESTS`] handled at once, more answered 503; a streamed reply waits at most
//!   [`WRITE_TIMEOUT`] for the client to take each chunk.
//!
//! Before a handler runs: the `Host` must name the node ([`Hosts`]: DNS rebinding), a
//! request that changes state (not GET or HEAD) must come from no other origin (`Origin`
//! absent or the node's own) and carry JSON, and every request but the health and the web
//! app's files must carry the token (`http_token`, or the node's own: [`super::http_token`]).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::http::{Api, Reply};

/// Requests handled at once; more get 503.
pub const MAX_REQUESTS: usize = 8;
/// Connections open at once; more are closed when accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 16 << 10;
/// Largest request body (a segment request is a few hundred bytes).
pub const MAX_BODY: usize = 1 << 20;
/// Time to the first byte of a connection, and to the end of its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to the end of a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a streamed reply waits for the client to take one chunk.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Chunks of a streamed reply in flight (each at most [`CHUNK`] bytes).
const CHUNKS: usize = 4;
/// Size of a streamed reply's chunks.
pub const CHUNK: usize = 64 << 10;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// A request as the handlers see it: owned, its body read whole (within [`MAX_BODY`]).
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

/// What a handler answers: a whole reply, or a head and a body it streams with
/// [`Stream::send`] after the head went out.
pub enum Answer {
    Whole(Reply),
    Stream(Response<()>, Box<dyn FnOnce(&Stream) + Send>),
}

/// The sending end of a streamed reply.
pub struct Stream {
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    rt: tokio::runtime::Handle,
}

impl Stream {
    /// Send one chunk; false when the client is gone or took nothing for
    /// [`WRITE_TIMEOUT`] (the handler stops then).
    pub fn send(&self, chunk: Vec<u8>) -> bool {
        let tx = self.tx.clone();
        self.rt.block_on(async move {
            matches!(
                tokio::time::timeout(WRITE_TIMEOUT, tx.send(Ok(Frame::data(Bytes::from(chunk)))))
                    .await,
                Ok(Ok(()))
            )
        })
    }
}

/// The names the node answers to in `Host` (and `Origin`): its bind address and, on
/// loopback, `localhost`, plus `http_hosts`; with the port, or without it.
pub struct Hosts {
    names: Vec<String>,
    port: u16,
}

impl Hosts {
    pub fn new(addr: std::net::SocketAddr, extra: &[String]) -> Hosts {
        let ip = match addr.ip() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            ip => ip.to_string(),
        };
        let mut names = vec![ip];
        if addr.ip().is_loopback() {
            names.extend(["localhost".into(), "127.0.0.1".into(), "[::1]".into()]);
        }
        names.extend(extra.iter().map(|h| h.to_ascii_lowercase()));
        Hosts {
            names,
            port: addr.port(),
        }
    }

    /// Whether `host` (`name` or `name:port`) is the node.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let (name, port) = match host.rsplit_once(':') {
            // An IPv6 literal without a port ends with `]`.
            Some((n, p)) if !p.ends_with(']') => (n.to_string(), p.parse::<u16>().ok()),
            _ => (host.clone(), None),
        };
        let port_ok = match port {
            Some(p) => p == self.port,
            None => !host.contains(':') || host.ends_with(']'),
        };
        port_ok && self.names.contains(&name)
    }

    /// Whether an `Origin` header value (`scheme://host[:port]`) is the node itself.
    fn allows_origin(&self, origin: &str) -> bool {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|h| self.allows(h))
    }
}

/// TLS (HTTPS, DICOM): the certificate and key files, and what was last read from them. A reload
/// that fails (a half-written file) keeps the one in use and says why in the log.
pub struct Tls {
    /// The configuration keys' prefix, for messages: `http_tls` or `dicom_tls`.
    keys: &'static str,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("cert", &self.cert).finish()
    }
}

impl Tls {
    /// The files of a configuration's `<keys>_cert` and `<keys>_key` (checked to go
    /// together); None when unset. Files that can't be used are bad input naming the key.
    pub fn configured(
        keys: &'static str,
        cert: &str,
        key: &str,
    ) -> Result<Option<Tls>, medfm::Error> {
        if cert.is_empty() {
            return Ok(None);
        }
        let (cert, key) = (
            std::path::PathBuf::from(cert),
            std::path::PathBuf::from(key),
        );
        let current = std::sync::RwLock::new(Arc::new(Self::read(keys, &cert, &key)?));
        Ok(Some(Tls {
            keys,
            cert,
            key,
            current,
        }))
    }

    fn read(
        keys: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<rustls::sign::CertifiedKey, medfm::Error> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |which: &str, path: &std::path::Path, why: String| {
            medfm::Error::bad_input(format!("{keys}_{which} {}: {why}", path.display()))
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad("cert", cert, format!("no PEM certificate chain ({e})")))?;
        if chain.is_empty() {
            return Err(bad("cert", cert, "no certificate".into()));
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| bad("key", key, format!("no PEM private key ({e})")))?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)
            .map_err(|e| bad("key", key, e.to_string()))?;
        Ok(rustls::sign::CertifiedKey::new(chain, signer))
    }

    /// Read the files again.
    pub fn reload(&self) {
        match Self::read(self.keys, &self.cert, &self.key) {
            Ok(k) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(k);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::error!("TLS certificate not reloaded (the old one stays): {e:#}"),
        }
    }

    /// A rustls server configuration that serves the certificate in use (a reload
    /// changes it for the next handshake).
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone()))),
        )
    }

    fn acceptor(self: &Arc<Self>) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config())
    }
}

/// The certificate in use, for every handshake.
#[derive(Debug)]
struct Resolver(Arc<Tls>);

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.0
                .current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// One request for the pool: what the handler needs and where its answer goes.
struct Job {
    req: Req,
    reply: tokio::sync::oneshot::Sender<Response<Body>>,
}

/// Serve `listener` until the node stops. The handlers run on this thread's pool and may
/// borrow `api`.
pub fn serve(
    listener: std::net::TcpListener,
    api: &Api,
    hosts: Hosts,
    token: String,
    tls: Option<Tls>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("http: cannot start: {e}");
            return;
        }
    };
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Mutex::new(rx);
    std::thread::scope(|scope| {
        for _ in 0..MAX_REQUESTS {
            let (rx, handle) = (&rx, rt.handle().clone());
            scope.spawn(move || {
                loop {
                    let job = match rx.lock().expect("lock").recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    run_job(job, api, &handle);
                }
            });
        }
        let shared = Arc::new(Shared {
            jobs: Mutex::new(tx),
            waiting: Waiting::default(),
            busy: AtomicUsize::new(0),
            hosts,
            token,
            web_root: !api.config.web_root.is_empty(),
        });
        rt.block_on(accept(
            listener,
            api.stop.clone(),
            shared,
            tls.map(Arc::new),
        ));
        // The runtime's tasks and the last sender go with it: the pool ends.
        drop(rt);
    });
}

/// What every connection's task shares.
struct Shared {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// Connections without a complete request head yet, oldest first.
    waiting: Waiting,
    /// Requests in the pool now.
    busy: AtomicUsize,
    hosts: Hosts,
    /// Required on every request but the health and the web app's files.
    token: String,
    /// Whether the web app is served (its files need no token).
    web_root: bool,
}

/// The connections that have not sent a whole request head, oldest first: the ones
/// evicted when every slot is taken.
#[derive(Default)]
struct Waiting {
    next: std::sync::atomic::AtomicU64,
    list: Mutex<std::collections::VecDeque<(u64, Arc<tokio::sync::Notify>)>>,
}

impl Waiting {
    fn add(&self) -> (u64, Arc<tokio::sync::Notify>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(tokio::sync::Notify::new());
        self.list
            .lock()
            .expect("lock")
            .push_back((id, notify.clone()));
        (id, notify)
    }

    fn remove(&self, id: u64) {
        self.list.lock().expect("lock").retain(|(i, _)| *i != id);
    }

    /// Close the oldest; false when there is none.
    fn evict_oldest(&self) -> bool {
        match self.list.lock().expect("lock").pop_front() {
            Some((_, notify)) => {
                // Stored if its task is not waiting yet: it ends at its first wait.
                notify.notify_one();
                true
            }
            None => false,
        }
    }
}

async fn accept(
    listener: std::net::TcpListener,
    stop: super::Stop,
    shared: Arc<Shared>,
    tls: Option<Arc<Tls>>,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|_| tokio::net::TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("http: {e}");
            return;
        }
    };
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let acceptor = tls.as_ref().map(|t| t.acceptor());
    let mut reloads = stop.reloads();
    loop {
        if stop.is_stopped() {
            return;
        }
        if stop.reloads() != reloads {
            reloads = stop.reloads();
            if let Some(t) = &tls {
                t.reload();
            }
        }
        let (stream, _) =
            match tokio::time::timeout(Duration::from_millis(200), listener.accept()).await {
                Err(_) => continue,
                Ok(Err(e)) => {
                    tracing::warn!("http accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Ok(Ok(s)) => s,
            };
        // All slots taken: the oldest connection still without a complete request head
        // makes room (idle and slow peers cannot keep a real client out).
        let permit = match connections.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if shared.waiting.evict_oldest() {
                    tracing::warn!(
                        max = MAX_CONNECTIONS,
                        "http: the oldest connection without a request closed to make room"
                    );
                }
                match tokio::time::timeout(
                    Duration::from_secs(1),
                    connections.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(p)) => p,
                    _ => {
                        tracing::warn!(
                            max = MAX_CONNECTIONS,
                            "http: connection closed: too many open"
                        );
                        continue;
                    }
                }
            }
        };
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (id, evicted) = shared.waiting.add();
            let serve = async {
                // A connection that sends nothing is closed after HEAD_TIMEOUT.
                let mut first = [0u8; 1];
                match tokio::time::timeout(HEAD_TIMEOUT, stream.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
                match acceptor {
                    None => serve_connection(stream, &shared, id).await,
                    // The handshake within the head's time too.
                    Some(a) => match tokio::time::timeout(HEAD_TIMEOUT, a.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, &shared, id).await,
                        Ok(Err(e)) => tracing::debug!("https handshake: {e}"),
                        Err(_) => tracing::debug!("https handshake: timed out"),
                    },
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = evicted.notified() => {}
            }
            shared.waiting.remove(id);
        });
    }
}

/// Serve one request on `io` (plain or TLS) with hyper's limits.
async fn serve_connection<I>(io: I, shared: &Arc<Shared>, id: u64)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(|req| {
        let shared = shared.clone();
        async move {
            // A complete head: no longer a candidate for eviction.
            shared.waiting.remove(id);
            Ok::<_, Infallible>(respond(req, &shared).await)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = conn.await {
        tracing::debug!("http connection: {e}");
    }
}

/// Check a request and hand it to the pool; its answer.
async fn respond(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    let refuse = |status: u16, kind: &str, message: &str| {
        tracing::warn!(%method, path, status, "http: refused: {message}");
        whole(Reply::refusal(status, kind, message))
    };
    // DNS rebinding: a page of another site whose name resolves to this node still
    // sends its own name as Host.
    match header("host") {
        Some(h) if shared.hosts.allows(&h) => {}
        _ => return refuse(403, "forbidden", "the Host header does not name this node"),
    }
    if method != Method::GET && method != Method::HEAD {
        if let Some(origin) = header("origin")
            && !shared.hosts.allows_origin(&origin)
        {
            return refuse(403, "forbidden", "requests from other origins are refused");
        }
        // A form or a text/plain POST of another page (a CORS "simple request") never
        // carries JSON.
        let json = header("content-type")
            .is_some_and(|c| c.split(';').next().unwrap_or("").trim() == "application/json");
        if !json {
            return refuse(415, "bad_request", "the body must be application/json");
        }
    }
    // The health (for monitors) and the web app's files (public code, no patient data;
    // a browser cannot add a header to a page it opens) need no token.
    let open = method == Method::GET
        && (path == "/api/health"
            || (shared.web_root && !path.starts_with("/api/") && !path.starts_with("/dicomweb")));
    if !open {
        let want = format!("Bearer {}", shared.token);
        if !header("authorization").is_some_and(|h| constant_time_eq(&h, &want)) {
            return refuse(
                401,
                "unauthorized",
                "a valid token is needed (Authorization: Bearer ...)",
            );
        }
    }
    let body =
        match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
            Err(_) => return refuse(408, "bad_request", "the request body took too long"),
            Ok(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return refuse(413, "bad_request", "the request body is over 1 MiB");
            }
            Ok(Err(_)) => return refuse(400, "bad_request", "the request body could not be read"),
            Ok(Ok(b)) => b.to_bytes().to_vec(),
        };
    let busy = &shared.busy;
    if busy.fetch_add(1, Ordering::SeqCst) >= MAX_REQUESTS {
        busy.fetch_sub(1, Ordering::SeqCst);
        return whole(Reply::refusal(503, "busy", "busy: try again"));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = Job {
        req: Req {
            method: parts.method,
            path,
            query: parts.uri.query().unwrap_or("").to_string(),
            headers: parts.headers,
            body,
        },
        reply: tx,
    };
    let sent = shared.jobs.lock().expect("lock").send(job).is_ok();
    let answer = if sent { rx.await.ok() } else { None };
    busy.fetch_sub(1, Ordering::SeqCst);
    answer.unwrap_or_else(|| whole(Reply::refusal(503, "busy", "the node is stopping")))
}

/// Run one job on a pool thread: the handler, then its answer (and its stream).
fn run_job(job: Job, api: &Api, rt: &tokio::runtime::Handle) {
    let Job { req, reply } = job;
    match super::http::handle(&req, api) {
        Answer::Whole(r) => {
            let _ = reply.send(whole(r));
        }
        Answer::Stream(head, write) => {
            let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS);
            let body = ChannelBody(rx);
            let (parts, ()) = head.into_parts();
            if reply
                .send(Response::from_parts(parts, BodyExt::boxed(body)))
                .is_ok()
            {
                write(&Stream { tx, rt: rt.clone() });
            }
        }
    }
}

/// A reply body fed by a pool thread, chunk by chunk.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}

fn whole(reply: Reply) -> Response<Body> {
    let Reply(status, content_type, body) = reply;
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::Hosts;

    #[test]
    fn hosts_are_the_node_and_nothing_else() {
        let h = Hosts::new("127.0.0.1:8181".parse().unwrap(), &["Cart.local".into()]);
        for ok in [
            "127.0.0.1:8181",
            "localhost:8181",
            "LOCALHOST:8181",
            "localhost",
            "[::1]:8181",
            "cart.local:8181",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8181",
            "127.0.0.1:80",
            "127.0.0.1.evil.example:8181",
            "",
            "localhost:8181:1",
            "[::1]:81",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
        assert!(h.allows_origin("http://localhost:8181"));
        assert!(!h.allows_origin("http://evil.example"));
        assert!(!h.allows_origin("null"));
    }
}
