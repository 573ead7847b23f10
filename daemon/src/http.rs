//! The HTTP servers' accept loop (tracker API, node admin endpoint, client gateway): HTTP/1.1
//! with keep-alive, optional TLS, and the limits an endpoint on a network needs.
//!
//! Laws:
//! - A connection must send a request's headers within `header_read_timeout` of opening,
//!   and of the last answer while kept alive; otherwise it is closed. A client that sends
//!   headers slowly, or opens a connection and says nothing, holds a socket for at most that
//!   long. (axum's own `serve` sets no such timeout.)
//! - At most `max_connections` connections are open at once, and at most
//!   `max_connections_per_ip` from one address; past either cap a new connection is closed
//!   at once, before anything is read. One address cannot take every socket.
//! - A TLS handshake must finish within `header_read_timeout`.
//! - Each request carries its peer address as axum's `ConnectInfo<SocketAddr>`.
//! - Shutdown stops accepting, lets requests under way finish for up to the grace period,
//!   then drops the rest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::net::TcpListener;

/// Limits of an HTTP endpoint.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest wait for a request's headers, from a connection's start or its last answer
    /// (10 s: a real client sends its headers in one packet).
    pub header_read_timeout: Duration,
    /// Connections open at once (4096: well under a default `ulimit -n` of a service).
    pub max_connections: usize,
    /// Connections open at once from one address (256: a NAT of many users, not more).
    pub max_connections_per_ip: usize,
    /// Serve HTTPS with this configuration; `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long requests under way may take to finish at shutdown (5 s).
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_ip: 256,
            tls: None,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Connections open, in all and per address.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A connection's place under the caps, given back when it ends.
struct Admitted {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut o = self.open.lock();
        o.total = o.total.saturating_sub(1);
        if let Some(n) = o.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                o.per_ip.remove(&self.ip);
            }
        }
    }
}

fn admit(open: &Arc<Mutex<Open>>, ip: IpAddr, opts: &ServeOptions) -> Option<Admitted> {
    let mut o = open.lock();
    let mine = o.per_ip.get(&ip).copied().unwrap_or(0);
    if o.total >= opts.max_connections || mine >= opts.max_connections_per_ip {
        return None;
    }
    o.total += 1;
    *o.per_ip.entry(ip).or_default() += 1;
    Some(Admitted {
        open: open.clone(),
        ip,
    })
}

/// Loads a TLS server configuration (aws-lc-rs, the provider QUIC uses) from a PEM
/// certificate chain and a PEM private key.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &std::path::Path, reason: String| TlsError::Read {
        path: p.to_path_buf(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(read(cert, "no certificate in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| read(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Why a TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file is unreadable or holds no usable PEM.
    #[error("{}: {reason}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificate and key.
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// Serves `router` on `listener` under `opts` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of sockets or a transient error: back off a little, as axum does.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = admit(&open, peer.ip(), &opts) else {
            tracing::debug!(%peer, "connection refused: too many open");
            drop(tcp);
            continue;
        };
        // Small answers must not wait for a delayed ACK (Nagle).
        let _ = tcp.set_nodelay(true);
        let service = router.clone().layer(axum::Extension(ConnectInfo(peer)));
        let watcher = graceful.watcher();
        let (acceptor, timeout) = (acceptor.clone(), opts.header_read_timeout);
        tokio::spawn(async move {
            let _admitted = admitted;
            match acceptor {
                None => serve_connection(tcp, service, timeout, watcher).await,
                Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => serve_connection(tls, service, timeout, watcher).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(opts.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("requests still under way at shutdown were dropped");
    }
}

/// Serves one connection with the header-read timeout, until it ends or shutdown.
async fn serve_connection<I>(
    io: I,
    service: axum::Router,
    header_read_timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(conn).await {
        tracing::trace!(error = %e, "connection ended");
    }
}

/// Marks a request that came through a local Unix socket (see [`serve_unix`]).
#[derive(Debug, Clone, Copy)]
pub struct LocalSocket;

/// Serves `router` on the Unix socket `listener` until `shutdown`, each request marked
/// [`LocalSocket`]: who may connect is decided by the socket file's permissions.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    router: axum::Router,
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let router = router.layer(axum::Extension(LocalSocket));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "accept on the local socket failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (service, watcher) = (router.clone(), graceful.watcher());
        tokio::spawn(serve_connection(
            stream,
            service,
            opts.header_read_timeout,
            watcher,
        ));
    }
    drop(listener);
    let _ = tokio::time::timeout(opts.shutdown_grace, graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_address_and_in_all_and_free_on_drop() {
        let open = Arc::new(Mutex::new(Open::default()));
        let opts = ServeOptions {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..ServeOptions::default()
        };
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let a1 = admit(&open, a, &opts).unwrap();
        let _a2 = admit(&open, a, &opts).unwrap();
        assert!(admit(&open, a, &opts).is_none(), "a third from one address");
        let _b1 = admit(&open, b, &opts).unwrap();
        assert!(admit(&open, b, &opts).is_none(), "a fourth in all");
        drop(a1);
        assert!(
            admit(&open, b, &opts).is_some(),
            "room again once one closed"
        );
        assert_eq!(open.lock().per_ip.len(), 2);
    }
}
