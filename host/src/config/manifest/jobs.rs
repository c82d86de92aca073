//! Background jobs in the manifest: `[queues.NAME]`, `[[worker]]` and
//! `[[schedule]]`, and their validation. A route names the queues and
//! topics it may use with `queues = [...]` and `topics = [...]` (checked
//! in [`super::validate`]).

use crate::config::cron::Cron;
use crate::config::units::{ByteSize, Duration};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time;
use toml::Spanned;

/// A `[queues.NAME]` table: how the jobs of one queue are retried, leased
/// and kept.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Attempts a job gets before it is dead-lettered (an `enqueue` may
    /// set its own).
    pub attempts: u32,
    /// The wait before each retry.
    pub backoff: Backoff,
    /// How long a claimed job is leased to its worker: a job whose host
    /// died is delivered again after this.
    pub visibility: Duration,
    /// How long done jobs are kept (for `/admin/queues` counts) and a
    /// dedupe key is remembered.
    pub retention: Duration,
    /// Largest payload `enqueue` accepts.
    pub max_payload: ByteSize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            attempts: 5,
            backoff: Backoff::default(),
            visibility: Duration(time::Duration::from_secs(30)),
            retention: Duration(time::Duration::from_secs(24 * 3600)),
            max_payload: ByteSize(256 << 10),
        }
    }
}

/// `backoff = { initial, max }`: exponential (doubling from `initial`,
/// capped at `max`), each wait jittered down by up to a quarter so that
/// jobs failing together do not retry together.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// The wait before the first retry.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration(time::Duration::from_secs(1)),
            max: Duration(time::Duration::from_secs(300)),
        }
    }
}

impl Backoff {
    /// The wait before retry number `failed` (1 after the first failed
    /// attempt), before jitter.
    pub fn delay(&self, failed: u32) -> time::Duration {
        let factor = 1u32
            .checked_shl(failed.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.initial.0.saturating_mul(factor).min(self.max.0)
    }
}

/// One `[[worker]]`: a component exporting `trellis:api/worker` that runs
/// the jobs of one queue, or the events of one topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerEntry {
    /// Name in logs, metrics and the subscriber group of a topic; the
    /// component's file stem when absent.
    pub name: Option<Spanned<String>>,
    /// The `[queues]` queue it works on.
    pub queue: Option<Spanned<String>>,
    /// Or the topic whose events it receives (its own subscriber group).
    pub topic: Option<Spanned<String>>,
    /// The component file, relative to the manifest.
    pub component: Spanned<String>,
    /// Capabilities the component may import.
    pub grants: Option<Spanned<Vec<String>>>,
    /// Queues it may enqueue on (with the `queue` grant).
    pub queues: Option<Spanned<Vec<String>>>,
    /// Topics it may publish on (with the `queue` grant).
    pub topics: Option<Spanned<Vec<String>>>,
    /// The `[upstreams]` it may call, as a route's `outbound`.
    pub outbound: Option<Spanned<Vec<String>>>,
    /// Jobs it runs at once on each host.
    #[serde(default = "WorkerEntry::default_concurrency")]
    pub concurrency: u32,
    /// Deadline of one attempt (CPU and wall clock).
    #[serde(default = "WorkerEntry::default_timeout")]
    pub timeout: Duration,
    /// Most linear memory one instance may grow to.
    #[serde(default = "WorkerEntry::default_memory")]
    pub memory: ByteSize,
}

impl WorkerEntry {
    fn default_concurrency() -> u32 {
        4
    }
    fn default_timeout() -> Duration {
        Duration(time::Duration::from_secs(30))
    }
    fn default_memory() -> ByteSize {
        ByteSize(64 << 20)
    }

    /// The worker's name: explicit, or the component's file stem.
    pub fn name(&self) -> String {
        if let Some(name) = &self.name {
            return name.get_ref().clone();
        }
        let component = self.component.get_ref();
        if crate::config::reference::Reference::is_oci(component) {
            // The repository's last part, without tag or digest.
            let last = component.rsplit('/').next().unwrap_or_default();
            let last = last.split([':', '@']).next().unwrap_or_default();
            return last.to_owned();
        }
        std::path::Path::new(self.component.get_ref())
            .file_stem()
            .map_or_else(|| "worker".to_owned(), |s| s.to_string_lossy().into_owned())
    }

    fn list(list: &Option<Spanned<Vec<String>>>) -> Vec<String> {
        list.as_ref()
            .map(|l| l.get_ref().clone())
            .unwrap_or_default()
    }

    /// The worker's settings as the host runs them.
    pub fn spec(&self, queues: &BTreeMap<String, QueueSettings>) -> WorkerSpec {
        let source = match (&self.queue, &self.topic) {
            (Some(queue), _) => JobSource::Queue(queue.get_ref().clone()),
            (None, Some(topic)) => JobSource::Topic(topic.get_ref().clone()),
            (None, None) => JobSource::Queue(String::new()),
        };
        let settings = match &source {
            JobSource::Queue(q) => queues.get(q).copied().unwrap_or_default(),
            JobSource::Topic(_) => QueueSettings::default(),
        };
        WorkerSpec {
            name: self.name(),
            source,
            settings,
            grants: Self::list(&self.grants),
            queues: Self::list(&self.queues),
            topics: Self::list(&self.topics),
            outbound: self.outbound.as_ref().map(|o| o.get_ref().clone()),
            concurrency: self.concurrency,
            timeout: self.timeout,
            memory: self.memory,
        }
    }
}

/// What a worker consumes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobSource {
    /// A `[queues]` queue.
    Queue(String),
    /// A topic; the worker is its own subscriber group.
    Topic(String),
}

/// A validated `[[worker]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    /// Its name (the subscriber group, for a topic).
    pub name: String,
    /// Its queue or topic.
    pub source: JobSource,
    /// Its queue's settings (the defaults for a topic).
    pub settings: QueueSettings,
    /// Capabilities the component may import.
    pub grants: Vec<String>,
    /// Queues it may enqueue on.
    pub queues: Vec<String>,
    /// Topics it may publish on.
    pub topics: Vec<String>,
    /// The `[upstreams]` it may call; as a route's `outbound`, `None`
    /// refuses a component importing `wasi:http/outgoing-handler`.
    pub outbound: Option<Vec<String>>,
    /// Jobs at once per host.
    pub concurrency: u32,
    /// Deadline of one attempt.
    pub timeout: Duration,
    /// Memory cap of one instance.
    pub memory: ByteSize,
}

/// One `[[schedule]]`: enqueue `payload` on `queue` at every tick of
/// `cron`, once across all hosts sharing the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    /// Unique name; with the tick, what makes a firing happen once.
    pub name: Spanned<String>,
    /// Five fields, or six with seconds first, in UTC.
    pub cron: Spanned<String>,
    /// The `[queues]` queue each tick enqueues on.
    pub queue: Spanned<String>,
    /// The job's payload (text); empty when absent.
    #[serde(default)]
    pub payload: String,
    /// Parsed at validation.
    #[serde(skip)]
    pub parsed: Option<Cron>,
}

/// A plain name: 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'. Queue and topic
/// names go into metric labels, admin URLs and the store's keys.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A validation failure: the span to point at, the field and the message.
pub(super) type Invalid = (std::ops::Range<usize>, String, String);

/// Longest backoff, visibility and worker timeout.
const DAY: time::Duration = time::Duration::from_secs(24 * 3600);

/// Checks `[queues]`, `[[worker]]` and `[[schedule]]`; `table_line` finds
/// the line of a key in a `[queues.NAME]` table, whose values carry no
/// span. Returns the topics the workers subscribe to.
pub(super) fn check(
    queues: &BTreeMap<String, Spanned<QueueSettings>>,
    workers: &[WorkerEntry],
    schedules: &mut [ScheduleEntry],
) -> Result<BTreeSet<String>, Invalid> {
    for (name, q) in queues {
        let span = q.span();
        let field = |f: &str| format!("queues.{name}.{f}");
        if !plain_name(name) {
            return Err((
                span,
                format!("queues.{name:?}"),
                "a queue name is 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'".into(),
            ));
        }
        let q = q.get_ref();
        if q.attempts == 0 || q.attempts > 1000 {
            return Err((span, field("attempts"), "must be 1 to 1000".into()));
        }
        if q.backoff.initial.0.is_zero() {
            return Err((span, field("backoff.initial"), "must be more than 0".into()));
        }
        if q.backoff.max.0 < q.backoff.initial.0 || q.backoff.max.0 > DAY {
            return Err((
                span,
                field("backoff.max"),
                "must be at least backoff.initial and at most 24h".into(),
            ));
        }
        if q.visibility.0 < time::Duration::from_secs(1) || q.visibility.0 > DAY {
            return Err((span, field("visibility"), "must be 1s to 24h".into()));
        }
        if q.retention.0 > 30 * DAY {
            return Err((
                span,
                field("retention"),
                "must be at most 720h (30 days)".into(),
            ));
        }
        if q.max_payload.0 == 0 || q.max_payload.0 > 16 << 20 {
            return Err((span, field("max_payload"), "must be 1 byte to 16MiB".into()));
        }
    }
    let settings: BTreeMap<String, QueueSettings> = queues
        .iter()
        .map(|(k, v)| (k.clone(), *v.get_ref()))
        .collect();
    let mut names = BTreeSet::new();
    let mut topics = BTreeSet::new();
    for (i, w) in workers.iter().enumerate() {
        let field = |f: &str| format!("worker[{i}].{f}");
        let at = w.component.span();
        let name = w.name();
        if !plain_name(&name) {
            let span = w.name.as_ref().map_or(at.clone(), Spanned::span);
            return Err((
                span,
                field("name"),
                format!("{name:?}: a worker name is 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'"),
            ));
        }
        if !names.insert(name.clone()) {
            let span = w.name.as_ref().map_or(at.clone(), Spanned::span);
            return Err((
                span,
                field("name"),
                format!("worker name {name:?} is used twice; set `name`"),
            ));
        }
        let _queue = match (&w.queue, &w.topic) {
            (Some(_), Some(topic)) => {
                return Err((
                    topic.span(),
                    field("topic"),
                    "a worker has a queue or a topic, not both".into(),
                ));
            }
            (None, None) => {
                return Err((
                    at,
                    field("queue"),
                    "a worker needs `queue = \"NAME\"` or `topic = \"NAME\"`".into(),
                ));
            }
            (Some(queue), None) => match settings.get(queue.get_ref()) {
                Some(s) => *s,
                None => {
                    return Err((
                        queue.span(),
                        field("queue"),
                        format!(
                            "no queue {:?} in [queues]; declared: {}",
                            queue.get_ref(),
                            super::validate::declared(settings.keys())
                        ),
                    ));
                }
            },
            (None, Some(topic)) => {
                if !plain_name(topic.get_ref()) {
                    return Err((
                        topic.span(),
                        field("topic"),
                        "a topic is 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'".into(),
                    ));
                }
                topics.insert(topic.get_ref().clone());
                QueueSettings::default()
            }
        };
        if let Some(grants) = &w.grants
            && let Err(message) = super::check_grants(grants.get_ref())
        {
            return Err((grants.span(), field("grants"), message));
        }
        if let Some(grants) = &w.grants
            && grants.get_ref().iter().any(|g| g == "identity")
        {
            return Err((
                grants.span(),
                field("grants"),
                "\"identity\" is a request's caller; a worker has none".into(),
            ));
        }
        if w.concurrency == 0 || w.concurrency > 1024 {
            return Err((at, field("concurrency"), "must be 1 to 1024".into()));
        }
        if w.timeout.0.is_zero() || w.timeout.0 > DAY {
            return Err((
                at,
                field("timeout"),
                "must be more than 0 and at most 24h".into(),
            ));
        }
        if w.memory.0 < 1 << 20 {
            return Err((at, field("memory"), "must be at least 1MiB".into()));
        }
    }
    for (i, w) in workers.iter().enumerate() {
        check_uses(
            &settings,
            &topics,
            w.queues.as_ref(),
            w.topics.as_ref(),
            &|f| format!("worker[{i}].{f}"),
        )?;
    }
    let mut schedule_names = BTreeSet::new();
    for (i, s) in schedules.iter_mut().enumerate() {
        let field = |f: &str| format!("schedule[{i}].{f}");
        let name = s.name.get_ref();
        if !plain_name(name) {
            return Err((
                s.name.span(),
                field("name"),
                "a schedule name is 1 to 64 of A-Z, a-z, 0-9, '-', '_', '.'".into(),
            ));
        }
        if !schedule_names.insert(name.clone()) {
            return Err((
                s.name.span(),
                field("name"),
                format!("schedule name {name:?} is used twice"),
            ));
        }
        match s.cron.get_ref().parse::<Cron>() {
            Ok(cron) => s.parsed = Some(cron),
            Err(message) => return Err((s.cron.span(), field("cron"), message)),
        }
        if !settings.contains_key(s.queue.get_ref()) {
            return Err((
                s.queue.span(),
                field("queue"),
                format!(
                    "no queue {:?} in [queues]; declared: {}",
                    s.queue.get_ref(),
                    super::validate::declared(settings.keys())
                ),
            ));
        }
    }
    Ok(topics)
}

/// Checks the `queues` and `topics` a route or worker names: each queue
/// must be in `[queues]`, each topic subscribed by some `[[worker]]`.
pub(super) fn check_uses(
    queues: &BTreeMap<String, QueueSettings>,
    topics: &BTreeSet<String>,
    uses_queues: Option<&Spanned<Vec<String>>>,
    uses_topics: Option<&Spanned<Vec<String>>>,
    field: &dyn Fn(&str) -> String,
) -> Result<(), Invalid> {
    if let Some(list) = uses_queues
        && let Some(unknown) = list.get_ref().iter().find(|q| !queues.contains_key(*q))
    {
        return Err((
            list.span(),
            field("queues"),
            format!(
                "no queue {unknown:?} in [queues]; declared: {}",
                super::validate::declared(queues.keys())
            ),
        ));
    }
    if let Some(list) = uses_topics
        && let Some(unknown) = list.get_ref().iter().find(|t| !topics.contains(*t))
    {
        return Err((
            list.span(),
            field("topics"),
            format!(
                "no [[worker]] subscribes to topic {unknown:?}; subscribed: {}",
                super::validate::declared(topics.iter())
            ),
        ));
    }
    Ok(())
}
