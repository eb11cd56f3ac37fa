//! Server TLS from PEM files, reloaded when the files change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use lookout_config::TlsConfig;
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;

/// Why the TLS settings of a listener cannot be used; names the config key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("key `{key}`: cannot read {}: {source}", path.display())]
    Read {
        /// Dotted config key.
        key: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item, or rustls refused it.
    #[error("key `{key}`: {}: {reason}", path.display())]
    Invalid {
        /// Dotted config key.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Modification time and length of each file, to notice replacements.
type Stamps = Vec<Option<(SystemTime, u64)>>;

/// The TLS configuration of a listener, swapped in place when its files change so new
/// handshakes use the new certificate while established connections keep theirs.
pub struct ReloadingTls {
    cfg: TlsConfig,
    prefix: String,
    state: RwLock<(Arc<ServerConfig>, Stamps)>,
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("cert_file", &self.cfg.cert_file)
            .finish_non_exhaustive()
    }
}

impl ReloadingTls {
    /// Load the files of `cfg`; `prefix` (e.g. `otlp.tls`) names keys in errors.
    pub fn load(cfg: &TlsConfig, prefix: &str) -> Result<Arc<Self>, TlsError> {
        let stamp = stamps(cfg);
        let server = build(cfg, prefix)?;
        Ok(Arc::new(Self {
            cfg: cfg.clone(),
            prefix: prefix.to_string(),
            state: RwLock::new((Arc::new(server), stamp)),
        }))
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.state.read().0.clone()
    }

    /// Reload when a file changed; `Ok(true)` when a new configuration is in use. On an
    /// error the previous configuration stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.cfg);
        if now == self.state.read().1 {
            return Ok(false);
        }
        let built = build(&self.cfg, &self.prefix);
        let mut state = self.state.write();
        // Remember the stamp even on failure so a broken file is reported once per change.
        state.1 = now;
        state.0 = Arc::new(built?);
        Ok(true)
    }

    /// Check the files every `reload_interval` and on SIGHUP until `shutdown`.
    pub fn spawn_watcher(self: &Arc<Self>, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.cfg.reload_interval.get());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            #[cfg(unix)]
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(h) => {
                            h.recv().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<()>();
                tokio::select! {
                    _ = tick.tick() => {}
                    () = hangup => {}
                    () = shutdown.cancelled() => return,
                }
                match this.reload_if_changed() {
                    Ok(true) => tracing::info!(
                        config = %this.prefix,
                        cert_file = %this.cfg.cert_file.display(),
                        "TLS certificate reloaded"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::error!(
                        config = %this.prefix,
                        error = %e,
                        "TLS files changed but cannot be loaded; the previous certificate stays in use"
                    ),
                }
            }
        });
    }
}

fn stamps(cfg: &TlsConfig) -> Stamps {
    [
        Some(&cfg.cert_file),
        Some(&cfg.key_file),
        cfg.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    })
    .collect()
}

fn read(path: &Path, key: String) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// The PEM certificates of `path`.
pub fn load_certs(path: &Path, key: String) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, key.clone())?;
    let invalid = |reason: String| TlsError::Invalid {
        key: key.clone(),
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// The PEM private key of `path`.
pub fn load_key(path: &Path, key: String) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path, key.clone())?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Invalid {
        key,
        path: path.to_path_buf(),
        reason: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })
}

/// The crypto provider of every TLS endpoint (explicit, so the process-wide default
/// does not matter).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn build(cfg: &TlsConfig, prefix: &str) -> Result<ServerConfig, TlsError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let certs = load_certs(&cfg.cert_file, key("cert_file"))?;
    let private = load_key(&cfg.key_file, key("key_file"))?;
    let versions: &[&rustls::SupportedProtocolVersion] = if cfg.min_version == "1.3" {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12, &rustls::version::TLS13]
    };
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Invalid {
            key: key("min_version"),
            path: cfg.cert_file.clone(),
            reason: e.to_string(),
        })?;
    let builder = match &cfg.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let invalid = |reason: String| TlsError::Invalid {
                key: key("client_ca_file"),
                path: ca.clone(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for c in load_certs(ca, key("client_ca_file"))? {
                roots
                    .add(c)
                    .map_err(|e| invalid(format!("bad CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(certs, private)
        .map_err(|e| TlsError::Invalid {
            key: key("key_file"),
            path: cfg.key_file.clone(),
            reason: format!("does not match the certificate or is unusable: {e}"),
        })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}
