//! Ordered graceful shutdown: on SIGTERM or SIGINT, health flips to NOT_SERVING, background work
//! is asked to stop and drained (with a grace period), then the servers stop accepting and
//! finish in-flight requests.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called, not
/// when the future is first polled: a process calls it before it binds its listeners, so a
/// signal sent as soon as the port answers is a graceful shutdown, never the default action
/// (SIGTERM would kill the process outright).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (terminate, interrupt) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
        async move {
            tokio::select! {
                () = received(terminate, "SIGTERM") => tracing::info!("received SIGTERM, shutting down"),
                () = received(interrupt, "SIGINT") => tracing::info!("received SIGINT, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("received Ctrl-C, shutting down"),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Waits for one signal on `stream` (forever when its handler could not be installed).
#[cfg(unix)]
async fn received(stream: std::io::Result<tokio::signal::unix::Signal>, name: &'static str) {
    match stream {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for {name}");
            std::future::pending::<()>().await;
        }
    }
}

/// Coordinates the background tasks of a process: they watch [`Shutdown::token`] and are
/// spawned on [`Shutdown::tracker`], so shutdown can wait for them.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    /// A fresh coordinator.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token background work watches to know it must stop.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// The tracker background tasks are spawned on.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Asks background work to stop and waits up to `grace` for it. Returns false if the grace
    /// period ran out first.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        let drained = tokio::time::timeout(grace, self.tracker.wait()).await.is_ok();
        if !drained {
            tracing::warn!(tasks = self.tracker.len(), "background tasks still running after the grace period");
        }
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_tasks_that_watch_the_token() {
        let shutdown = Shutdown::new();
        let token = shutdown.token();
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&finished);
        shutdown.tracker().spawn(async move {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        assert!(shutdown.drain(Duration::from_secs(5)).await);
        assert!(finished.load(std::sync::atomic::Ordering::SeqCst));
        assert!(shutdown.is_shutting_down());
    }

    #[tokio::test]
    async fn drain_gives_up_after_the_grace_period() {
        let shutdown = Shutdown::new();
        shutdown.tracker().spawn(std::future::pending::<()>());
        assert!(!shutdown.drain(Duration::from_millis(10)).await);
    }
}
