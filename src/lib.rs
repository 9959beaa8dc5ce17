//! Wick: an OpenAI-compatible inference server on candle.
//!
//! Request flow (see DESIGN.md): `api` (auth, parse, validate, template, tokenize) -> `deploy` (find
//! the deployment, load it on first use) -> `engine` (queue, continuous batching, sampling) ->
//! `arch` (the batched model forward) -> events back to `api` as one JSON body or an event stream.

pub mod api;
pub mod arch;
pub mod audio;
pub mod auth;
pub mod catalog;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod deploy;
pub mod engine;
pub mod kv;
pub mod loader;
pub mod memory;
pub mod metrics;
pub mod probe;
pub mod pull;
pub mod tool_calls;
pub mod voice;

use std::sync::Arc;

/// The largest |a - b| over two equal-length runs of values, for tests; infinite where either side
/// holds a NaN. A fold over `f32::max` skips NaNs, so output that was never written (or blew up)
/// would pass every tolerance.
#[cfg(test)]
pub(crate) fn max_abs_diff<'a>(a: impl IntoIterator<Item = &'a f32>, b: impl IntoIterator<Item = &'a f32>) -> f32 {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| if x.is_nan() || y.is_nan() { f32::INFINITY } else { (x - y).abs() })
        .fold(0.0, f32::max)
}

/// Reported as `system_fingerprint`: which build answered.
pub const SYSTEM_FINGERPRINT: &str = concat!("wick-", env!("CARGO_PKG_VERSION"));

#[derive(Clone)]
pub struct AppState {
    pub deployments: Arc<deploy::Deployments>,
    pub keys: Arc<auth::Keys>,
}

pub fn app(state: AppState) -> axum::Router {
    api::router(state)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// How often cumulative usage is written to the store (and once more at shutdown).
const USAGE_SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// `wick serve`: pulls missing catalog models, opens the store, binds, serves until Ctrl-C or SIGTERM.
pub async fn serve(args: config::ServeArgs) -> anyhow::Result<()> {
    let keys = args.keys()?;
    args.check_exposure(keys.iter().any(|k| k.role == auth::Role::Inference))?;
    let defaults = args.defaults()?;
    let specs = args.deployments(&defaults)?;
    for spec in &specs {
        if let loader::ModelSource::Catalog(entry) = &spec.source {
            if pull::missing(entry) {
                if args.no_pull {
                    anyhow::bail!(
                        "`{}` is not pulled and --no-pull was given: run `wick pull {}`",
                        entry.name,
                        entry.name
                    );
                }
                let entry = entry.clone();
                tokio::task::spawn_blocking(move || pull::pull(&entry, true)).await??;
            }
        }
    }
    let data_dir = args.data_dir();
    let store = deploy::store::Store::open(&data_dir)?;
    let deployments =
        Arc::new(deploy::Deployments::open(specs, Some(store), defaults, Arc::new(metrics::Metrics::default()))?);
    let state = AppState { deployments: deployments.clone(), keys: Arc::new(auth::Keys::new(keys)) };
    let addr = std::net::SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("bind {addr}: {e}"))?;
    let names: Vec<String> = deployments.all().iter().map(|d| d.name().to_string()).collect();
    tracing::info!(%addr, models = ?names, data_dir = %data_dir.display(), auth = !state.keys.is_empty(), "listening");
    eprintln!("wick: serving {} on http://{addr}", names.join(", "));

    let saver = deployments.clone();
    let save_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(USAGE_SAVE_INTERVAL);
        loop {
            tick.tick().await;
            save_usage(&saver).await;
        }
    });
    axum::serve(no_delay(listener), app(state)).with_graceful_shutdown(shutdown_signal()).await?;
    save_task.abort();
    save_usage(&deployments).await;
    Ok(())
}

/// Every accepted connection with Nagle's algorithm off. A token stream is many small writes on a
/// connection the client keeps alive; with Nagle on, each write after the first waits for the
/// client's delayed ACK, ~40 ms on Linux (measured: time to first token 43 ms instead of 2 ms on a
/// kept-alive connection, BENCHMARKS.md).
pub fn no_delay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn set(tcp: &mut tokio::net::TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not turn off Nagle's algorithm on a connection");
        }
    }
    listener.tap_io(set as fn(&mut tokio::net::TcpStream))
}

async fn save_usage(deployments: &Arc<deploy::Deployments>) {
    let d = deployments.clone();
    match tokio::task::spawn_blocking(move || d.save_usage()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "saving usage failed"),
        Err(e) => tracing::error!(error = %e, "saving usage panicked"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
