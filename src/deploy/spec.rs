//! What a deployment is: the request a user makes (through the management API, a config file or
//! `--model`) and the settled spec the server runs, with every default filled in.

use crate::arch::linear::WeightFormat;
use crate::engine::scheduler::Limits;
use crate::loader::chat_template::ChatTemplate;
use crate::loader::{ModelKind, ModelSource};
use crate::voice::VoiceCard;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The most replicas one deployment may ask for.
pub const MAX_REPLICAS: usize = 64;

/// Formats a speech deployment may answer in by default (OpenAI's `response_format` values).
pub const AUDIO_FORMATS: [&str; 6] = ["mp3", "opus", "aac", "flac", "wav", "pcm"];

/// A deployment as a user asks for it: the JSON body of `POST /sdk/v1/instance`, an entry of the
/// `--config` file, and what the store keeps (so a restart rebuilds exactly what was asked for).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRequest {
    /// A catalog id, a path to a .gguf file or a model folder, or a hub id.
    pub model: String,
    /// The caller's own unique key for this deployment. Required through the API; a config file
    /// entry without one uses its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_meta_key: Option<String>,
    /// The name clients put in `model`; by default the model's own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<usize>,
    /// Seconds (a number), a duration such as "90s", "5m" or "1h", or "never".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<IdleTimeoutValue>,
    /// "cpu", "cuda" (every visible GPU) or "cuda:0,1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
    /// For speech deployments: the audio format used when a request names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_response_format: Option<String>,
    /// Overrides the server's price per replica-hour for this deployment's cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_replica_hour: Option<f64>,
    /// How weights are held in memory (native, q8-0, f32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub weights: Option<WeightFormat>,
    /// For text models: a chat template (Jinja, as Hugging Face's) used instead of the model's own,
    /// so that a model that ships none can take chat requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
}

/// The idle timeout as JSON or TOML may spell it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(untagged)]
pub enum IdleTimeoutValue {
    Seconds(f64),
    Text(String),
}

impl IdleTimeoutValue {
    pub fn resolve(&self) -> Result<Option<Duration>> {
        match self {
            Self::Seconds(s) => parse_idle_timeout(&s.to_string()),
            Self::Text(t) => parse_idle_timeout(t),
        }
    }
}

/// "300", "300s", "5m", "1h" or "never" (None: never unload). Zero and negative values are refused:
/// a deployment that unloads the moment it goes idle would reload for every request.
pub fn parse_idle_timeout(text: &str) -> Result<Option<Duration>> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => bail!("idle timeout `{text}`: use seconds (300), a duration (90s, 5m, 1h) or `never`"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .with_context(|| format!("idle timeout `{text}`: use seconds (300), a duration (90s, 5m, 1h) or `never`"))?;
    let seconds = value * scale;
    if !seconds.is_finite() || seconds <= 0.0 {
        bail!("idle timeout `{text}` must be positive (or `never`)");
    }
    Ok(Some(Duration::from_secs_f64(seconds)))
}

/// Where a deployment's replicas run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePlan {
    Cpu,
    /// Replica i runs on GPU `gpus[i % gpus.len()]`.
    Cuda(Vec<usize>),
}

impl DevicePlan {
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim().to_ascii_lowercase();
        let plan = match t.as_str() {
            "cpu" => return Ok(Self::Cpu),
            "cuda" | "gpu" => Self::Cuda(visible_gpus()?),
            _ => {
                let list = t
                    .strip_prefix("cuda:")
                    .or_else(|| t.strip_prefix("gpu:"))
                    .with_context(|| format!("device `{text}`: use `cpu`, `cuda` (every visible GPU) or `cuda:0,1`"))?;
                let gpus = list
                    .split(',')
                    .map(|g| g.trim().parse::<usize>())
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("device `{text}`: GPU numbers are integers, as in `cuda:0,1`"))?;
                Self::Cuda(gpus)
            }
        };
        if !cfg!(feature = "cuda") {
            bail!("device `{text}`: this build of wick has no CUDA support (build it with `--features cuda`)");
        }
        Ok(plan)
    }

    /// What the management API reports as `hardware.device`.
    pub fn describe(&self) -> String {
        match self {
            Self::Cpu => "cpu".into(),
            Self::Cuda(gpus) => {
                format!("cuda:{}", gpus.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(","))
            }
        }
    }

    /// The device of replica `index`, spread round-robin over the plan's GPUs.
    pub fn device_name(&self, index: usize) -> String {
        match self {
            Self::Cpu => "cpu".into(),
            Self::Cuda(gpus) => format!("cuda:{}", gpus[index % gpus.len()]),
        }
    }

    pub fn candle_device(&self, index: usize) -> Result<candle_core::Device> {
        match self {
            Self::Cpu => Ok(candle_core::Device::Cpu),
            Self::Cuda(gpus) => Ok(candle_core::Device::new_cuda(gpus[index % gpus.len()])?),
        }
    }
}

#[cfg(feature = "cuda")]
fn visible_gpus() -> Result<Vec<usize>> {
    let count = candle_core::cuda_backend::cudarc::driver::CudaContext::device_count()
        .map_err(|e| anyhow::anyhow!("count CUDA devices: {e}"))? as usize;
    if count == 0 {
        bail!("device `cuda`: no GPU is visible");
    }
    Ok((0..count).collect())
}

#[cfg(not(feature = "cuda"))]
fn visible_gpus() -> Result<Vec<usize>> {
    Ok(vec![0])
}

/// Where a deployment was defined: config deployments are owned by the command line or config file
/// (they cannot be deleted through the API and come back on restart as configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Config,
    Api,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Api => "api",
        }
    }
}

/// Server-wide defaults a request may override.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub weights: WeightFormat,
    pub limits: Limits,
    pub replicas: usize,
    pub idle_timeout: Option<Duration>,
    pub device: DevicePlan,
    pub price_per_replica_hour: f64,
    /// The most replicas any deployment may have (`--max-replicas`).
    pub max_replicas: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            weights: WeightFormat::Native,
            limits: Limits::default(),
            replicas: 1,
            idle_timeout: Some(Duration::from_secs(300)),
            device: DevicePlan::Cpu,
            price_per_replica_hour: 0.0,
            max_replicas: MAX_REPLICAS,
        }
    }
}

/// A deployment with every setting decided.
#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    /// The name clients put in `model`.
    pub name: String,
    pub meta_key: String,
    pub source: ModelSource,
    /// For a voice: its family, language and names, known before it loads (what routes `tts-1`).
    pub voice: Option<VoiceCard>,
    pub weights: WeightFormat,
    pub limits: Limits,
    /// Replicas at creation; the live count is the deployment's own (it can be scaled).
    pub replicas: usize,
    /// None: never unload.
    pub idle_timeout: Option<Duration>,
    pub device: DevicePlan,
    pub remark: String,
    pub default_response_format: Option<String>,
    pub price_per_replica_hour: f64,
    /// The chat template to use instead of the model's own: the deployment's, else its catalog
    /// entry's.
    pub chat_template: Option<String>,
    pub origin: Origin,
    /// What was asked for, as given: kept by the store and shown by the management API.
    pub request: DeploymentRequest,
}

impl DeploymentSpec {
    /// Checks a request and fills in the server's defaults. Errors are for the user who wrote it.
    pub fn resolve(request: DeploymentRequest, defaults: &Defaults, origin: Origin) -> Result<Self> {
        let model = request.model.trim();
        if model.is_empty() {
            bail!("`model` is required: a catalog id, a path to a model, or a hub id");
        }
        let source = ModelSource::parse(model)?;
        source.check_family()?;
        let voice = source.voice_card()?;
        let name = match &request.name {
            Some(n) if n.trim().is_empty() => bail!("`name` must not be empty"),
            Some(n) => n.trim().to_string(),
            None => source.default_name(),
        };
        let meta_key = match &request.custom_meta_key {
            Some(k) if k.trim().is_empty() => bail!("`custom_meta_key` must not be empty"),
            Some(k) => k.trim().to_string(),
            None if origin == Origin::Config => name.clone(),
            None => bail!("`custom_meta_key` is required: a key of yours, unique across deployments"),
        };
        let replicas = request.replicas.unwrap_or(defaults.replicas);
        check_replicas(replicas, defaults.max_replicas)?;
        let idle_timeout = match &request.idle_timeout_s {
            Some(v) => v.resolve()?,
            None => defaults.idle_timeout,
        };
        let device = match &request.device {
            Some(d) => DevicePlan::parse(d)?,
            None => defaults.device.clone(),
        };
        if let Some(f) = &request.default_response_format {
            if !AUDIO_FORMATS.contains(&f.as_str()) {
                bail!("`default_response_format` `{f}`: use one of {}", AUDIO_FORMATS.join(", "));
            }
        }
        let catalog_template = match &source {
            ModelSource::Catalog(entry) => entry.chat_template.clone(),
            _ => None,
        };
        let chat_template = request.chat_template.clone().or(catalog_template);
        if let Some(template) = &chat_template {
            if source.kind() != ModelKind::Text {
                bail!("`chat_template` is for text models; `{model}` serves {}", source.kind().endpoint());
            }
            // Refused now rather than at the first request's load.
            ChatTemplate::new(template.clone(), None, None).context("`chat_template`")?;
        }
        let price = request.price_per_replica_hour.unwrap_or(defaults.price_per_replica_hour);
        if !price.is_finite() || price < 0.0 {
            bail!("`price_per_replica_hour` must be zero or positive");
        }
        Ok(Self {
            name,
            meta_key,
            source,
            voice,
            weights: request.weights.unwrap_or(defaults.weights),
            limits: defaults.limits.clone(),
            replicas,
            idle_timeout,
            device,
            remark: request.remark.clone().unwrap_or_default(),
            default_response_format: request.default_response_format.clone(),
            price_per_replica_hour: price,
            chat_template,
            origin,
            request,
        })
    }
}

/// `replicas` within 1..=`max` (this server's `--max-replicas`).
pub fn check_replicas(replicas: usize, max: usize) -> Result<()> {
    if !(1..=max).contains(&replicas) {
        bail!("`replicas` must be between 1 and {max} (an idle deployment unloads by itself)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_timeouts_parse() {
        assert_eq!(parse_idle_timeout("300").unwrap(), Some(Duration::from_secs(300)));
        assert_eq!(parse_idle_timeout("5m").unwrap(), Some(Duration::from_secs(300)));
        assert_eq!(parse_idle_timeout("1.5s").unwrap(), Some(Duration::from_millis(1500)));
        assert_eq!(parse_idle_timeout("1h").unwrap(), Some(Duration::from_secs(3600)));
        assert_eq!(parse_idle_timeout("never").unwrap(), None);
        for bad in ["0", "-3", "5 parsecs", "", "m"] {
            assert!(parse_idle_timeout(bad).is_err(), "{bad}");
        }
        assert_eq!(IdleTimeoutValue::Seconds(2.0).resolve().unwrap(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn devices_parse() {
        assert_eq!(DevicePlan::parse("cpu").unwrap(), DevicePlan::Cpu);
        assert!(DevicePlan::parse("tpu").is_err());
        assert!(DevicePlan::parse("cuda:x").is_err());
        if !cfg!(feature = "cuda") {
            let e = DevicePlan::parse("cuda:0").unwrap_err().to_string();
            assert!(e.contains("no CUDA support"), "{e}");
        }
        assert_eq!(DevicePlan::Cuda(vec![0, 1]).device_name(3), "cuda:1");
    }

    #[test]
    fn requests_resolve_with_defaults_and_clear_errors() {
        let req = |json: serde_json::Value| serde_json::from_value::<DeploymentRequest>(json).unwrap();
        let d = Defaults::default();
        let spec = DeploymentSpec::resolve(
            req(serde_json::json!({"model": "smollm2-135m-instruct", "custom_meta_key": "k1"})),
            &d,
            Origin::Api,
        )
        .unwrap();
        assert_eq!(spec.name, "smollm2-135m-instruct");
        assert_eq!((spec.replicas, spec.idle_timeout), (1, Some(Duration::from_secs(300))));
        let missing_key =
            DeploymentSpec::resolve(req(serde_json::json!({"model": "smollm2-135m-instruct"})), &d, Origin::Api);
        assert!(missing_key.unwrap_err().to_string().contains("custom_meta_key"));
        let config =
            DeploymentSpec::resolve(req(serde_json::json!({"model": "smollm2-135m-instruct"})), &d, Origin::Config);
        assert_eq!(config.unwrap().meta_key, "smollm2-135m-instruct");
        for bad in [
            serde_json::json!({"model": "smollm2-135m-instruct", "custom_meta_key": "k", "replicas": 0}),
            serde_json::json!({"model": "smollm2-135m-instruct", "custom_meta_key": "k", "idle_timeout_s": 0}),
            serde_json::json!({"model": "smollm2-135m-instruct", "custom_meta_key": "k", "default_response_format": "ogg"}),
            serde_json::json!({"model": "no-such-model", "custom_meta_key": "k"}),
        ] {
            assert!(DeploymentSpec::resolve(req(bad.clone()), &d, Origin::Api).is_err(), "{bad}");
        }
        assert!(serde_json::from_value::<DeploymentRequest>(serde_json::json!({"model": "m", "replica": 2})).is_err());
    }
}
