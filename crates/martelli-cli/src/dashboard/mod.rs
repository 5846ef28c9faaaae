//! `martelli dashboard --cluster URL`: a live web page for a cluster (docs/cluster.md,
//! "`martelli dashboard`").
//!
//! - [`sampler`] reads the broker once per interval on its own thread, keeps a ring of samples
//!   (so the charts' history survives a page reload) and the workers it has seen (so a worker that
//!   died is shown as gone, and since when), and broadcasts each sample to the open pages;
//! - [`server`] is the axum application: the embedded page ([`assets`]), its JSON API, the
//!   server-sent events, and the only writes (requeue and discard dead letters);
//! - [`guard`] checks every request: the host it was sent to, the credentials, and for a write
//!   the CSRF token.
//!
//! Parse, then validate ([`Settings::from_args`]: a non-loopback `--listen` without `--auth` is
//! refused here), then build: connect to the broker, bind, serve until SIGINT or SIGTERM.

mod assets;
mod auth;
mod guard;
mod sampler;
mod server;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use martelli::cluster::{DEFAULT_PREFIX, Inspector, InspectorOptions};

pub(crate) use auth::Auth;

/// Options of `martelli dashboard`.
#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// The Redis broker: redis://[user:password@]host[:port][/db], or rediss://… for TLS.
    #[arg(long = "cluster", value_name = "URL")]
    pub(crate) url: String,

    /// The prefix of every Redis key; clients and workers must agree on it.
    #[arg(long = "prefix", value_name = "PREFIX", default_value = DEFAULT_PREFIX)]
    pub(crate) prefix: String,

    /// A queue to show even before it has keys (repeatable); the queues under the prefix are
    /// found by themselves.
    #[arg(long = "queue", value_name = "NAME")]
    pub(crate) queues: Vec<String>,

    /// For a rediss:// broker: trust the CA certificate(s) in this PEM file [env: MARTELLI_TLS_CA].
    #[arg(long = "tls-ca", value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,

    /// The address to serve the page on. Anything but a loopback address needs --auth.
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub(crate) listen: String,

    /// Ask for credentials: token:VAR (an access token) or basic:VAR (HTTP basic auth,
    /// user:password), where the environment variable VAR holds the secret.
    #[arg(long = "auth", value_name = "SCHEME:VAR")]
    pub(crate) auth: Option<String>,

    /// Show only: no requeue or discard of dead letters.
    #[arg(long = "read-only")]
    pub(crate) read_only: bool,

    /// Seconds between two readings of the broker.
    #[arg(long = "interval", value_name = "SECS", default_value = "1")]
    pub(crate) interval: f64,

    /// Minutes of samples kept for the charts.
    #[arg(long = "history", value_name = "MINUTES", default_value = "15")]
    pub(crate) history: f64,
}

/// Why the dashboard would not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// A listen address that others can reach, without credentials.
    #[error(
        "refusing to serve on {addr} without --auth: anyone who reaches that address could read the \
         queues and requeue or discard dead letters. Give --auth token:VAR or --auth basic:VAR (the \
         environment variable VAR holds the token, or user:password), or listen on a loopback address \
         such as 127.0.0.1:8080"
    )]
    OpenWithoutAuth {
        /// The address.
        addr: SocketAddr,
    },
    /// The listen address is not an address.
    #[error("invalid --listen {given:?}: {why} (expected HOST:PORT, such as 127.0.0.1:8080)")]
    BadListen {
        /// As given.
        given: String,
        /// Why.
        why: String,
    },
    /// An interval or history out of range.
    #[error("invalid --{option} {value}: {why}")]
    BadNumber {
        /// The option.
        option: &'static str,
        /// As given.
        value: f64,
        /// What is expected.
        why: &'static str,
    },
}

/// Validated settings.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) listen: SocketAddr,
    pub(crate) auth: Auth,
    pub(crate) read_only: bool,
    pub(crate) interval: Duration,
    /// Samples kept.
    pub(crate) capacity: usize,
    pub(crate) queues: Vec<String>,
}

impl Settings {
    /// Checks the arguments; `env` reads an environment variable (the secret of `--auth`).
    pub(crate) fn from_args(
        args: &DashboardArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Settings> {
        let listen = resolve(&args.listen)?;
        let auth = Auth::from_arg(args.auth.as_deref(), env)?;
        if !listen.ip().is_loopback() && auth.is_none() {
            return Err(StartError::OpenWithoutAuth { addr: listen }.into());
        }
        let interval = Duration::try_from_secs_f64(args.interval)
            .ok()
            .filter(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_secs(3600))
            .ok_or(StartError::BadNumber {
                option: "interval",
                value: args.interval,
                why: "expected seconds between 0.1 and 3600",
            })?;
        let history = Duration::try_from_secs_f64(args.history * 60.0)
            .ok()
            .filter(|d| *d >= interval && *d <= Duration::from_secs(24 * 3600))
            .ok_or(StartError::BadNumber {
                option: "history",
                value: args.history,
                why: "expected minutes, at least one interval and at most 1440",
            })?;
        let capacity = (history.as_secs_f64() / interval.as_secs_f64()).ceil() as usize;
        Ok(Settings {
            listen,
            auth,
            read_only: args.read_only,
            interval,
            capacity: capacity.clamp(1, 100_000),
            queues: args.queues.clone(),
        })
    }
}

/// The one address `listen` names; a name that resolves to several addresses counts as loopback
/// only when all of them are.
fn resolve(listen: &str) -> Result<SocketAddr, StartError> {
    let bad = |why: String| StartError::BadListen {
        given: listen.to_owned(),
        why,
    };
    let addrs: Vec<SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .collect();
    let first = *addrs
        .first()
        .ok_or_else(|| bad("it names no address".to_owned()))?;
    if addrs
        .iter()
        .any(|a| a.ip().is_loopback() != first.ip().is_loopback())
    {
        return Err(bad(
            "it names loopback and other addresses; give one address".to_owned(),
        ));
    }
    Ok(first)
}

/// Runs the dashboard until SIGINT or SIGTERM.
pub(crate) fn run(args: &DashboardArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_args(args, |var| std::env::var(var).ok())?;
    let csrf = server::csrf_token()?;
    let mut options = InspectorOptions::new().prefix(&args.prefix);
    if let Some(ca) = &args.tls_ca {
        options = options.tls_ca(ca);
    }
    // One connection for the sampler and one for the page's requests, so a slow request never
    // delays the live view.
    let for_sampler = Inspector::connect(&args.url, &options)?;
    let for_requests = Inspector::connect(&args.url, &options)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the dashboard's runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let bound = listener
            .local_addr()
            .context("cannot read the address listened on")?;
        let shared = Arc::new(sampler::Shared::new(settings.capacity, settings.interval));
        let stop_sampler = sampler::start(for_sampler, &settings, Arc::clone(&shared))?;
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let app = server::App::new(for_requests, settings, shared, shutdown_rx, csrf);
        eprintln!(
            "martelli dashboard: serving http://{bound}/ for {} (prefix {}){}",
            app.broker(),
            args.prefix,
            if app.read_only() { ", read-only" } else { "" }
        );
        let served = axum::serve(listener, server::router(app))
            .with_graceful_shutdown(async move {
                signal().await;
                let _ = shutdown_tx.send(true);
            })
            .await;
        stop_sampler.stop();
        served.context("the dashboard's server failed")?;
        eprintln!("martelli dashboard: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Waits for SIGINT or SIGTERM.
async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still ends on the signal's default action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DashboardArgs,
    }

    fn settings(argv: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let mut full = vec!["dashboard", "--cluster", "redis://127.0.0.1:6379"];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full).expect("the arguments parse");
        Settings::from_args(&cli.args, |var| {
            env.iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn loopback_is_the_default_and_needs_no_auth() {
        let s = settings(&[], &[]).unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(s.auth.is_none());
        assert_eq!(s.capacity, 900, "15 minutes of 1 s samples");
        assert!(settings(&["--listen", "[::1]:9000"], &[]).is_ok());
    }

    #[test]
    fn an_open_address_without_auth_is_refused() {
        let e = settings(&["--listen", "0.0.0.0:8080"], &[]).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains("refusing to serve on 0.0.0.0:8080 without --auth"),
            "{text}"
        );
        let ok = settings(
            &["--listen", "0.0.0.0:8080", "--auth", "token:DASH_TOKEN"],
            &[("DASH_TOKEN", "s3cret-token-value")],
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn bad_numbers_and_addresses_say_what_is_expected() {
        let e = settings(&["--interval", "0"], &[]).unwrap_err();
        assert!(format!("{e}").contains("--interval 0"), "{e}");
        let e = settings(&["--history", "0"], &[]).unwrap_err();
        assert!(format!("{e}").contains("--history 0"), "{e}");
        let e = settings(&["--listen", "nonsense"], &[]).unwrap_err();
        assert!(format!("{e}").contains("invalid --listen"), "{e}");
    }
}
