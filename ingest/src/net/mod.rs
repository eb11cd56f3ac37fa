//! Listeners shared by the collector and the agent: TLS with reload, bearer-token auth,
//! connection limits, slow-client timeouts and graceful shutdown.
//!
//! [`incoming`] accepts TCP connections (at most `max_connections` open), completes TLS
//! handshakes concurrently under the header timeout, and hands ready [`Conn`]s to
//! [`serve_http`] (axum routers) or to tonic via [`conn_stream`].

pub mod auth;
mod frames;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use lookout_config::ConnectionLimits;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub use self::auth::Tokens;
use self::frames::FrameWatch;
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
    /// Connections closed as accepted: their address had `max_connections_per_address`.
    pub refused_connections: IntCounter,
    /// Connections closed for silence, or for a frame, header block or request headers
    /// not finished within `header_read_timeout`.
    pub timed_out_connections: IntCounter,
}

/// The listener metric families, registered once per process.
#[derive(Clone)]
pub struct ListenerMetricsVec {
    open: prometheus::IntGaugeVec,
    tls: prometheus::IntCounterVec,
    auth: prometheus::IntCounterVec,
    refused: prometheus::IntCounterVec,
    timed_out: prometheus::IntCounterVec,
}

impl ListenerMetricsVec {
    /// Register `PREFIX_listener_open_connections`, `PREFIX_tls_handshake_failures_total`,
    /// `PREFIX_unauthenticated_requests_total`, `PREFIX_listener_refused_connections_total`
    /// and `PREFIX_listener_timed_out_connections_total`, each by `listener`.
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
        let refused = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                format!("{prefix}_listener_refused_connections_total"),
                "Connections closed as they were accepted because their address had \
                 max_connections_per_address open, by listener.",
            ),
            &["listener"],
        )?;
        let timed_out = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                format!("{prefix}_listener_timed_out_connections_total"),
                "Connections closed for silence, or for request headers, an HTTP/2 frame or \
                 header block not finished within header_read_timeout, by listener.",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(tls.clone()))?;
        registry.register(Box::new(auth.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(timed_out.clone()))?;
        Ok(Self {
            open,
            tls,
            auth,
            refused,
            timed_out,
        })
    }

    /// The metrics of listener `name` (a fixed name, never request data).
    pub fn listener(&self, name: &'static str) -> ListenerMetrics {
        ListenerMetrics {
            open_connections: self.open.with_label_values(&[name]),
            tls_handshake_failures: self.tls.with_label_values(&[name]),
            unauthenticated: self.auth.with_label_values(&[name]),
            refused_connections: self.refused.with_label_values(&[name]),
            timed_out_connections: self.timed_out.with_label_values(&[name]),
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
    /// Fires when the peer is late: `header_read_timeout` after accepting until its first
    /// byte, and after beginning an HTTP/2 frame or header block until it is finished;
    /// `idle_timeout` after any byte either way otherwise.
    silence: Pin<Box<tokio::time::Sleep>>,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// The peer has sent a byte: until then our own writes (HTTP/2 SETTINGS) do not
    /// count as activity.
    heard_from_peer: bool,
    frames: FrameWatch,
    /// Since when the peer has been in the middle of an HTTP/2 frame or header block.
    busy_since: Option<tokio::time::Instant>,
    timed_out: IntCounter,
}

struct Slot {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
    /// The count of the peer's address, given back on drop.
    per_address: Option<(IpAddr, Arc<PerAddress>)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
        if let Some((ip, counts)) = self.per_address.take() {
            counts.release(ip);
        }
    }
}

/// Connections open per peer address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    /// Count one more connection from `ip` unless it has `max` open already.
    fn try_take(&self, ip: IpAddr, max: usize) -> bool {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, ip: IpAddr) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }
}

impl Conn {
    fn new(
        stream: Stream,
        local: Option<SocketAddr>,
        remote: SocketAddr,
        slot: Slot,
        limits: &ConnectionLimits,
        timed_out: IntCounter,
    ) -> Self {
        Self {
            stream,
            local,
            remote: Some(remote),
            _slot: slot,
            silence: Box::pin(tokio::time::sleep(limits.header_read_timeout.get())),
            header_timeout: limits.header_read_timeout.get(),
            idle_timeout: limits.idle_timeout.get(),
            heard_from_peer: false,
            frames: FrameWatch::default(),
            busy_since: None,
            timed_out,
        }
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// Bytes went one way or the other: move the deadline.
    fn heard(&mut self) {
        if !self.heard_from_peer {
            return;
        }
        let deadline = match self.busy_since {
            Some(since) => since + self.header_timeout,
            None => tokio::time::Instant::now() + self.idle_timeout,
        };
        self.silence.as_mut().reset(deadline);
    }

    /// The peer sent `bytes`; `Err` when it is past the deadline of what it began.
    fn heard_from(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.heard_from_peer = true;
        let now = tokio::time::Instant::now();
        let step = self.frames.feed(bytes);
        if step.completed || !step.busy {
            self.busy_since = step.busy.then_some(now);
        } else if self.busy_since.is_none() {
            self.busy_since = Some(now);
        }
        if let Some(since) = self.busy_since {
            if now.duration_since(since) > self.header_timeout {
                return Err(self.late("an HTTP/2 frame or header block took too long"));
            }
        }
        self.heard();
        Ok(())
    }

    fn late(&self, what: &str) -> io::Error {
        self.timed_out.inc();
        io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
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
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let this = &mut *self;
                if let Err(e) = this.heard_from(&buf.filled()[before..]) {
                    return Poll::Ready(Err(e));
                }
            }
            Poll::Pending if self.silence.as_mut().poll(cx).is_ready() => {
                let what = if self.busy_since.is_some() {
                    "an HTTP/2 frame or header block took too long"
                } else {
                    "connection silent for too long"
                };
                return Poll::Ready(Err(self.late(what)));
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
/// kernel's queue), at most `max_connections_per_address` from one IP address (more
/// are closed at once), and a TLS handshake must finish within `header_read_timeout`.
pub fn incoming(
    listener: TcpListener,
    setup: ListenerSetup,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Conn> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(setup.limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let mut refusals_logged = None::<tokio::time::Instant>;
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
            let ip = remote.ip();
            if !per_address.try_take(ip, setup.limits.max_connections_per_address) {
                setup.metrics.refused_connections.inc();
                // One line a minute at most: a flood must not flood the log too.
                if refusals_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    refusals_logged = Some(tokio::time::Instant::now());
                    tracing::warn!(
                        listener = setup.name,
                        address = %ip,
                        max = setup.limits.max_connections_per_address,
                        "closing connections from an address over its connection limit \
                         (max_connections_per_address; counted in \
                         *_listener_refused_connections_total)"
                    );
                }
                drop(tcp);
                continue;
            }
            let _ = tcp.set_nodelay(true);
            setup.metrics.open_connections.inc();
            let slot = Slot {
                _permit: permit,
                open: setup.metrics.open_connections.clone(),
                per_address: Some((ip, per_address.clone())),
            };
            let timed_out = setup.metrics.timed_out_connections.clone();
            match &setup.tls {
                None => {
                    let conn = Conn::new(
                        Stream::Plain(tcp),
                        local,
                        remote,
                        slot,
                        &setup.limits,
                        timed_out,
                    );
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
                                    timed_out,
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
