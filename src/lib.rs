//! Wick: an OpenAI-compatible inference server on candle.
//!
//! Request flow (see DESIGN.md): `api` (auth, parse, validate, template, tokenize) -> `deploy` (find
//! the deployment, load it on first use) -> `engine` (queue, continuous batching, sampling) ->
//! `arch` (the batched model forward) -> events back to `api` as one JSON body or an event stream.

pub mod api;
pub mod arch;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod deploy;
pub mod engine;
pub mod error;
pub mod loader;
pub mod pull;

use std::sync::Arc;

/// Reported as `system_fingerprint`: which build answered.
pub const SYSTEM_FINGERPRINT: &str = concat!("wick-", env!("CARGO_PKG_VERSION"));

#[derive(Clone)]
pub struct AppState {
    pub deployments: Arc<deploy::Deployments>,
    pub keys: Arc<auth::ApiKeys>,
}

pub fn app(state: AppState) -> axum::Router {
    api::router(state)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `wick serve`: pulls missing catalog models, binds, serves until Ctrl-C or SIGTERM.
pub async fn serve(args: config::ServeArgs) -> anyhow::Result<()> {
    let keys = args.all_api_keys()?;
    args.check_exposure(!keys.is_empty())?;
    let specs = args.deployments()?;
    for spec in &specs {
        if let loader::ModelSource::Catalog(entry) = &spec.source {
            if !entry.is_pulled() {
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
    let state =
        AppState { deployments: Arc::new(deploy::Deployments::new(specs)?), keys: Arc::new(auth::ApiKeys::new(&keys)) };
    let addr = std::net::SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("bind {addr}: {e}"))?;
    let names: Vec<&str> = state.deployments.iter().map(|d| d.name()).collect();
    tracing::info!(%addr, models = ?names, auth = !keys.is_empty(), "listening");
    eprintln!("wick: serving {} on http://{addr}", names.join(", "));
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
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
