//! Bind, then serve: building the application takes its listening socket
//! (inherited from systemd, TCP or unix, or bound from the configuration) and
//! reports the address; running it serves until a shutdown signal, then
//! drains.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tower_service::Service;

use crate::budget::Budget;
use crate::config::Config;
use crate::filters::{self, Peer};
use crate::handlers::State;
use crate::metrics::Metrics;

/// A bound, not yet serving, sortd.
pub struct Application {
    listener: Listener,
    state: Arc<State>,
    socket_activated: bool,
}

/// The socket sortd serves: TCP, or a unix socket from systemd (what the
/// package uses: nginx on the same host reaches it without TCP's cost).
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Application {
    /// Takes the socket systemd passed (`LISTEN_FDS`), or binds
    /// `config.listen` (port 0 picks a free port).
    pub async fn build(config: Config) -> io::Result<Self> {
        let mut inherited = listenfd::ListenFd::from_env();
        // A socket of the wrong kind stays in place, so try one kind, then the other.
        let listener = match inherited.take_tcp_listener(0) {
            Ok(Some(listener)) => {
                listener.set_nonblocking(true)?;
                Some(Listener::Tcp(TcpListener::from_std(listener)?))
            }
            Ok(None) => None,
            Err(_) => match inherited.take_unix_listener(0)? {
                Some(listener) => {
                    listener.set_nonblocking(true)?;
                    Some(Listener::Unix(UnixListener::from_std(listener)?))
                }
                None => None,
            },
        };
        let socket_activated = listener.is_some();
        let listener = match listener {
            Some(listener) => listener,
            None => Listener::Tcp(TcpListener::bind(config.listen).await?),
        };
        let state = Arc::new(State {
            budget: Arc::new(Budget::new(config.max_inflight_bytes, config.busy_wait)),
            config,
            metrics: Arc::new(Metrics::default()),
        });
        Ok(Application {
            listener,
            state,
            socket_activated,
        })
    }

    /// The TCP address served; `None` for a unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Listener::Tcp(listener) => listener.local_addr().ok(),
            Listener::Unix(_) => None,
        }
    }

    /// Where sortd listens, for people: `http://127.0.0.1:5000` or
    /// `unix:/run/sortd/sortd.sock`.
    pub fn describe_address(&self) -> String {
        match &self.listener {
            Listener::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|_| "tcp".to_owned(), |addr| format!("http://{addr}")),
            Listener::Unix(listener) => listener
                .local_addr()
                .ok()
                .and_then(|addr| addr.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix".to_owned()),
        }
    }

    /// Whether the socket came from systemd rather than from `SORTD_LISTEN`.
    pub fn socket_activated(&self) -> bool {
        self.socket_activated
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets requests
    /// in flight finish for at most the configured drain time, and returns.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let config = &self.state.config;
        let drain = config.drain_timeout;
        let mut http = http1::Builder::new();
        // hyper starts this timer whenever it waits for a request's head:
        // on a new connection and after each answer on a kept-alive one. So
        // it is both the header read timeout and the idle timeout.
        http.timer(TokioTimer::new())
            .header_read_timeout(config.idle_timeout);
        let trimming = tokio::spawn(Arc::clone(&self.state.budget).trim_when_idle(
            std::time::Duration::from_secs(1),
            self.state.metrics.memory_trims(),
        ));
        let service = warp::service(filters::app(Arc::clone(&self.state)));
        let connections = GracefulShutdown::new();
        let mut shutdown = pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            match accepted {
                Ok(Connection::Tcp(stream, peer)) => {
                    serve(&http, &connections, stream, Some(peer), service.clone());
                }
                Ok(Connection::Unix(stream)) => {
                    serve(&http, &connections, stream, None, service.clone());
                }
                // Out of file descriptors, or a connection reset before it
                // was accepted: the listener itself is fine.
                Err(error) => {
                    log::warn!("accepting a connection failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
        drop(self.listener);
        log::info!("shutting down: no new connections, draining for up to {drain:?}");
        if tokio::time::timeout(drain, connections.shutdown())
            .await
            .is_err()
        {
            log::warn!("drain time over: closing the connections still open");
        }
        trimming.abort();
    }
}

/// One accepted connection.
enum Connection {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

impl Listener {
    async fn accept(&self) -> io::Result<Connection> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok(Connection::Tcp(stream, peer))
            }
            Listener::Unix(listener) => Ok(Connection::Unix(listener.accept().await?.0)),
        }
    }
}

/// Serves one connection in a task of its own, watched for a graceful
/// shutdown; the peer address goes into each request's extensions.
fn serve<S, T>(
    http: &http1::Builder,
    connections: &GracefulShutdown,
    stream: S,
    peer: Option<SocketAddr>,
    service: T,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: Service<
            Request<Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    T::Future: Send,
{
    let service = service_fn(move |mut request: Request<Incoming>| {
        if let Some(peer) = peer {
            request.extensions_mut().insert(Peer(peer));
        }
        service.clone().call(request)
    });
    let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            // A client that went away or timed out: routine, not an error.
            log::debug!("connection ended: {error}");
        }
    });
}
