//! `martelli ratelimit --cluster URL TASK RATE`: sets (or, with `off`, removes) the rate limit of
//! a task name, applied by every worker under the prefix (docs/protocol.md, "Addition 3: rate
//! limits"). `RATE` is `COUNT/PERIOD`: `100/s`, `10/m`, `2/h`, or a period in milliseconds
//! (`5/250`).

use std::process::ExitCode;

use clap::Args;
use martelli::cluster::{Client, RateLimit};

use super::BrokerArgs;

/// Options of `martelli ratelimit`.
#[derive(Debug, Args)]
pub(crate) struct RateLimitArgs {
    /// The task name (`martelli.shell` for the commands `martelli run --cluster` sends).
    #[arg(value_name = "TASK")]
    pub(crate) task: String,

    /// COUNT/PERIOD (100/s, 10/m, 2/h, 5/250 for 5 per 250 ms), or `off`.
    #[arg(value_name = "RATE")]
    pub(crate) rate: String,

    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
}

/// Sets or removes the limit.
pub(crate) fn run(args: &RateLimitArgs) -> anyhow::Result<ExitCode> {
    let limit = match args.rate.as_str() {
        "off" | "none" => None,
        rate => Some(rate.parse::<RateLimit>()?),
    };
    let mut builder = Client::builder(&args.broker.url)
        .prefix(&args.broker.prefix)
        .queue(&args.broker.queue);
    if let Some(ca) = &args.broker.tls_ca {
        builder = builder.tls_ca(ca);
    }
    let client = builder.build()?;
    match limit {
        Some(limit) => {
            client.set_rate_limit(&args.task, limit)?;
            eprintln!(
                "martelli ratelimit: tasks named {:?} start at most {limit} across the workers \
                 under prefix {:?}",
                args.task, args.broker.prefix
            );
        }
        None => {
            client.clear_rate_limit(&args.task)?;
            eprintln!(
                "martelli ratelimit: tasks named {:?} have no rate limit",
                args.task
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
