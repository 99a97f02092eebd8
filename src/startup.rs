//! Bind, then serve: building the application takes its listening socket
//! (inherited from systemd, or bound from the configuration) and reports the
//! address; running it serves until a shutdown signal, then drains.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::filters;
use crate::handlers::State;
use crate::metrics::Metrics;

/// A bound, not yet serving, sortd.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<State>,
    socket_activated: bool,
}

impl Application {
    /// Takes the socket systemd passed (`LISTEN_FDS`), or binds
    /// `config.listen` (port 0 picks a free port).
    pub async fn build(config: Config) -> io::Result<Self> {
        let inherited = listenfd::ListenFd::from_env().take_tcp_listener(0)?;
        let socket_activated = inherited.is_some();
        let listener = match inherited {
            Some(listener) => {
                listener.set_nonblocking(true)?;
                TcpListener::from_std(listener)?
            }
            None => TcpListener::bind(config.listen).await?,
        };
        let local_addr = listener.local_addr()?;
        let state = Arc::new(State {
            config,
            metrics: Arc::new(Metrics::default()),
        });
        Ok(Application {
            listener,
            local_addr,
            state,
            socket_activated,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether the socket came from systemd rather than from `SORTD_LISTEN`.
    pub fn socket_activated(&self) -> bool {
        self.socket_activated
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets requests
    /// in flight finish for at most the configured drain time, and returns.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let drain = self.state.config.drain_timeout;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = warp::serve(filters::app(self.state))
            .incoming(self.listener)
            .graceful(async {
                stopped.await.ok();
            })
            .run();
        tokio::pin!(server);
        tokio::select! {
            () = &mut server => return,
            () = shutdown => {}
        }
        log::info!("shutting down: no new connections, draining for up to {drain:?}");
        stop.send(()).ok();
        if tokio::time::timeout(drain, server).await.is_err() {
            log::warn!("drain time over: closing the connections still open");
        }
    }
}
