//! Listeners shared by the collector and the agent: TLS with reload, bearer-token auth,
//! connection limits, slow-client timeouts and graceful shutdown.
//!
//! [`incoming`] accepts TCP connections (at most `max_connections` open), completes TLS
//! handshakes concurrently under the header timeout, and hands ready [`Conn`]s to
//! [`serve_http`] (axum routers) or to tonic via [`conn_stream`].

pub mod auth;
pub mod tls;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use lookout_config::ConnectionLimits;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub use self::auth::Tokens;
pub use self::tls::ReloadingTls;

/// Self-metrics of one listener.
#[derive(Clone)]
pub struct ListenerMetrics {
    /// Connections open now.
    pub open_connections: IntGauge,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: IntCounter,
    /// Requests refused for a missing or wrong bearer token.
    pub unauthenticated: IntCounter,
}

/// The listener metric families, registered once per process.
#[derive(Clone)]
pub struct ListenerMetricsVec {
    open: prometheus::IntGaugeVec,
    tls: prometheus::IntCounterVec,
    auth: prometheus::IntCounterVec,
}

impl ListenerMetricsVec {
    /// Register `PREFIX_listener_open_connections`, `PREFIX_tls_handshake_failures_total`
    /// and `PREFIX_unauthenticated_requests_total`, each by `listener`.
    pub fn register(registry: &prometheus::Registry, prefix: &str) -> prometheus::Result<Self> {
        let open = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                format!("{prefix}_listener_open_connections"),
                "Connections open now, by listener.",
            ),
            &["listener"],
        )?;
        let tls = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                format!("{prefix}_tls_handshake_failures_total"),
                "TLS handshakes that failed or timed out, by listener.",
            ),
            &["listener"],
        )?;
        let auth = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                format!("{prefix}_unauthenticated_requests_total"),
                "Requests refused for a missing or wrong bearer token, by listener.",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(tls.clone()))?;
        registry.register(Box::new(auth.clone()))?;
        Ok(Self { open, tls, auth })
    }

    /// The metrics of listener `name` (a fixed name, never request data).
    pub fn listener(&self, name: &'static str) -> ListenerMetrics {
        ListenerMetrics {
            open_connections: self.open.with_label_values(&[name]),
            tls_handshake_failures: self.tls.with_label_values(&[name]),
            unauthenticated: self.auth.with_label_values(&[name]),
        }
    }
}

/// A listener that could not be bound: which one, where, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {what} on {addr}")]
pub struct BindError {
    /// What the listener serves, e.g. `OTLP/gRPC`.
    pub what: &'static str,
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why the operating system refused.
    pub source: io::Error,
}

/// Binds `addr`; `what` names the listener in the error.
pub async fn bind_listener(addr: SocketAddr, what: &'static str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { what, addr, source })
}

/// The three listeners of a server binary (collector or agent), bound before start-up so
/// that tests can bind port 0 and read the addresses back.
pub struct ServerListeners {
    /// OTLP/gRPC.
    pub grpc: TcpListener,
    /// OTLP/HTTP.
    pub http: TcpListener,
    /// The binary's own HTTP API (the collector's query API, the agent's `/metrics`).
    pub api: TcpListener,
}

impl ServerListeners {
    /// Binds OTLP/gRPC on `grpc`, OTLP/HTTP on `http` and the binary's HTTP API on `api`;
    /// `api_name` is what an error calls the last one.
    pub async fn bind(
        grpc: SocketAddr,
        http: SocketAddr,
        api: SocketAddr,
        api_name: &'static str,
    ) -> Result<Self, BindError> {
        Ok(Self {
            grpc: bind_listener(grpc, "OTLP/gRPC").await?,
            http: bind_listener(http, "OTLP/HTTP").await?,
            api: bind_listener(api, api_name).await?,
        })
    }

    /// The bound addresses (OTLP/gRPC, OTLP/HTTP, API), with the ports that port 0 got.
    pub fn local_addrs(&self) -> io::Result<(SocketAddr, SocketAddr, SocketAddr)> {
        Ok((
            self.grpc.local_addr()?,
            self.http.local_addr()?,
            self.api.local_addr()?,
        ))
    }
}

/// What a listener does besides accepting.
#[derive(Clone)]
pub struct ListenerSetup {
    /// Name in logs (`otlp_grpc`, `otlp_http`, `api`).
    pub name: &'static str,
    /// TLS, or plain TCP.
    pub tls: Option<Arc<ReloadingTls>>,
    /// Connection limits.
    pub limits: ConnectionLimits,
    /// Self-metrics.
    pub metrics: ListenerMetrics,
}

/// The byte stream of an accepted connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted (and, with TLS, handshaken) connection; holds one of the listener's
/// connection slots until dropped.
pub struct Conn {
    stream: Stream,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    _slot: Slot,
    /// Fires when the connection has been silent too long: `header_read_timeout` before
    /// its first byte, `idle_timeout` after any later byte.
    silence: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
}

struct Slot {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Conn {
    fn new(
        stream: Stream,
        local: Option<SocketAddr>,
        remote: SocketAddr,
        slot: Slot,
        limits: &ConnectionLimits,
    ) -> Self {
        Self {
            stream,
            local,
            remote: Some(remote),
            _slot: slot,
            silence: Box::pin(tokio::time::sleep(limits.header_read_timeout.get())),
            idle_timeout: limits.idle_timeout.get(),
        }
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote
    }

    fn heard(&mut self) {
        let deadline = tokio::time::Instant::now() + self.idle_timeout;
        self.silence.as_mut().reset(deadline);
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        match r {
            Poll::Ready(Ok(())) if buf.filled().len() > before => self.heard(),
            Poll::Pending if self.silence.as_mut().poll(cx).is_ready() => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection silent for too long",
                )));
            }
            _ => {}
        }
        r
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.heard();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        };
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.heard();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.local,
            remote_addr: self.remote,
        }
    }
}

/// Accept connections on `listener` until `shutdown`; ready connections arrive on the
/// returned channel. At most `max_connections` are open at once (the rest wait in the
/// kernel's queue), and a TLS handshake must finish within `header_read_timeout`.
pub fn incoming(
    listener: TcpListener,
    setup: ListenerSetup,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Conn> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(setup.limits.max_connections));
    let local = listener.local_addr().ok();
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                () = shutdown.cancelled() => return,
            };
            let (tcp, remote) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving the others.
                        tracing::warn!(listener = setup.name, error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => return,
            };
            let _ = tcp.set_nodelay(true);
            setup.metrics.open_connections.inc();
            let slot = Slot {
                _permit: permit,
                open: setup.metrics.open_connections.clone(),
            };
            match &setup.tls {
                None => {
                    let conn = Conn::new(Stream::Plain(tcp), local, remote, slot, &setup.limits);
                    if tx.send(conn).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                    let tx = tx.clone();
                    let limits = setup.limits.clone();
                    let timeout = limits.header_read_timeout.get();
                    let (name, failures) =
                        (setup.name, setup.metrics.tls_handshake_failures.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => {
                                let conn = Conn::new(
                                    Stream::Tls(Box::new(s)),
                                    local,
                                    remote,
                                    slot,
                                    &limits,
                                );
                                let _ = tx.send(conn).await;
                            }
                            Ok(Err(e)) => {
                                failures.inc();
                                tracing::debug!(listener = name, %remote, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                failures.inc();
                                tracing::debug!(listener = name, %remote, "TLS handshake timed out");
                            }
                        }
                    });
                }
            }
        }
    });
    rx
}

/// The connections of `rx` as the stream tonic's `serve_with_incoming` takes.
pub fn conn_stream(
    rx: mpsc::Receiver<Conn>,
) -> impl futures::Stream<Item = io::Result<Conn>> + Send + 'static {
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) },
    )
}

/// Serve `router` over HTTP/1.1 and HTTP/2 on the connections of `conns` until
/// `shutdown`, then let in-flight requests finish for up to `grace`.
pub async fn serve_http(
    mut conns: mpsc::Receiver<Conn>,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    grace: Duration,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.get());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let conn = tokio::select! {
            c = conns.recv() => match c { Some(c) => c, None => break },
            () = shutdown.cancelled() => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(conn), service)
            .into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(conns);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "HTTP connections still open after the shutdown grace period; closing them"
        );
    }
}
