//! Periodic tasks: schedules kept in Redis, fired by any number of schedulers, each tick once
//! (docs/protocol.md, "Addition 4: periodic tasks").
//!
//! A [`Schedule`] queues a task at every tick of a cron expression ([`Schedule::cron`], UTC) or of
//! an interval ([`Schedule::every`]). [`Schedules`] adds, lists, disables and removes them; a
//! [`Scheduler`] (or `martelli schedule run`) fires them. Run as many schedulers as availability
//! needs: the claim of a tick and the queueing of its task are one Lua script on the broker, on
//! the broker's clock, so a tick fires once however many schedulers run and whenever one is
//! killed. The task of a tick has the id `NAME@TICK` (the tick in Unix ms).
//!
//! After a time when no scheduler ran, the missed ticks are never fired in a burst: by default
//! ([`CatchUp::Latest`]) the latest of them fires once; with [`CatchUp::Skip`] none does.
//!
//! ```no_run
//! use martelli::cluster::{Schedule, Scheduler, SchedulerOptions, Schedules};
//! use std::time::Duration;
//!
//! let url = "redis://127.0.0.1:6379";
//! let schedules = Schedules::connect(url, &SchedulerOptions::default())?;
//! schedules.add(&Schedule::cron("nightly-report", "0 3 * * *", "reports::nightly")?.args(&("eu",))?)?;
//! schedules.add(&Schedule::every("heartbeat", Duration::from_secs(30), "health::ping")?)?;
//!
//! let scheduler = Scheduler::start(url, SchedulerOptions::default())?;
//! // … until the program stops:
//! scheduler.stop();
//! let report = scheduler.join()?;
//! println!("{} tick(s) fired here", report.fired);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod scheduler;
mod scripts;
mod timing;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use redis::{Connection, Value};
use serde::Serialize;

pub use scheduler::{Scheduler, SchedulerReport};
pub(crate) use timing::format_interval;
pub use timing::{CronExpr, Timing, parse_interval};

use super::conn::{self, Broker};
use super::envelope::{DEFAULT_MAX_ATTEMPTS, TaskEnvelope};
use super::{ClusterError, DEFAULT_PREFIX, DEFAULT_QUEUE, Keys, PROTOCOL_VERSION, Retry};
use crate::options::Priority;

/// The longest schedule name (its task ids are `NAME@TICK`).
pub(crate) const MAX_NAME: usize = 200;

/// What went wrong with a schedule.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// A cron expression that cannot be read; `field` names the field at fault when one is.
    #[error(
        "invalid cron expression {expression:?}{}: {detail}",
        field.as_ref().map(|f| format!(" (its {f} field)")).unwrap_or_default()
    )]
    BadCron {
        /// The expression.
        expression: String,
        /// The field at fault (`minute`, `hour`, `day-of-month`, `month`, `day-of-week`,
        /// `second`), when one is.
        field: Option<String>,
        /// What is wrong.
        detail: String,
    },
    /// An interval that cannot be read.
    #[error(
        "invalid interval {0:?}: give a number and a unit, ms, s, m, h or d (500ms, 10s, 5m, 1h30m), \
         more than zero"
    )]
    BadInterval(String),
    /// A schedule name that cannot be used.
    #[error(
        "invalid schedule name {0:?}: give 1 to 200 characters, without spaces or control characters"
    )]
    BadName(String),
    /// `add` of a name that exists.
    #[error(
        "a schedule named {0:?} exists already: remove it first, or replace it (martelli schedule \
         add --replace; Schedules::replace)"
    )]
    Exists(String),
    /// A schedule stored in Redis that cannot be read (written by hand or by another program).
    #[error("the schedule {name:?} stored in the broker cannot be read: {detail}")]
    Unreadable {
        /// The schedule.
        name: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The task's arguments could not be encoded.
    #[error("could not encode the scheduled task's arguments as MessagePack: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The broker (connecting, or a command).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

fn broker_error(action: &'static str) -> impl FnOnce(redis::RedisError) -> ScheduleError {
    move |source| ScheduleError::Cluster(ClusterError::Broker { action, source })
}

/// What happens to the ticks missed while no scheduler ran (docs/protocol.md, "Addition 4").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// The latest missed tick fires once (the default); the ticks before it are passed over.
    #[default]
    Latest,
    /// No missed tick fires: the next one fires on time. A tick that is only late, with no whole
    /// tick missed before it, still fires.
    Skip,
}

impl CatchUp {
    fn wire(self) -> &'static str {
        match self {
            CatchUp::Latest => "latest",
            CatchUp::Skip => "skip",
        }
    }

    fn from_wire(s: &str) -> CatchUp {
        if s == "skip" {
            CatchUp::Skip
        } else {
            CatchUp::Latest
        }
    }
}

impl std::fmt::Display for CatchUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.wire())
    }
}

/// A periodic task: a name, when it ticks, and the task it queues at each tick.
#[derive(Debug, Clone)]
pub struct Schedule {
    name: String,
    timing: Timing,
    task: String,
    payload: Vec<u8>,
    queue: String,
    priority: Priority,
    catch_up: CatchUp,
    enabled: bool,
    keep: Option<Duration>,
    max_attempts: u32,
    retry: Option<Retry>,
}

fn check_name(name: &str) -> Result<(), ScheduleError> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ScheduleError::BadName(name.to_owned()));
    }
    Ok(())
}

impl Schedule {
    fn new(name: String, timing: Timing, task: String) -> Result<Schedule, ScheduleError> {
        check_name(&name)?;
        Ok(Schedule {
            name,
            timing,
            task,
            // A task of no arguments: the empty argument tuple.
            payload: vec![0x90],
            queue: DEFAULT_QUEUE.to_owned(),
            priority: Priority::Normal,
            catch_up: CatchUp::Latest,
            enabled: true,
            keep: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry: None,
        })
    }

    /// Queues `task` at every match of the cron expression `expr` (UTC): 5 fields (minute hour
    /// day-of-month month day-of-week) or 6 (a seconds field first); an error names the field at
    /// fault.
    pub fn cron(
        name: impl Into<String>,
        expr: &str,
        task: impl Into<String>,
    ) -> Result<Schedule, ScheduleError> {
        Schedule::new(name.into(), Timing::Cron(expr.parse()?), task.into())
    }

    /// Queues `task` at every multiple of `every` since the Unix epoch (so every hour is on the
    /// hour, UTC). At least 1 ms.
    pub fn every(
        name: impl Into<String>,
        every: Duration,
        task: impl Into<String>,
    ) -> Result<Schedule, ScheduleError> {
        if every < Duration::from_millis(1) {
            return Err(ScheduleError::BadInterval(format!("{every:?}")));
        }
        Schedule::new(name.into(), Timing::Every(every), task.into())
    }

    /// The task's arguments, for a `#[martelli::task]` function: the argument tuple (`(a, b)`;
    /// `(x,)` for one argument), encoded as MessagePack. Without it the task gets `()`.
    pub fn args<A: Serialize + ?Sized>(mut self, args: &A) -> Result<Schedule, ScheduleError> {
        self.payload = rmp_serde::to_vec_named(args)?;
        Ok(self)
    }

    /// The task's payload as raw bytes (for raw tasks and tasks of other languages).
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Schedule {
        self.payload = payload.into();
        self
    }

    /// The queue the task goes to (`default` unless set).
    pub fn queue(mut self, queue: impl Into<String>) -> Schedule {
        self.queue = queue.into();
        self
    }

    /// The task's priority stream.
    pub fn priority(mut self, priority: Priority) -> Schedule {
        self.priority = priority;
        self
    }

    /// What happens to ticks missed while no scheduler ran ([`CatchUp::Latest`] unless set).
    pub fn catch_up(mut self, catch_up: CatchUp) -> Schedule {
        self.catch_up = catch_up;
        self
    }

    /// Whether its ticks queue tasks (`true` unless set).
    pub fn enabled(mut self, enabled: bool) -> Schedule {
        self.enabled = enabled;
        self
    }

    /// Each task keeps a record (state and result, read with `Client::status`/`Client::result`
    /// or `martelli result NAME@TICK`) until `ttl` after it ends (docs/protocol.md, "Addition 1").
    pub fn result_ttl(mut self, ttl: Duration) -> Schedule {
        self.keep = Some(ttl);
        self
    }

    /// Deliveries allowed before a task is dead-lettered (3 unless set; at least 1).
    pub fn max_attempts(mut self, n: u32) -> Schedule {
        self.max_attempts = n.max(1);
        self
    }

    /// Runs each task again with backoff when it fails (docs/protocol.md, "Addition 2").
    pub fn retry(mut self, retry: Retry) -> Schedule {
        self.retry = Some(retry);
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When it ticks.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// The task envelope without `id`, as stored in the schedule's hash.
    fn envelope(&self) -> Result<Vec<u8>, ScheduleError> {
        let envelope = TaskEnvelope {
            v: PROTOCOL_VERSION,
            id: String::new(),
            task: self.task.clone(),
            payload: self.payload.clone(),
            reply: None,
            deadline: None,
            max_attempts: self.max_attempts,
            attempts: 0,
            started: false,
            keep: self.keep.map(duration_ms),
            retry: self.retry.clone(),
            retries: 0,
            errors: Vec::new(),
            slot: None,
            flow: None,
        };
        let bytes = envelope.encode()?;
        let mut value = rmpv::decode::read_value(&mut &bytes[..])
            .map_err(|e| ScheduleError::Encode(rmp_serde::encode::Error::Syntax(e.to_string())))?;
        if let rmpv::Value::Map(pairs) = &mut value {
            pairs.retain(|(k, _)| k.as_str() != Some("id"));
        }
        let mut out = Vec::with_capacity(bytes.len());
        rmpv::encode::write_value(&mut out, &value)
            .map_err(|e| ScheduleError::Encode(rmp_serde::encode::Error::InvalidValueWrite(e)))?;
        Ok(out)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Where schedules live and how to reach the broker: for [`Schedules`] and [`Scheduler`].
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    prefix: String,
    tls_ca: Option<PathBuf>,
    max_sleep: Duration,
    quiet: bool,
}

impl Default for SchedulerOptions {
    fn default() -> SchedulerOptions {
        SchedulerOptions {
            prefix: DEFAULT_PREFIX.to_owned(),
            tls_ca: None,
            max_sleep: Duration::from_secs(1),
            quiet: false,
        }
    }
}

impl SchedulerOptions {
    /// The prefix of every key (`martelli` unless set).
    pub fn prefix(mut self, prefix: impl Into<String>) -> SchedulerOptions {
        self.prefix = prefix.into();
        self
    }

    /// For a `rediss://` broker: trust the CA certificates of this PEM file.
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> SchedulerOptions {
        self.tls_ca = Some(path.into());
        self
    }

    /// The longest a scheduler sleeps between two looks at the schedules (1 s unless set; at
    /// least 10 ms): how soon it sees a schedule added or changed.
    pub fn max_sleep(mut self, max_sleep: Duration) -> SchedulerOptions {
        self.max_sleep = max_sleep.max(Duration::from_millis(10));
        self
    }

    /// Whether a scheduler says nothing on stderr when it fires (it still reports problems).
    pub fn quiet(mut self, quiet: bool) -> SchedulerOptions {
        self.quiet = quiet;
        self
    }

    fn broker(&self, url: &str) -> Result<Broker, ClusterError> {
        Broker::new(url, self.tls_ca.as_deref())
    }
}

/// Keys of schedules.
fn index_key(prefix: &str) -> String {
    format!("{prefix}:schedules")
}

fn hash_key(prefix: &str, name: &str) -> String {
    format!("{prefix}:schedule:{name}")
}

/// The id of the task a schedule queues at a tick: `NAME@TICK`.
pub fn task_id(name: &str, tick_ms: u64) -> String {
    format!("{name}@{tick_ms}")
}

/// A schedule as stored in Redis, with its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// Its name.
    pub name: String,
    /// When it ticks, as text: `cron EXPR` or `every INTERVAL`.
    pub timing: String,
    /// The task it queues.
    pub task: String,
    /// The queue the task goes to.
    pub queue: String,
    /// The priority stream (`high`, `normal`, `low`).
    pub priority: String,
    /// The catch-up rule.
    pub catch_up: CatchUp,
    /// Whether its ticks queue tasks.
    pub enabled: bool,
    /// The result TTL of its tasks' records, when they keep one.
    pub keep_ms: Option<u64>,
    /// When it was first added (Unix ms, broker's clock).
    pub created_ms: Option<u64>,
    /// The latest tick claimed, fired or passed over (Unix ms).
    pub last_ms: Option<u64>,
    /// The next tick (Unix ms).
    pub next_ms: Option<u64>,
    /// Ticks that queued a task.
    pub fired: u64,
    /// Ticks passed over (catch-up `skip`, or disabled).
    pub skipped: u64,
    /// The latest tick that queued a task (Unix ms).
    pub last_fired_ms: Option<u64>,
    /// When (broker's clock, Unix ms) that task was queued.
    pub fired_at_ms: Option<u64>,
    /// That task's id.
    pub last_id: Option<String>,
}

impl ScheduleInfo {
    fn from_hash(name: &str, fields: &[(String, Vec<u8>)]) -> ScheduleInfo {
        let get = |k: &str| {
            fields
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
        let timing = match (get("cron"), num("every")) {
            (Some(cron), _) => format!("cron {cron}"),
            (None, Some(every)) => {
                format!("every {}", format_interval(Duration::from_millis(every)))
            }
            (None, None) => "(none)".to_owned(),
        };
        ScheduleInfo {
            name: name.to_owned(),
            timing,
            task: get("task").unwrap_or_default(),
            queue: get("queue").unwrap_or_default(),
            priority: match get("priority").as_deref() {
                Some("0") => "high",
                Some("2") => "low",
                _ => "normal",
            }
            .to_owned(),
            catch_up: CatchUp::from_wire(&get("catch_up").unwrap_or_default()),
            enabled: get("enabled").as_deref() != Some("0"),
            keep_ms: num("keep"),
            created_ms: num("created"),
            last_ms: num("last"),
            next_ms: num("next"),
            fired: num("fired").unwrap_or(0),
            skipped: num("skipped").unwrap_or(0),
            last_fired_ms: num("last_fired"),
            fired_at_ms: num("fired_at"),
            last_id: get("last_id"),
        }
    }
}

/// Reads a hash as (field, value) pairs.
fn hgetall(conn: &mut Connection, key: &str) -> redis::RedisResult<Vec<(String, Vec<u8>)>> {
    let value: Value = redis::cmd("HGETALL").arg(key).query(conn)?;
    let pairs = match &value {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((conn::string(k)?, conn::bytes(v)?.to_vec())))
            .collect(),
        other => conn::array(other)
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => Some((conn::string(k)?, conn::bytes(v)?.to_vec())),
                _ => None,
            })
            .collect(),
    };
    Ok(pairs)
}

/// Reads the broker's clock, in Unix ms.
fn broker_now(conn: &mut Connection) -> redis::RedisResult<u64> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(conn)?;
    Ok(secs * 1000 + micros / 1000)
}

/// Adds, lists, disables and removes schedules.
pub struct Schedules {
    broker: Broker,
    prefix: String,
    conn: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for Schedules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedules")
            .field("broker", &self.broker.shown())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Schedules {
    /// Connects to the broker at `url` (checked at once).
    pub fn connect(url: &str, options: &SchedulerOptions) -> Result<Schedules, ScheduleError> {
        let broker = options.broker(url)?;
        let conn = broker.connect_checked()?;
        Ok(Schedules {
            broker,
            prefix: options.prefix.clone(),
            conn: Mutex::new(Some(conn)),
        })
    }

    fn query<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, ScheduleError>,
    ) -> Result<T, ScheduleError> {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => self.broker.connect()?,
        };
        let value = f(&mut conn)?;
        *slot = Some(conn);
        Ok(value)
    }

    fn write(&self, schedule: &Schedule, replace: bool) -> Result<bool, ScheduleError> {
        let envelope = schedule.envelope()?;
        let (kind, value) = match &schedule.timing {
            Timing::Cron(cron) => ("cron", cron.as_str().to_owned()),
            Timing::Every(every) => ("every", duration_ms(*every).to_string()),
        };
        let prefix = self.prefix.clone();
        self.query(|conn| {
            let now = broker_now(conn).map_err(broker_error("read its clock (TIME)"))?;
            let next =
                schedule
                    .timing
                    .next_after(now)
                    .ok_or_else(|| ScheduleError::Unreadable {
                        name: schedule.name.clone(),
                        detail: format!("{} never ticks after now", schedule.timing),
                    })?;
            let rev = uuid::Uuid::new_v4().simple().to_string();
            let reply: (String, String) = redis::Script::new(scripts::ADD_SCRIPT)
                .key(hash_key(&prefix, &schedule.name))
                .key(index_key(&prefix))
                .arg(&schedule.name)
                .arg(if replace { "1" } else { "0" })
                .arg(rev)
                .arg(kind)
                .arg(value)
                .arg(&schedule.task)
                .arg(&schedule.queue)
                .arg(Keys::stream_index(schedule.priority).to_string())
                .arg(envelope)
                .arg(
                    schedule
                        .keep
                        .map(|k| duration_ms(k).to_string())
                        .unwrap_or_default(),
                )
                .arg(schedule.catch_up.wire())
                .arg(if schedule.enabled { "1" } else { "0" })
                .arg(next)
                .invoke(conn)
                .map_err(broker_error("add a schedule"))?;
            match reply.0.as_str() {
                "exists" => Err(ScheduleError::Exists(schedule.name.clone())),
                "replaced" => Ok(true),
                _ => Ok(false),
            }
        })
    }

    /// Adds a schedule; an error if one of that name exists.
    pub fn add(&self, schedule: &Schedule) -> Result<(), ScheduleError> {
        self.write(schedule, false).map(|_| ())
    }

    /// Adds a schedule or replaces the one of that name, keeping its state (the ticks it fired
    /// are not fired again). True when it replaced one.
    pub fn replace(&self, schedule: &Schedule) -> Result<bool, ScheduleError> {
        self.write(schedule, true)
    }

    /// Removes a schedule (the tasks it queued stay queued). False when there was none.
    pub fn remove(&self, name: &str) -> Result<bool, ScheduleError> {
        let prefix = self.prefix.clone();
        self.query(|conn| {
            let n: i64 = redis::Script::new(scripts::REMOVE_SCRIPT)
                .key(hash_key(&prefix, name))
                .key(index_key(&prefix))
                .arg(name)
                .invoke(conn)
                .map_err(broker_error("remove a schedule"))?;
            Ok(n > 0)
        })
    }

    /// Enables or disables a schedule (a disabled schedule's ticks pass without a task). False
    /// when there is none.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<bool, ScheduleError> {
        let prefix = self.prefix.clone();
        self.query(|conn| {
            let n: i64 = redis::Script::new(scripts::ENABLE_SCRIPT)
                .key(hash_key(&prefix, name))
                .arg(if enabled { "1" } else { "0" })
                .invoke(conn)
                .map_err(broker_error("enable or disable a schedule"))?;
            Ok(n > 0)
        })
    }

    /// One schedule, if it exists.
    pub fn get(&self, name: &str) -> Result<Option<ScheduleInfo>, ScheduleError> {
        let prefix = self.prefix.clone();
        self.query(|conn| {
            let fields =
                hgetall(conn, &hash_key(&prefix, name)).map_err(broker_error("read a schedule"))?;
            Ok((!fields.is_empty()).then(|| ScheduleInfo::from_hash(name, &fields)))
        })
    }

    /// Every schedule under the prefix, by name.
    pub fn list(&self) -> Result<Vec<ScheduleInfo>, ScheduleError> {
        let prefix = self.prefix.clone();
        self.query(|conn| list(conn, &prefix).map_err(broker_error("list the schedules")))
    }
}

/// Every schedule under `prefix`, by name (for the inspector too).
pub(crate) fn list(conn: &mut Connection, prefix: &str) -> redis::RedisResult<Vec<ScheduleInfo>> {
    let mut names: Vec<String> = redis::cmd("ZRANGE")
        .arg(index_key(prefix))
        .arg(0)
        .arg(-1)
        .query(conn)?;
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let fields = hgetall(conn, &hash_key(prefix, &name))?;
        if !fields.is_empty() {
            out.push(ScheduleInfo::from_hash(&name, &fields));
        }
    }
    Ok(out)
}

/// A stored schedule's timing and where its task goes, as a scheduler needs them.
#[derive(Debug)]
struct Stored {
    rev: String,
    timing: Timing,
    stream: String,
}

impl Stored {
    fn read(
        conn: &mut Connection,
        prefix: &str,
        name: &str,
    ) -> Result<Option<Stored>, ScheduleError> {
        let fields =
            hgetall(conn, &hash_key(prefix, name)).map_err(broker_error("read a schedule"))?;
        if fields.is_empty() {
            return Ok(None);
        }
        let get = |k: &str| {
            fields
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let unreadable = |detail: String| ScheduleError::Unreadable {
            name: name.to_owned(),
            detail,
        };
        let timing = match (get("cron"), get("every")) {
            (Some(cron), None) => Timing::Cron(cron.parse()?),
            (None, Some(every)) => match every.parse::<u64>() {
                Ok(ms) if ms > 0 => Timing::Every(Duration::from_millis(ms)),
                _ => {
                    return Err(unreadable(format!(
                        "its interval {every:?} is not a number of ms"
                    )));
                }
            },
            _ => {
                return Err(unreadable(
                    "it needs exactly one of `cron` and `every`".into(),
                ));
            }
        };
        let priority = match get("priority").as_deref() {
            Some("0") => Priority::High,
            Some("2") => Priority::Low,
            _ => Priority::Normal,
        };
        let queue = get("queue").unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
        let keys = Keys::new(prefix, &queue);
        Ok(Some(Stored {
            rev: get("rev").unwrap_or_default(),
            timing,
            stream: keys.streams[Keys::stream_index(priority)].clone(),
        }))
    }
}

impl Schedules {
    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}
