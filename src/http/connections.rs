//! Accepting and serving HTTP/1.1 connections.
//!
//! `axum::serve` hands every connection to hyper-util's protocol-detecting builder, which first
//! reads up to 24 bytes to tell HTTP/2's preface from HTTP/1, and gives hyper those bytes back as
//! a separate first read. That short first read makes hyper's read buffer grow from 8 to 16 KiB
//! on every connection, and an idle long-poll holds its buffer for the whole wait
//! (BENCHMARKS.md, idle connections). Matrix clients speak HTTP/1.1 to a homeserver (or to the
//! reverse proxy in front of it), so connections are served as HTTP/1.1 directly.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request},
    Router,
};
use hyper::{
    body::Incoming,
    server::conn::http1::{self, UpgradeableConnection},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::{net::TcpListener, sync::watch};
use tower::ServiceExt;

/// Serves `app` on `listener` until `stopped` turns true; then stops accepting, lets every
/// connection finish the request it is answering, and returns once all are closed.
pub async fn serve(listener: TcpListener, app: Router, mut stopped: watch::Receiver<bool>) {
    let http = http1::Builder::new();
    // Every connection task holds a receiver; all of them gone means all connections closed.
    let (all_closed, open) = watch::channel(());
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    wait_after_accept_error(e).await;
                    continue;
                }
            },
            _ = stop_requested(&mut stopped) => break,
        };
        send_without_delay(&stream);
        let app = app.clone();
        // The client's address, for `ConnectInfo` (rate limits, the device's last-seen IP).
        let service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            app.clone().oneshot(request)
        });
        let connection = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
        let mut stopped = stopped.clone();
        tokio::spawn(ServedConnection {
            connection,
            stop: async move { stop_requested(&mut stopped).await },
            stopping: false,
            _open: open.clone(),
        });
    }
    drop(listener);
    drop(open);
    all_closed.closed().await;
}

pin_project! {
    /// One connection's task: the connection, shut down gracefully once the server stops. A
    /// future of its own rather than an `async` block, which would hold the connection twice (the
    /// captured one and the pinned one it is moved into): about 0.9 KiB more for every idle
    /// connection (BENCHMARKS.md, idle connections).
    struct ServedConnection<C, S> {
        #[pin]
        connection: C,
        #[pin]
        stop: S,
        stopping: bool,
        // Every connection task holds a receiver; all of them gone means all connections closed.
        _open: watch::Receiver<()>,
    }
}

// The bounds are those under which hyper offers `graceful_shutdown`.
impl<I, Svc, B, S> Future for ServedConnection<UpgradeableConnection<I, Svc>, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    Svc: hyper::service::HttpService<Incoming, ResBody = B>,
    Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S: Future<Output = ()>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if !*this.stopping && this.stop.poll(cx).is_ready() {
            *this.stopping = true;
            this.connection.as_mut().graceful_shutdown();
        }
        this.connection.poll(cx).map(log_end)
    }
}

async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // A closed channel (the server dropped) means stop as well.
    let _ = stopped.wait_for(|stop| *stop).await;
}

fn log_end(result: hyper::Result<()>) {
    if let Err(e) = result {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// A client that gave up before its connection was accepted is no reason to wait. Anything else
/// (most often the process's open-file limit) is, or the loop would spin on it.
async fn wait_after_accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "cannot accept connections; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// As `axum::serve` does: a response or WebSocket frame written while an earlier small write
/// awaits its ACK must not wait for that ACK (Nagle's algorithm; a delayed ACK takes up to 40 ms).
fn send_without_delay(stream: &tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap(), "sockets start with Nagle's algorithm on");
        send_without_delay(&accepted);
        assert!(accepted.nodelay().unwrap());
    }
}
