//! Server settings, as `wick serve` takes them (every flag is also a `WICK_*` environment variable).

use crate::arch::linear::WeightFormat;
use crate::catalog::Catalog;
use crate::deploy::DeploymentSpec;
use crate::engine::scheduler::Limits;
use crate::loader::ModelSource;
use anyhow::{bail, Result};
use clap::Args;
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Address to bind. Without API keys only a loopback address is allowed (see --allow-unauthenticated).
    #[arg(long, env = "WICK_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, env = "WICK_PORT", default_value_t = 8080)]
    pub port: u16,
    /// An API key clients must send as `Authorization: Bearer KEY`. Repeatable; the variable takes a
    /// comma-separated list.
    #[arg(long = "api-key", env = "WICK_API_KEY", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// A file of API keys, one per line (`#` starts a comment line).
    #[arg(long, env = "WICK_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Serve on a non-loopback address without any API key.
    #[arg(long, env = "WICK_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// A model to serve: a catalog name, a .gguf file, a Hugging Face folder or a hub id, optionally as
    /// NAME=MODEL to choose the name clients use. Repeatable; the first is the default. Without any,
    /// the catalog's default chat model.
    #[arg(long = "model", env = "WICK_MODEL", value_delimiter = ',')]
    pub models: Vec<String>,
    /// How weight matrices are stored in memory on CPU (native: the file's own types; see BENCHMARKS.md).
    #[arg(long, env = "WICK_WEIGHTS", value_enum, default_value_t = WeightFormat::Native)]
    pub weights: WeightFormat,
    /// Most sequences decoded together in one step.
    #[arg(long, env = "WICK_MAX_BATCH_SIZE", default_value_t = Limits::default().max_batch_size)]
    pub max_batch_size: usize,
    /// Most new tokens (prompt tokens of joining sequences plus one per decoding sequence) in one step.
    #[arg(long, env = "WICK_MAX_STEP_TOKENS", default_value_t = Limits::default().max_step_tokens)]
    pub max_step_tokens: usize,
    /// Most requests waiting per model; beyond it the server answers 429 with Retry-After.
    #[arg(long, env = "WICK_MAX_QUEUE", default_value_t = Limits::default().max_queue)]
    pub max_queue: usize,
    /// Most tokens held in KV caches per model when admitting a new sequence.
    #[arg(long, env = "WICK_MAX_KV_TOKENS", default_value_t = Limits::default().max_kv_tokens)]
    pub max_kv_tokens: usize,
    /// Do not fetch missing catalog models at start-up.
    #[arg(long, env = "WICK_NO_PULL")]
    pub no_pull: bool,
}

impl ServeArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_batch_size: self.max_batch_size.max(1),
            max_step_tokens: self.max_step_tokens.max(1),
            max_queue: self.max_queue,
            max_kv_tokens: self.max_kv_tokens.max(1),
        }
    }

    /// Every configured key: flags, the environment and the key file.
    pub fn all_api_keys(&self) -> Result<Vec<String>> {
        let mut keys: Vec<String> =
            self.api_keys.iter().map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect();
        if let Some(path) = &self.api_key_file {
            keys.extend(crate::auth::read_key_file(path)?);
        }
        Ok(keys)
    }

    pub fn deployments(&self) -> Result<Vec<DeploymentSpec>> {
        let specs: Vec<String> = if self.models.is_empty() {
            vec![Catalog::builtin().default_chat().name.clone()]
        } else {
            self.models.clone()
        };
        specs
            .iter()
            .map(|spec| {
                // NAME=MODEL; a bare MODEL is served under its default name.
                let (name, model) = match spec.split_once('=') {
                    Some((name, model)) if !name.is_empty() => (Some(name.to_string()), model),
                    _ => (None, spec.as_str()),
                };
                let source = ModelSource::parse(model)?;
                Ok(DeploymentSpec {
                    name: name.unwrap_or_else(|| source.default_name()),
                    source,
                    weights: self.weights,
                    limits: self.limits(),
                })
            })
            .collect()
    }

    /// Refuses to expose an unauthenticated server beyond this machine unless explicitly allowed.
    pub fn check_exposure(&self, have_keys: bool) -> Result<()> {
        if !have_keys && !self.host.is_loopback() && !self.allow_unauthenticated {
            bail!(
                "refusing to serve on {} without an API key: pass --api-key (or WICK_API_KEY / --api-key-file), \
                 bind a loopback address, or pass --allow-unauthenticated",
                self.host
            );
        }
        Ok(())
    }
}

impl ServeArgs {
    /// `wick` with no command: `serve` with its defaults and the environment.
    pub fn parse_from_env() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            args: ServeArgs,
        }
        <Only as clap::Parser>::parse_from(["wick"]).args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        Cli::parse_from(std::iter::once("wick").chain(args.iter().copied())).args
    }

    #[test]
    fn no_key_means_loopback_only_unless_allowed() {
        assert!(parse(&[]).check_exposure(false).is_ok());
        assert!(parse(&["--host", "::1"]).check_exposure(false).is_ok());
        assert!(parse(&["--host", "0.0.0.0"]).check_exposure(false).is_err());
        assert!(parse(&["--host", "0.0.0.0"]).check_exposure(true).is_ok());
        assert!(parse(&["--host", "0.0.0.0", "--allow-unauthenticated"]).check_exposure(false).is_ok());
    }

    #[test]
    fn keys_from_flags_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# team keys\nsk-file-1\n\n  sk-file-2  \n").unwrap();
        let args = parse(&["--api-key", "sk-flag", "--api-key-file", file.to_str().unwrap()]);
        assert_eq!(args.all_api_keys().unwrap(), vec!["sk-flag", "sk-file-1", "sk-file-2"]);
    }

    #[test]
    fn models_take_names_with_slashes() {
        let args = parse(&["--model", "u-8105f7322477/test=smollm2-135m-instruct", "--model", "smollm2-135m-instruct"]);
        let specs = args.deployments().unwrap();
        assert_eq!(specs[0].name, "u-8105f7322477/test");
        assert_eq!(specs[1].name, "smollm2-135m-instruct");
        assert!(parse(&["--model", "not-a-model"]).deployments().is_err());
    }
}
