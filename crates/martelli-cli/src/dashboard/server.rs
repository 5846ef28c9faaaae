//! The dashboard's axum application: the page, its JSON API and its server-sent events.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /`, `/app.js`, `/app.css` | the page ([`assets`](super::assets)) |
//! | `GET /api/config` | the broker, prefix, read-only flag, CSRF token, interval |
//! | `GET /api/history` | the ring of samples and the workers |
//! | `GET /api/events` | server-sent events: one `tick` per reading |
//! | `GET /api/queues/{q}/dead?before=ID\|after=ID&count=N` | a page of dead letters, newest first |
//! | `GET /api/queues/{q}/dead/{id}` | one dead letter, with its envelope and payload preview |
//! | `POST /api/queues/{q}/dead/{id}/requeue`, `…/discard` | act on one dead letter |
//! | `POST /api/queues/{q}/dead/requeue-all`, `…/discard-all` | act on all of them |
//! | `GET /api/queues/{q}/delayed?offset=N&count=N` | a page of delayed tasks, soonest first |
//! | `GET /api/queues/{q}/tasks/{id}` | a task by id |
//! | `GET /api/queues/{q}/platform` | the periodic schedules, the rate limits, the queue's retries, chords and chains |
//!
//! Broker calls are blocking (the `redis` crate's synchronous client): they run on tokio's blocking
//! pool, one at a time on the requests' own connection. Everything the broker holds reaches the page
//! as JSON strings, which the page puts in text nodes: nothing from the broker is ever HTML.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use martelli::cluster::{Bulk, DeadLetterError, DeadLetters, Inspector, MAX_PAGE, PageStart};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::sampler::Shared;
use super::{Auth, Settings, assets, guard};

/// The longest queue name or task id accepted in a path.
const MAX_NAME: usize = 512;

/// Letters or delayed tasks on one page unless the page asks for another count.
const DEFAULT_PAGE: usize = 50;

/// The application's state.
pub(crate) struct App {
    inspector: Mutex<Inspector>,
    broker: String,
    prefix: String,
    settings: Settings,
    shared: Arc<Shared>,
    csrf: String,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("broker", &self.broker)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl App {
    pub(crate) fn new(
        inspector: Inspector,
        settings: Settings,
        shared: Arc<Shared>,
        shutdown: watch::Receiver<bool>,
        csrf: String,
    ) -> Arc<App> {
        Arc::new(App {
            broker: inspector.broker().to_owned(),
            prefix: inspector.prefix().to_owned(),
            inspector: Mutex::new(inspector),
            settings,
            shared,
            csrf,
            shutdown,
        })
    }

    pub(crate) fn broker(&self) -> &str {
        &self.broker
    }

    pub(crate) fn read_only(&self) -> bool {
        self.settings.read_only
    }

    pub(crate) fn auth(&self) -> &Auth {
        &self.settings.auth
    }

    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Runs `f` with the requests' inspector on the blocking pool.
    async fn with_inspector<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Inspector) -> T + Send + 'static,
    ) -> Result<T, Response> {
        let app = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut inspector = app.inspector.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut inspector)
        })
        .await
        .map_err(|e| {
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the request failed: {e}"),
            )
        })
    }
}

/// 32 random bytes from the operating system, in hex: the CSRF token of this run.
pub(crate) fn csrf_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        anyhow::anyhow!(
            "cannot read random bytes from the operating system for the CSRF token: {e}"
        )
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The router, with every request going through [`guard::check`].
pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/app.css", get(assets::style))
        .route("/api/config", get(config))
        .route("/api/history", get(history))
        .route("/api/events", get(events))
        .route("/api/queues/{queue}/dead", get(dead_page))
        .route("/api/queues/{queue}/dead/requeue-all", post(requeue_all))
        .route("/api/queues/{queue}/dead/discard-all", post(discard_all))
        .route("/api/queues/{queue}/dead/{letter}", get(dead_letter))
        .route("/api/queues/{queue}/dead/{letter}/requeue", post(requeue))
        .route("/api/queues/{queue}/dead/{letter}/discard", post(discard))
        .route("/api/queues/{queue}/delayed", get(delayed))
        .route("/api/queues/{queue}/tasks/{id}", get(task))
        .route("/api/queues/{queue}/platform", get(platform))
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            guard::check,
        ))
        .with_state(app)
}

/// A JSON error `{"error": message}`.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn json_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Serialize)]
struct Config<'a> {
    broker: &'a str,
    prefix: &'a str,
    read_only: bool,
    csrf: &'a str,
    interval_ms: u64,
    capacity: usize,
    version: &'static str,
}

async fn config(State(app): State<Arc<App>>) -> Response {
    axum::Json(Config {
        broker: &app.broker,
        prefix: &app.prefix,
        read_only: app.read_only(),
        csrf: &app.csrf,
        interval_ms: u64::try_from(app.settings.interval.as_millis()).unwrap_or(u64::MAX),
        capacity: app.settings.capacity,
        version: env!("CARGO_PKG_VERSION"),
    })
    .into_response()
}

async fn history(State(app): State<Arc<App>>) -> Response {
    json_text(app.shared.history_json())
}

async fn events(State(app): State<Arc<App>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (first, receiver) = app.shared.subscribe();
    let state = Feed {
        first,
        receiver,
        shutdown: app.shutdown.clone(),
    };
    let stream = futures_util::stream::unfold(state, |mut feed| async move {
        if let Some(first) = feed.first.take() {
            return Some((Ok(tick(&first)), feed));
        }
        loop {
            tokio::select! {
                _ = feed.shutdown.changed() => return None,
                received = feed.receiver.recv() => match received {
                    Ok(json) => return Some((Ok(tick(&json)), feed)),
                    // A page that fell behind skips to the newest tick.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

struct Feed {
    first: Option<Arc<str>>,
    receiver: broadcast::Receiver<Arc<str>>,
    shutdown: watch::Receiver<bool>,
}

fn tick(json: &str) -> Event {
    Event::default().event("tick").data(json)
}

/// Checks a queue name or id from a path.
fn name(what: &str, value: &str) -> Result<(), Response> {
    if value.is_empty() || value.len() > MAX_NAME {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            &format!("the {what} must have 1 to {MAX_NAME} bytes"),
        ));
    }
    Ok(())
}

/// A dead-letter error as a response with its status.
fn dead_error(e: &DeadLetterError) -> Response {
    let status = match e {
        DeadLetterError::InvalidId { .. } => StatusCode::BAD_REQUEST,
        DeadLetterError::NotFound { .. } => StatusCode::NOT_FOUND,
        DeadLetterError::NotRequeueable { .. } => StatusCode::CONFLICT,
        _ => StatusCode::BAD_GATEWAY,
    };
    error_response(status, &e.to_string())
}

fn reply<T: Serialize>(result: Result<T, DeadLetterError>) -> Response {
    match result {
        Ok(value) => axum::Json(value).into_response(),
        Err(e) => dead_error(&e),
    }
}

#[derive(Deserialize)]
struct PageQuery {
    before: Option<String>,
    after: Option<String>,
    count: Option<usize>,
    offset: Option<u64>,
}

/// Runs `action` on the dead letters of `queue` (on the blocking pool) and answers with its value
/// as JSON, or with its error and the matching status.
async fn on_dead_letters<T: Serialize + Send + 'static>(
    app: &Arc<App>,
    queue: String,
    action: impl FnOnce(&mut DeadLetters<'_>) -> Result<T, DeadLetterError> + Send + 'static,
) -> Response {
    if let Err(r) = name("queue name", &queue) {
        return r;
    }
    let result = app
        .with_inspector(move |i| action(&mut i.dead_letters(&queue)))
        .await;
    result.map_or_else(|r| r, reply)
}

async fn dead_page(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let count = q.count.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    on_dead_letters(&app, queue, move |d| {
        let start = match (&q.before, &q.after) {
            (Some(before), _) => PageStart::Before(before),
            (None, Some(after)) => PageStart::After(after),
            (None, None) => PageStart::Newest,
        };
        d.page(start, count)
    })
    .await
}

async fn dead_letter(
    State(app): State<Arc<App>>,
    Path((queue, letter)): Path<(String, String)>,
) -> Response {
    on_dead_letters(&app, queue, move |d| d.get(&letter)).await
}

/// What an action on dead letters did.
#[derive(Serialize)]
struct Done {
    done: u64,
    skipped: u64,
}

/// One letter acted on.
const ONE: Done = Done {
    done: 1,
    skipped: 0,
};

impl From<Bulk> for Done {
    fn from(b: Bulk) -> Done {
        Done {
            done: b.done,
            skipped: b.skipped,
        }
    }
}

async fn requeue(
    State(app): State<Arc<App>>,
    Path((queue, letter)): Path<(String, String)>,
) -> Response {
    on_dead_letters(&app, queue, move |d| d.requeue(&letter).map(|()| ONE)).await
}

async fn discard(
    State(app): State<Arc<App>>,
    Path((queue, letter)): Path<(String, String)>,
) -> Response {
    on_dead_letters(&app, queue, move |d| d.discard(&letter).map(|()| ONE)).await
}

async fn requeue_all(State(app): State<Arc<App>>, Path(queue): Path<String>) -> Response {
    on_dead_letters(&app, queue, |d| d.requeue_all().map(Done::from)).await
}

async fn discard_all(State(app): State<Arc<App>>, Path(queue): Path<String>) -> Response {
    on_dead_letters(&app, queue, |d| d.discard_all().map(Done::from)).await
}

async fn delayed(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    if let Err(r) = name("queue name", &queue) {
        return r;
    }
    let count = q.count.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let offset = q.offset.unwrap_or(0);
    let result = app
        .with_inspector(move |i| i.delayed(&queue, offset, count))
        .await;
    match result {
        Ok(Ok(page)) => axum::Json(page).into_response(),
        Ok(Err(e)) => error_response(StatusCode::BAD_GATEWAY, &e.to_string()),
        Err(r) => r,
    }
}

async fn task(State(app): State<Arc<App>>, Path((queue, id)): Path<(String, String)>) -> Response {
    if let Err(r) = name("queue name", &queue).and_then(|()| name("task id", &id)) {
        return r;
    }
    let result = app.with_inspector(move |i| i.task(&queue, &id)).await;
    match result {
        Ok(Ok(view)) => axum::Json(view).into_response(),
        Ok(Err(e)) => error_response(StatusCode::BAD_GATEWAY, &e.to_string()),
        Err(r) => r,
    }
}

async fn platform(State(app): State<Arc<App>>, Path(queue): Path<String>) -> Response {
    if let Err(r) = name("queue name", &queue) {
        return r;
    }
    let result = app.with_inspector(move |i| i.platform(&queue)).await;
    match result {
        Ok(Ok(view)) => axum::Json(view).into_response(),
        Ok(Err(e)) => error_response(StatusCode::BAD_GATEWAY, &e.to_string()),
        Err(r) => r,
    }
}
