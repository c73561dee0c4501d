//! Accepting and serving HTTP/1.1 connections.
//!
//! `axum::serve` hands every connection to hyper-util's protocol-detecting builder, which first
//! reads up to 24 bytes to tell HTTP/2's preface from HTTP/1, and gives hyper those bytes back as
//! a separate first read. That short first read makes hyper's read buffer grow from 8 to 16 KiB
//! on every connection, and an idle long-poll holds its buffer for the whole wait
//! (BENCHMARKS.md, idle connections). Matrix clients speak HTTP/1.1 to a homeserver (or to the
//! reverse proxy in front of it), so connections are served as HTTP/1.1 directly.

use std::{io, time::Duration};

use axum::{
    extract::{ConnectInfo, Request},
    Router,
};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
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
        let app = app.clone();
        // The client's address, for `ConnectInfo` (rate limits, the device's last-seen IP).
        let service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            app.clone().oneshot(request)
        });
        let connection = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
        let (mut stopped, open) = (stopped.clone(), open.clone());
        tokio::spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => log_end(result),
                _ = stop_requested(&mut stopped) => {
                    connection.as_mut().graceful_shutdown();
                    log_end(connection.await);
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open);
    all_closed.closed().await;
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
