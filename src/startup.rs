//! Bind, then serve: building the application takes its listening socket
//! (inherited from systemd, TCP or unix, or bound from the configuration) and
//! reports the address; running it serves until a shutdown signal, then
//! drains.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};

use crate::budget::Budget;
use crate::config::Config;
use crate::filters;
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
        let drain = self.state.config.drain_timeout;
        let trimming = tokio::spawn(
            Arc::clone(&self.state.budget).trim_when_idle(std::time::Duration::from_secs(1)),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = filters::app(self.state);
        let stopped = async {
            stopped.await.ok();
        };
        // warp's acceptor trait is private, so one arm per listener kind.
        let mut server: Pin<Box<dyn Future<Output = ()> + Send>> = match self.listener {
            Listener::Tcp(listener) => {
                Box::pin(warp::serve(app).incoming(listener).graceful(stopped).run())
            }
            Listener::Unix(listener) => {
                Box::pin(warp::serve(app).incoming(listener).graceful(stopped).run())
            }
        };
        tokio::select! {
            () = &mut server => {
                trimming.abort();
                return;
            }
            () = shutdown => {}
        }
        log::info!("shutting down: no new connections, draining for up to {drain:?}");
        stop.send(()).ok();
        if tokio::time::timeout(drain, server).await.is_err() {
            log::warn!("drain time over: closing the connections still open");
        }
        trimming.abort();
    }
}
