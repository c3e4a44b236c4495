//! The `splitway` binary: a thin shell over the library — CLI, logging, config, signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use splitway::{Config, Proxy};

#[derive(Parser)]
#[command(
    name = "splitway",
    version,
    about = "Sidecar forward proxy with per-host split-horizon DNS"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Clone)]
struct ConfigArg {
    /// Config file (TOML); without it, the embedded default (a plain forward proxy).
    #[arg(long, short, env = "SPLITWAY_CONFIG", global = true)]
    config: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Log format of the canonical per-tunnel lines.
    #[arg(long, env = "SPLITWAY_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the config and print the effective route table.
    Check,
    /// Say which route a host takes, the lookup, and where it would connect.
    Explain {
        /// HOST or HOST:PORT (default port 443).
        target: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also open TLS (SNI = HOST) along splitway's route and the system resolver's path,
        /// and show what each presents.
        #[arg(long)]
        probe: bool,
        /// Extra trust roots (PEM) for --probe, e.g. a private CA.
        #[arg(long, requires = "probe")]
        ca_file: Option<PathBuf>,
        /// Say whether this [[client]] policy may use the route.
        #[arg(long, conflicts_with = "source")]
        client: Option<String>,
        /// Say whether the client at this address may use the route.
        #[arg(long)]
        source: Option<std::net::IpAddr>,
    },
    /// Print the nat rules that capture TCP for [transparent]; --apply installs them
    /// (idempotently), --remove removes them.
    Iptables {
        #[arg(long, conflicts_with = "remove")]
        apply: bool,
        #[arg(long)]
        remove: bool,
        /// Let this UID's connections through (splitway's own user), instead of or besides
        /// [transparent] mark; overrides [transparent] exclude_uid.
        #[arg(long)]
        exclude_uid: Option<u32>,
    },
    /// Run as an AWS Lambda external extension (chosen by itself when AWS_LAMBDA_RUNTIME_API is
    /// set and no command is given); config from --config, SPLITWAY_CONFIG or
    /// /opt/splitway/splitway.toml.
    LambdaExtension,
    /// Print the client settings for this config: HTTPS_PROXY, HTTP_PROXY and NO_PROXY (both
    /// cases), JAVA_TOOL_OPTIONS and NODE_USE_ENV_PROXY.
    Env {
        /// shell (`eval "$(splitway env)"`), dotenv (docker --env-file), json, or kubernetes
        /// (a container's `env:` list).
        #[arg(long, value_enum, default_value = "shell")]
        format: EnvFormat,
    },
    /// GET the admin /healthz; exit 0 when healthy (for container health checks).
    Health {
        #[arg(long, default_value = splitway::config::DEFAULT_ADMIN_LISTEN)]
        admin: SocketAddr,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum EnvFormat {
    Shell,
    Dotenv,
    Json,
    Kubernetes,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let lambda_env = std::env::var_os(splitway::lambda::RUNTIME_API_ENV).is_some();
    let args = &cli.run;
    exit_code(match cli.command {
        Some(Command::Run) => serve(args),
        // No command is `run`, or the Lambda extension where Lambda's runtime API is set.
        None if !lambda_env => serve(args),
        None | Some(Command::LambdaExtension) => serve_lambda(args),
        Some(Command::Check) => tool(async { check(&args.config) }),
        Some(Command::Explain {
            target,
            json,
            probe,
            ca_file,
            client,
            source,
        }) => {
            let asked = match (client, source) {
                (Some(name), _) => Some(splitway::policy::Asked::Named(name)),
                (None, Some(ip)) => Some(splitway::policy::Asked::Source(ip)),
                (None, None) => None,
            };
            tool(explain(&args.config, &target, json, probe.then_some(ca_file), asked))
        }
        Some(Command::Iptables {
            apply,
            remove,
            exclude_uid,
        }) => tool(async { iptables(&args.config, apply, remove, exclude_uid) }),
        Some(Command::Env { format }) => tool(async { env(&args.config, format) }),
        Some(Command::Health { admin }) => tool(async { splitway::admin::health(admin).await.map_err(Into::into) }),
    })
}

/// A command that is not the proxy: run to its end on a runtime of its own.
fn tool(command: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(command)
}

/// `splitway run`: one serving thread, or as many as `SPLITWAY_THREADS` says, each a
/// single-threaded runtime with listeners of its own (`SO_REUSEPORT`), so a connection lives on
/// the thread that accepted it: no work stealing, no wake-up across threads. This thread's runtime also runs
/// the admin listener, reloads and the resolvers' refreshes. docs/performance.md says why.
fn serve(args: &RunArgs) -> Result<()> {
    let threads = threads()?;
    splice()?;
    splitway::block_on_serving(run(args, threads)).context("cannot start the async runtime")?
}

/// `splitway lambda-extension` (and no command inside Lambda): one serving thread, as `run` has by
/// default, beside the function's own code in the same sandbox.
fn serve_lambda(args: &RunArgs) -> Result<()> {
    splice()?;
    splitway::block_on_serving(lambda(args)).context("cannot start the async runtime")?
}

/// The process's exit: the error, with its causes, on stderr.
fn exit_code(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Serving threads: `SPLITWAY_THREADS` (a count, or `auto` for one a CPU), else one.
fn threads() -> Result<usize> {
    let cpus = || std::thread::available_parallelism().map_or(1, |n| n.get());
    threads_from(std::env::var("SPLITWAY_THREADS").ok().as_deref(), cpus)
}

/// The serving threads `SPLITWAY_THREADS=value` asks for (`None`: unset): one by default, a
/// sidecar's share, beside the application it serves; `auto` is `cpus()`, the CPUs this
/// process may use.
fn threads_from(value: Option<&str>, cpus: impl FnOnce() -> usize) -> Result<usize> {
    let Some(v) = value else { return Ok(1) };
    match v.trim() {
        "auto" => Ok(cpus().clamp(1, MAX_THREADS)),
        n => match n.parse::<usize>() {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
            _ => anyhow::bail!(
                "SPLITWAY_THREADS=`{v}`: give a whole number of threads from 1 to {MAX_THREADS}, `auto` (one a CPU), or unset it (one)"
            ),
        },
    }
}

/// `SPLITWAY_SPLICE`: `on` lets bulk transfers splice; `off` or unset copies them.
fn splice() -> Result<()> {
    let value = std::env::var("SPLITWAY_SPLICE").ok();
    if splice_from(value.as_deref())? {
        splitway::enable_splice();
    }
    Ok(())
}

fn splice_from(value: Option<&str>) -> Result<bool> {
    match value.map(str::trim) {
        None | Some("off") => Ok(false),
        Some("on") => Ok(true),
        Some(v) => {
            anyhow::bail!("SPLITWAY_SPLICE=`{v}`: give `on` (bulk transfers splice) or `off`, or unset it (off)")
        }
    }
}

/// The most serving threads `SPLITWAY_THREADS` may ask for.
const MAX_THREADS: usize = 1024;

/// The config, its route table built once to find routes that claim one pattern.
fn load(arg: &ConfigArg) -> Result<Config> {
    let config = match &arg.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    splitway::RouteTable::new(&config.routes).map_err(|clash| clash.located(&config.origin))?;
    Ok(config)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPLITWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a container's log collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(splitway::logging::Stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.event_format(splitway::logging::Text::default()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(args: &RunArgs, threads: usize) -> Result<()> {
    init_logging(args.log_format);
    let config = load(&args.config)?;
    let origin = config.origin.clone();
    for note in &config.notes {
        tracing::warn!(config = %origin, "{note}");
    }
    splitway::raise_open_file_limit(config.proxy.max_connections);
    let limits = splitway::Limits {
        threads,
        ..splitway::Limits::default()
    };
    let proxy = Proxy::bind_with(config, limits).await?;
    let admin = proxy
        .admin_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "off".into());
    tracing::info!(listen = %proxy.local_addr(), admin, config = %origin, "splitway serving");
    if let Some(path) = args.config.config.clone() {
        tokio::spawn(splitway::reload::watch(proxy.handle(), path));
    }
    proxy.serve(shutdown_signal()).await;
    tracing::info!("drained; exiting");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; SIGTERM will not drain");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

async fn lambda(args: &RunArgs) -> Result<()> {
    use splitway::lambda;
    init_logging(args.log_format);
    let api = std::env::var(lambda::RUNTIME_API_ENV).map_err(|_| lambda::LambdaError::NoRuntimeApi)?;
    let config = args
        .config
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(lambda::DEFAULT_CONFIG));
    // Lambda knows an extension by its file name under /opt/extensions/.
    let name = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "splitway".into());
    lambda::run(&api, &name, &config, shutdown_signal()).await?;
    Ok(())
}

fn check(arg: &ConfigArg) -> Result<()> {
    let config = load(arg)?;
    print!("{}", splitway::config::describe(&config));
    Ok(())
}

fn env(arg: &ConfigArg, format: EnvFormat) -> Result<()> {
    use splitway::env::{ClientEnv, Format};
    let format = match format {
        EnvFormat::Shell => Format::Shell,
        EnvFormat::Dotenv => Format::Dotenv,
        EnvFormat::Json => Format::Json,
        EnvFormat::Kubernetes => Format::Kubernetes,
    };
    print!("{}", ClientEnv::new(&load(arg)?)?.render(format));
    Ok(())
}

fn iptables(arg: &ConfigArg, apply: bool, remove: bool, exclude_uid: Option<u32>) -> Result<()> {
    use splitway::iptables;
    let config = load(arg)?;
    let plan = iptables::plan(&config, exclude_uid)?;
    if remove {
        iptables::remove(&plan)?;
        println!("# removed the {} chain and its jump from nat OUTPUT", iptables::CHAIN);
        return Ok(());
    }
    if apply {
        iptables::apply(&plan)?;
        println!("# applied:");
    } else {
        println!(
            "# capture rules for {} (install with --apply, remove with --remove):",
            config.origin
        );
    }
    print!("{}", iptables::script(&plan));
    Ok(())
}

async fn explain(
    arg: &ConfigArg,
    target: &str,
    json: bool,
    probe: Option<Option<PathBuf>>,
    asked: Option<splitway::policy::Asked>,
) -> Result<()> {
    let config = load(arg)?;
    let target = splitway::target::Target::parse_host_port(target, 443)
        .with_context(|| format!("`{target}` is not HOST or HOST:PORT"))?;
    splitway::install_crypto_provider();
    let runtime = splitway::Runtime::new(config, Default::default())?;
    let mut e = match probe {
        None => splitway::explain::explain(&runtime, &target).await,
        Some(ca_file) => {
            let pem = match &ca_file {
                Some(path) => Some(std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?),
                None => None,
            };
            let roots = splitway::probe::roots(pem.as_deref())?;
            splitway::explain::explain_and_probe(&runtime, &target, &roots, splitway::explain::ProbeFrom::Cli).await
        }
    };
    if let Some(asked) = &asked {
        let said = splitway::policy::explain(&runtime.policies, asked, &e.route);
        e.client = Some(said?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_threads_default_to_one_and_auto_is_one_a_cpu() {
        let cpus = || 6;
        assert_eq!(threads_from(None, cpus).unwrap(), 1, "unset: one thread");
        assert_eq!(threads_from(Some("auto"), cpus).unwrap(), 6);
        assert_eq!(threads_from(Some(" 3 "), cpus).unwrap(), 3);
        assert_eq!(threads_from(Some("1024"), cpus).unwrap(), 1024);
        assert_eq!(threads_from(Some("auto"), || 5000).unwrap(), MAX_THREADS);
        for bad in ["0", "1025", "two", "", "-1", "Auto"] {
            let e = threads_from(Some(bad), cpus).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("SPLITWAY_THREADS=`{bad}`: give a whole number")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn splice_is_off_unless_asked_for() {
        assert!(!splice_from(None).unwrap(), "unset: off");
        assert!(!splice_from(Some("off")).unwrap());
        assert!(splice_from(Some(" on ")).unwrap());
        for bad in ["", "1", "yes", "ON"] {
            let e = splice_from(Some(bad)).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("SPLITWAY_SPLICE=`{bad}`: give `on`")),
                "{bad}: {e}"
            );
        }
    }
}
