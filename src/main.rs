use clap::{Parser, Subcommand};
use wick::arch::cpu::isa;
use wick::catalog::Catalog;

#[derive(Parser)]
#[command(name = "wick", version, long_version = long_version(), about = "An OpenAI-compatible inference server")]
struct Cli {
    /// Log format: text or json.
    #[arg(long, env = "WICK_LOG_FORMAT", default_value = "text", global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve models over HTTP (the default command).
    Serve(Box<wick::config::ServeArgs>),
    /// Fetch a catalog model into the cache and check its sha256.
    Pull {
        /// Catalog name (see `wick models`).
        name: String,
    },
    /// List the catalog and what is already pulled.
    Models,
    /// Run a model on token ids without the server: logits, greedy tokens and decode time as JSON
    /// (for checks against a reference; see benches/gpu/).
    Probe(wick::probe::ProbeArgs),
}

/// `wick --version`: the version and the CPU kernels this machine gets (or why it gets none).
fn long_version() -> &'static str {
    Box::leak(format!("{}\n{}", env!("CARGO_PKG_VERSION"), isa::describe()).into_boxed_str())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("WICK_LOG").unwrap_or_else(|_| "info,tower_http=warn".into());
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_format == "json" {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    // Before anything runs a kernel: a forced variant this CPU cannot run stops here, with the reason.
    isa::init()?;
    tracing::info!("{}", isa::describe());
    let command = cli.command.unwrap_or_else(|| Command::Serve(Box::new(wick::config::ServeArgs::parse_from_env())));
    match command {
        Command::Serve(args) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(wick::serve(*args))
        }
        Command::Pull { name } => {
            let entry = Catalog::builtin()
                .get(&name)
                .ok_or_else(|| anyhow::anyhow!("`{name}` is not in the catalog; `wick models` lists it"))?;
            let path = wick::pull::pull(entry, true)?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Probe(args) => wick::probe::run(args),
        Command::Models => {
            println!("{:<28} {:<10} {:<8} DESCRIPTION", "NAME", "KIND", "PULLED");
            for m in &Catalog::builtin().models {
                let pulled = if m.is_pulled() { "yes" } else { "no" };
                let default = if m.default { " (default)" } else { "" };
                println!("{:<28} {:<10} {:<8} {}{default}", m.name, m.kind.name(), pulled, m.description);
            }
            Ok(())
        }
    }
}
