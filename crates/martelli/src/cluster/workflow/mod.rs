//! Workflows (docs/protocol.md, "Addition 5: workflows"): a chain runs tasks one after another,
//! each result passed to the next; a group fans tasks out; a chord fans them out and then runs a
//! callback on all their results, in member order.
//!
//! A chord is one *workflow*: a hash in Redis (`{prefix}:flow:{id}`) that holds its callback's
//! envelope and counts its members; a chain of n steps is n − 1 workflows of one member each.
//! Completion is counted by a script ([`script::FLOW_SCRIPT`]) that the worker storing a member's
//! result runs in the same pipeline, before it acknowledges the member's entry: the script counts
//! each member once (by its index) and queues the callback once, so a worker killed at any moment
//! neither loses nor doubles a callback. Nothing polls.
//!
//! Every task of a workflow keeps a record (Addition 1): its results are read by id
//! ([`Client::status`], [`Client::result`], `martelli result ID`). A chain's result is its last
//! step's, a chord's its callback's; when a step or member fails, that record fails with the
//! member's error.
//!
//! ```no_run
//! use martelli::cluster::{Client, Step};
//!
//! let client = Client::connect("redis://127.0.0.1:6379")?;
//! // add(add(1, 2), 10), then add(…, 100): 113.
//! let chain = client.chain([
//!     Step::new("add", &(1, 2))?,
//!     Step::new("add", &(10,))?,
//!     Step::new("add", &(100,))?,
//! ])?;
//! // sum([square(0), square(1), …, square(9)])
//! let members = (0..10).map(|n| Step::new("square", &(n,))).collect::<Result<Vec<_>, _>>()?;
//! let chord = client.chord(members, Step::new("sum", &())?)?;
//! // Later, from this or any process:
//! let total: Option<_> = client.result::<i64>(chord.id())?;
//! # let _ = (chain, total);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod script;

use super::envelope::{FlowRef, Retry, TaskEnvelope};
use super::error::ClusterError;
use super::record::UNENDED_GRACE_MS;
use super::{Client, Keys, PROTOCOL_VERSION, unix_ms};
use crate::options::Priority;
use serde::Serialize;
use std::time::Duration;

/// How long a workflow's records stay after its tasks end, unless the client or the options say
/// otherwise: an hour, as for [`Client::send`].
const DEFAULT_KEEP: Duration = Duration::from_secs(3600);

/// One task of a workflow: a name and its arguments, with its options.
///
/// A step that follows another (a chain's next step, a chord's callback) gets the previous value
/// as its **first argument**, before the arguments given here (as Celery does): `Step::new("add",
/// &(10,))` after a step that returned 5 runs `add(5, 10)`. So its arguments must encode as an
/// array: a tuple (`&(10,)`, or `&()` for none). [`Step::whole`] passes the value as the whole
/// payload instead (a typed task of one argument).
#[derive(Debug, Clone)]
pub struct Step {
    task: String,
    payload: Vec<u8>,
    whole: bool,
    priority: Priority,
    max_attempts: Option<u32>,
    retry: Option<Retry>,
    id: Option<String>,
}

impl Step {
    /// The task `task` with serde arguments (encoded as MessagePack, as [`Client::submit`] does).
    pub fn new<A: Serialize + ?Sized>(task: &str, args: &A) -> Result<Step, ClusterError> {
        Ok(Step::raw(task, rmp_serde::to_vec_named(args)?))
    }

    /// The task `task` with a payload of bytes (MessagePack, for a step that gets a previous
    /// value, unless [`whole`](Step::whole)).
    pub fn raw(task: &str, payload: impl Into<Vec<u8>>) -> Step {
        Step {
            task: task.to_owned(),
            payload: payload.into(),
            whole: false,
            priority: Priority::Normal,
            max_attempts: None,
            retry: None,
            id: None,
        }
    }

    /// The previous value is this step's whole payload (its arguments given here are ignored),
    /// not its first argument.
    pub fn whole(mut self) -> Step {
        self.whole = true;
        self
    }

    /// Which stream the step goes to.
    pub fn priority(mut self, priority: Priority) -> Step {
        self.priority = priority;
        self
    }

    /// Deliveries the step gets before it is dead-lettered (which fails its workflow).
    pub fn max_attempts(mut self, attempts: u32) -> Step {
        self.max_attempts = Some(attempts);
        self
    }

    /// Runs the step again on the errors `retry` names (Addition 2); only its final result
    /// counts for the workflow.
    pub fn retry(mut self, retry: Retry) -> Step {
        self.retry = Some(retry);
        self
    }

    /// The step's task id (default: a new random id).
    pub fn id(mut self, id: impl Into<String>) -> Step {
        self.id = Some(id.into());
        self
    }

    /// The task name.
    pub fn task(&self) -> &str {
        &self.task
    }
}

/// What a member's failure does to its chord (the protocol's `on_fail`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnMemberFailure {
    /// The chord fails with the member's error; the callback never runs (the default).
    #[default]
    Fail,
    /// The member counts as done with a nil value (`None` to a callback that takes
    /// `Vec<Option<T>>`); the callback runs on every member's value.
    Ignore,
}

/// Options of a chain or chord.
#[derive(Debug, Clone, Default)]
pub struct FlowOptions {
    keep: Option<Duration>,
    on_member_failure: OnMemberFailure,
}

impl FlowOptions {
    /// The defaults: records kept the client's result TTL (an hour without one), a member's
    /// failure fails the chord.
    pub fn new() -> FlowOptions {
        FlowOptions::default()
    }

    /// How long the records of the workflow's tasks, and its hash, stay after it ends.
    pub fn result_ttl(mut self, ttl: Duration) -> FlowOptions {
        self.keep = Some(ttl);
        self
    }

    /// What a chord member's failure does (a chain always stops at a failed step).
    pub fn on_member_failure(mut self, on: OnMemberFailure) -> FlowOptions {
        self.on_member_failure = on;
        self
    }
}

/// A chain that was queued: its result is its last step's, read by [`id`](Chain::id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    steps: Vec<String>,
}

impl Chain {
    /// The id to read the chain's result by: its last step's. When a step fails, this record
    /// fails with that step's error.
    pub fn id(&self) -> &str {
        self.steps.last().map_or("", String::as_str)
    }

    /// The task ids of the steps, in order.
    pub fn steps(&self) -> &[String] {
        &self.steps
    }
}

/// A group that was queued: its members' results are read by id, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    ids: Vec<String>,
}

impl Group {
    /// The task ids of the members, in member order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }
}

/// A chord that was queued: its result is its callback's, read by [`id`](Chord::id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chord {
    id: String,
    members: Vec<String>,
}

impl Chord {
    /// The id to read the chord's result by: its callback's. When a member fails (with
    /// [`OnMemberFailure::Fail`]), this record fails with the member's error.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The task ids of the members, in member order.
    pub fn members(&self) -> &[String] {
        &self.members
    }
}

/// A task ready to go: its envelope, and where.
struct Planned {
    envelope: TaskEnvelope,
    stream: usize,
}

/// A workflow's hash, ready to go.
struct Flow {
    id: String,
    fields: Vec<(&'static str, Vec<u8>)>,
}

/// One workflow of a plan (the protocol's fields).
struct Spec {
    total: u32,
    /// The index of the callback in the plan's tasks.
    callback: usize,
    /// The index of the task whose record a failure fails.
    end: usize,
    shape: &'static str,
    /// How errors name the failed member: a chain step in full (`chain step 2 of 3`), a chord's
    /// members by kind (`chord member`, the script adds `I of N`).
    label: String,
    on_fail: OnMemberFailure,
    whole: bool,
}

/// What a submission writes, in one `MULTI`/`EXEC`.
struct Plan {
    keep: u64,
    flows: Vec<Flow>,
    /// Every task's record is written `queued`.
    tasks: Vec<Planned>,
    /// The indexes in `tasks` of those added to their stream now (the others are callbacks).
    now: Vec<usize>,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Plan {
    fn new(keep: u64) -> Plan {
        Plan {
            keep,
            flows: Vec::new(),
            tasks: Vec::new(),
            now: Vec::new(),
        }
    }

    fn task(&mut self, step: Step, max_attempts: u32, flow: Option<FlowRef>) -> usize {
        let envelope = TaskEnvelope {
            v: PROTOCOL_VERSION,
            id: step.id.unwrap_or_else(new_id),
            task: step.task,
            payload: step.payload,
            reply: None,
            deadline: None,
            max_attempts: step.max_attempts.unwrap_or(max_attempts),
            attempts: 0,
            started: false,
            keep: Some(self.keep),
            retry: step.retry,
            retries: 0,
            errors: Vec::new(),
            slot: None,
            flow,
        };
        self.tasks.push(Planned {
            envelope,
            stream: Keys::stream_index(step.priority),
        });
        self.tasks.len() - 1
    }
}

/// The bytes of `envelope` without the value of `payload`, the key `payload` moved last (the
/// protocol's `head`): the script appends the payload's value.
fn head(envelope: &TaskEnvelope) -> Result<Vec<u8>, ClusterError> {
    let mut bare = envelope.clone();
    bare.payload = Vec::new();
    let bytes = bare.encode()?;
    // The key `payload` (fixstr of 7) and an empty bin. Neither a str (valid UTF-8, where 0xc4 is
    // followed by a continuation byte) nor an integer before it can hold these bytes, so the
    // first match is the key.
    const KEY_AND_EMPTY: &[u8] = b"\xa7payload\xc4\x00";
    let at = bytes
        .windows(KEY_AND_EMPTY.len())
        .position(|w| w == KEY_AND_EMPTY)
        .ok_or_else(|| {
            ClusterError::InvalidOption(
                "internal: the envelope's payload key was not found".to_owned(),
            )
        })?;
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..at]);
    out.extend_from_slice(&bytes[at + KEY_AND_EMPTY.len()..]);
    out.extend_from_slice(&KEY_AND_EMPTY[..8]);
    Ok(out)
}

/// The elements of a step's argument array and how many there are; `()` (nil) is no argument.
fn arguments(task: &str, payload: &[u8]) -> Result<(u32, Vec<u8>), ClusterError> {
    let (count, skip) = match payload.first() {
        Some(0xc0) if payload.len() == 1 => (0, 1),
        Some(&b) if (0x90..=0x9f).contains(&b) => (u32::from(b & 0x0f), 1),
        Some(0xdc) if payload.len() >= 3 => {
            (u32::from(u16::from_be_bytes([payload[1], payload[2]])), 3)
        }
        Some(0xdd) if payload.len() >= 5 => (
            u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]),
            5,
        ),
        _ => {
            return Err(ClusterError::InvalidOption(format!(
                "the step {task:?} gets the previous value as its first argument, so its own \
                 arguments must encode as an array: give a tuple (`&(x,)`, or `&()` for none), \
                 or call Step::whole() to pass the previous value as its whole payload"
            )));
        }
    };
    Ok((count, payload[skip..].to_vec()))
}

impl Plan {
    /// A workflow whose callback is `tasks[callback]` and whose failure fails the record of
    /// `tasks[end]`.
    fn flow(&mut self, keys: &Keys, id: &str, spec: &Spec) -> Result<(), ClusterError> {
        let Spec {
            total,
            callback,
            end,
            shape,
            ref label,
            on_fail,
            whole,
        } = *spec;
        let cb = &self.tasks[callback];
        let mut fields: Vec<(&'static str, Vec<u8>)> = vec![
            ("total", total.to_string().into_bytes()),
            ("done", b"0".to_vec()),
            ("state", b"open".to_vec()),
            ("shape", shape.as_bytes().to_vec()),
            ("label", label.as_bytes().to_vec()),
            (
                "on_fail",
                match on_fail {
                    OnMemberFailure::Fail => b"fail".to_vec(),
                    OnMemberFailure::Ignore => b"ignore".to_vec(),
                },
            ),
            ("head", head(&cb.envelope)?),
            ("stream", keys.streams[cb.stream].clone().into_bytes()),
            (
                "end",
                keys.record(&self.tasks[end].envelope.id).into_bytes(),
            ),
            ("end_id", self.tasks[end].envelope.id.clone().into_bytes()),
            ("keep", self.keep.to_string().into_bytes()),
        ];
        if whole {
            fields.push(("pass", b"whole".to_vec()));
        } else {
            let (argc, args) = arguments(&cb.envelope.task, &cb.envelope.payload)?;
            fields.push(("pass", b"first".to_vec()));
            fields.push(("argc", argc.to_string().into_bytes()));
            fields.push(("args", args));
        }
        self.flows.push(Flow {
            id: id.to_owned(),
            fields,
        });
        Ok(())
    }

    /// The `MULTI`/`EXEC` that writes it all: the workflows' hashes, every task's `queued`
    /// record, then the tasks that go now.
    fn pipeline(&self, keys: &Keys, max_payload: usize) -> Result<redis::Pipeline, ClusterError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let unended = self.keep.saturating_add(UNENDED_GRACE_MS);
        let now = unix_ms();
        if !self.flows.is_empty() {
            // The index of workflows: drop those whose hash has expired, add these.
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(keys.flows())
                .arg("-inf")
                .arg(format!("({now}"))
                .ignore();
        }
        for flow in &self.flows {
            pipe.cmd("ZADD")
                .arg(keys.flows())
                .arg(now.saturating_add(unended))
                .arg(&flow.id)
                .ignore();
            let key = keys.flow(&flow.id);
            let mut cmd = redis::cmd("HSET");
            cmd.arg(&key);
            for (field, value) in &flow.fields {
                cmd.arg(*field).arg(value.as_slice());
            }
            pipe.add_command(cmd).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(unended).ignore();
        }
        for planned in &self.tasks {
            let key = keys.record(&planned.envelope.id);
            pipe.cmd("HSET")
                .arg(&key)
                .arg("state")
                .arg("queued")
                .arg("task")
                .arg(&planned.envelope.task)
                .arg("attempts")
                .arg(0)
                .arg("updated")
                .arg(now)
                .ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(unended).ignore();
        }
        for &index in &self.now {
            let planned = &self.tasks[index];
            let bytes = planned.envelope.encode()?;
            if bytes.len() > max_payload {
                return Err(ClusterError::PayloadTooLarge {
                    size: bytes.len(),
                    limit: max_payload,
                });
            }
            pipe.cmd("XADD")
                .arg(&keys.streams[planned.stream])
                .arg("*")
                .arg(super::envelope::ENTRY_FIELD)
                .arg(bytes)
                .ignore();
        }
        Ok(pipe)
    }
}

impl Client {
    /// Queues a chain: each step runs once the one before it returned, with that value as its
    /// first argument (see [`Step`]). A step that fails stops the chain: the later steps never
    /// run, and the chain's record ([`Chain::id`]) fails with the step's error.
    pub fn chain(&self, steps: impl IntoIterator<Item = Step>) -> Result<Chain, ClusterError> {
        self.chain_with(steps, &FlowOptions::default())
    }

    /// [`chain`](Client::chain) with options.
    pub fn chain_with(
        &self,
        steps: impl IntoIterator<Item = Step>,
        options: &FlowOptions,
    ) -> Result<Chain, ClusterError> {
        let steps: Vec<Step> = steps.into_iter().collect();
        if steps.is_empty() {
            return Err(ClusterError::InvalidOption(
                "a chain needs at least one step".to_owned(),
            ));
        }
        let keys = self.keys();
        let mut plan = Plan::new(ms(options.keep.or(self.keep()).unwrap_or(DEFAULT_KEEP)));
        let n = steps.len();
        // Step k (k < n - 1) is the one member of workflow k, whose callback is step k + 1.
        let flow_ids: Vec<String> = (0..n.saturating_sub(1)).map(|_| new_id()).collect();
        let mut wholes = Vec::with_capacity(n);
        for (k, step) in steps.into_iter().enumerate() {
            wholes.push(step.whole);
            let flow = flow_ids.get(k).map(|id| FlowRef {
                id: id.clone(),
                i: 0,
            });
            plan.task(step, self.max_attempts(), flow);
        }
        let end = n - 1;
        for (k, id) in flow_ids.iter().enumerate() {
            plan.flow(
                &keys,
                id,
                &Spec {
                    total: 1,
                    callback: k + 1,
                    end,
                    shape: "one",
                    label: format!("chain step {} of {n}", k + 1),
                    on_fail: OnMemberFailure::Fail,
                    whole: wholes[k + 1],
                },
            )?;
        }
        plan.now.push(0);
        self.run_plan(&plan, &keys)?;
        Ok(Chain {
            steps: plan.tasks.into_iter().map(|t| t.envelope.id).collect(),
        })
    }

    /// Queues a group: every member at once. Their results are read by id, in member order
    /// ([`Group::ids`], [`Client::result`]).
    pub fn group(&self, members: impl IntoIterator<Item = Step>) -> Result<Group, ClusterError> {
        self.group_with(members, &FlowOptions::default())
    }

    /// [`group`](Client::group) with options (only the result TTL applies).
    pub fn group_with(
        &self,
        members: impl IntoIterator<Item = Step>,
        options: &FlowOptions,
    ) -> Result<Group, ClusterError> {
        let keys = self.keys();
        let mut plan = Plan::new(ms(options.keep.or(self.keep()).unwrap_or(DEFAULT_KEEP)));
        for step in members {
            let index = plan.task(step, self.max_attempts(), None);
            plan.now.push(index);
        }
        self.run_plan(&plan, &keys)?;
        Ok(Group {
            ids: plan.tasks.into_iter().map(|t| t.envelope.id).collect(),
        })
    }

    /// Queues a chord: every member at once, then `callback` once all of them have returned, with
    /// the array of their values, in member order, as its first argument (see [`Step`]). A
    /// member's failure fails the chord's record ([`Chord::id`]) with its error, and the callback
    /// never runs, unless [`FlowOptions::on_member_failure`] says otherwise.
    pub fn chord(
        &self,
        members: impl IntoIterator<Item = Step>,
        callback: Step,
    ) -> Result<Chord, ClusterError> {
        self.chord_with(members, callback, &FlowOptions::default())
    }

    /// [`chord`](Client::chord) with options.
    pub fn chord_with(
        &self,
        members: impl IntoIterator<Item = Step>,
        callback: Step,
        options: &FlowOptions,
    ) -> Result<Chord, ClusterError> {
        let keys = self.keys();
        let mut plan = Plan::new(ms(options.keep.or(self.keep()).unwrap_or(DEFAULT_KEEP)));
        let flow = new_id();
        let mut total = 0u32;
        for step in members {
            let i = total;
            total = total.checked_add(1).ok_or_else(|| {
                ClusterError::InvalidOption("a chord has at most 2^32 − 1 members".to_owned())
            })?;
            let index = plan.task(
                step,
                self.max_attempts(),
                Some(FlowRef {
                    id: flow.clone(),
                    i,
                }),
            );
            plan.now.push(index);
        }
        if total == 0 {
            return Err(ClusterError::InvalidOption(
                "a chord needs at least one member".to_owned(),
            ));
        }
        let whole = callback.whole;
        let cb = plan.task(callback, self.max_attempts(), None);
        plan.flow(
            &keys,
            &flow,
            &Spec {
                total,
                callback: cb,
                end: cb,
                shape: "all",
                label: "chord member".to_owned(),
                on_fail: options.on_member_failure,
                whole,
            },
        )?;
        self.run_plan(&plan, &keys)?;
        let id = plan.tasks[cb].envelope.id.clone();
        let mut ids: Vec<String> = plan.tasks.into_iter().map(|t| t.envelope.id).collect();
        ids.pop();
        Ok(Chord { id, members: ids })
    }

    fn run_plan(&self, plan: &Plan, keys: &Keys) -> Result<(), ClusterError> {
        let pipe = plan.pipeline(keys, self.max_payload())?;
        self.query("queue a workflow", |conn, _| pipe.exec(conn))
    }
}

/// The worker's part: the script run that counts a member, added to the pipeline that stores its
/// result, before the acknowledgement of its entry.
pub(crate) fn count(
    pipe: &mut redis::Pipeline,
    keys: &Keys,
    flow: &FlowRef,
    task: &str,
    result: &super::envelope::ResultEnvelope,
) {
    let value: &[u8] = match (&result.status, &result.payload, &result.error) {
        (super::envelope::ResultStatus::Ok, Some(payload), _) => payload,
        (super::envelope::ResultStatus::Ok, None, _) => b"\xc0",
        (_, _, Some(error)) => error.as_bytes(),
        (_, _, None) => b"(no error message)",
    };
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script::FLOW_SCRIPT)
        .arg(2)
        .arg(keys.flow(&flow.id))
        .arg(keys.flows())
        .arg(flow.i)
        .arg(result.status.as_str())
        .arg(value)
        .arg(unix_ms())
        .arg(&result.worker)
        .arg(result.attempts)
        .arg(task)
        .arg(&flow.id);
    pipe.add_command(cmd).ignore();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_ends_with_the_payload_key_and_takes_a_payload() {
        let mut plan = Plan::new(1000);
        let index = plan.task(Step::new("sum", &(1, 2)).unwrap(), 3, None);
        let envelope = &plan.tasks[index].envelope;
        let mut bytes = head(envelope).unwrap();
        assert!(bytes.ends_with(b"\xa7payload"));
        // What the script appends: a bin header and the payload.
        bytes.extend_from_slice(&[0xc4, 3, 0x92, 1, 2]);
        let back = TaskEnvelope::decode(&bytes).unwrap();
        assert_eq!(back.id, envelope.id);
        assert_eq!(back.task, "sum");
        assert_eq!(back.payload, vec![0x92, 1, 2]);
        assert_eq!(back.keep, Some(1000));
    }

    #[test]
    fn arguments_are_an_array_or_nothing() {
        let (n, rest) = arguments("t", &rmp_serde::to_vec(&(7, "x")).unwrap()).unwrap();
        assert_eq!(n, 2);
        assert_eq!(rest, rmp_serde::to_vec(&(7, "x")).unwrap()[1..].to_vec());
        assert_eq!(
            arguments("t", &rmp_serde::to_vec(&()).unwrap()).unwrap().0,
            0
        );
        let err = arguments("t", &rmp_serde::to_vec(&5).unwrap()).unwrap_err();
        assert!(err.to_string().contains("Step::whole"), "{err}");
    }
}
