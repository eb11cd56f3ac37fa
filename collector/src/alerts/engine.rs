//! The evaluation loop: rule values → instance states → grouped notifications, with the
//! state persisted after every change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_config::{AlertRule, ReceiverKind};
use lookout_proto::api::{
    AlertInstanceStatus, AlertRuleStatus, AlertsResponse, NotificationStatus, ReceiverStatus,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::metrics::AlertMetrics;
use super::model::{self, fingerprint, Labels, PostableAlert, WebhookAlert, WebhookBody};
use super::notify::{self, Outcome, Outgoing, Report};
use super::rules::{self, MetricHistory, MetricSource, RedCache, Sample};
use super::AlertsConfig;
use crate::traces::tracker::TracesShared;

/// Resolved instances stay visible on `/api/v1/alerts` this long.
const KEEP_RESOLVED_MS: i64 = 3_600_000;
/// Alertmanager receivers get firing alerts again this often, each time with `endsAt`
/// ahead by [`AM_ENDS_AHEAD_MS`] (as Prometheus does), so Alertmanager resolves them by
/// itself if the collector goes away.
const AM_RESEND_MS: i64 = 60_000;
const AM_ENDS_AHEAD_MS: i64 = 4 * AM_RESEND_MS;
/// After start, a firing alert whose signal has no data yet keeps firing this long: the
/// RED metrics refill from the WAL replay and new spans, and "no data" then is not a
/// recovery (like Prometheus' `for` grace period on restart).
const STARTUP_GRACE_MS: i64 = 30_000;

/// What the engine needs.
pub struct AlertsSetup {
    /// Rules, receivers and evaluation settings.
    pub cfg: AlertsConfig,
    /// Base URL of the query API (used when `external_url` is not set).
    pub api_base: String,
    /// RED metrics.
    pub traces: Arc<TracesShared>,
    /// OTLP metrics, for metric rules.
    pub metric_source: Option<Arc<dyn MetricSource>>,
    /// Self-metrics.
    pub metrics: AlertMetrics,
    /// Where state is kept (`DATA_DIR/alerts`).
    pub dir: PathBuf,
    /// Set once the WAL is replayed: evaluating earlier would see the RED metrics
    /// still empty and resolve every latency alert.
    pub ready: Arc<AtomicBool>,
}

/// Handle of the running engine: status for the API, and reloads.
#[derive(Clone)]
pub struct AlertsHandle {
    status: Arc<Mutex<AlertsResponse>>,
    reload: mpsc::UnboundedSender<AlertsConfig>,
}

impl AlertsHandle {
    /// Every rule and instance, as of the last evaluation.
    pub fn status(&self) -> AlertsResponse {
        self.status.lock().clone()
    }

    /// Replace rules and receivers; instance state of rules that stay is kept.
    pub fn reload(&self, cfg: AlertsConfig) {
        if self.reload.send(cfg).is_err() {
            tracing::warn!("alert engine is not running; reload ignored");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum St {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

impl St {
    fn as_str(self) -> &'static str {
        match self {
            St::Inactive => "inactive",
            St::Pending => "pending",
            St::Firing => "firing",
            St::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Instance {
    rule: String,
    labels: Labels,
    fingerprint: String,
    state: St,
    since_ms: i64,
    active_ms: Option<i64>,
    firing_ms: Option<i64>,
    last_true_ms: Option<i64>,
    resolved_ms: Option<i64>,
    value: Option<f64>,
    annotations: Labels,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Group {
    receiver: String,
    key: String,
    /// Fingerprints of the firing alerts last notified.
    notified: BTreeSet<String>,
    last_sent_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Note {
    fingerprint: String,
    receiver: String,
    status: String,
    queued_ms: i64,
    result: String,
    attempts: u32,
    error: Option<String>,
    id: u64,
}

/// Everything that survives a restart.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    next_id: u64,
    instances: Vec<Instance>,
    groups: Vec<Group>,
    outbox: Vec<Outgoing>,
    notes: Vec<Note>,
}

struct Receiver {
    kind: ReceiverKind,
    cfg: lookout_config::ReceiverConfig,
    tx: mpsc::UnboundedSender<Outgoing>,
    stop: CancellationToken,
    delivered: u64,
    failed: u64,
}

struct Engine {
    cfg: AlertsConfig,
    external_url: String,
    api_base: String,
    traces: Arc<TracesShared>,
    metric_source: Option<Arc<dyn MetricSource>>,
    metrics: AlertMetrics,
    path: PathBuf,
    next_id: u64,
    instances: BTreeMap<(String, String), Instance>,
    groups: BTreeMap<(String, String), Group>,
    outbox: BTreeMap<u64, Outgoing>,
    notes: BTreeMap<(String, String), Note>,
    receivers: BTreeMap<String, Receiver>,
    reports: mpsc::UnboundedSender<Report>,
    history: HashMap<String, MetricHistory>,
    status: Arc<Mutex<AlertsResponse>>,
    dirty: bool,
    /// Until then a firing instance without data keeps firing (see [`STARTUP_GRACE_MS`]).
    grace_until_ms: i64,
}

/// Load the saved state, start the receivers and the evaluation loop.
pub fn spawn(setup: AlertsSetup, shutdown: CancellationToken) -> AlertsHandle {
    let (reports_tx, mut reports_rx) = mpsc::unbounded_channel();
    let (reload_tx, mut reload_rx) = mpsc::unbounded_channel::<AlertsConfig>();
    let status = Arc::new(Mutex::new(AlertsResponse {
        rules: Vec::new(),
        receivers: Vec::new(),
    }));
    let path = setup.dir.join("state.json");
    let ready = setup.ready;
    let saved = load_state(&path);
    let mut engine = Engine {
        external_url: String::new(),
        cfg: setup.cfg.clone(),
        api_base: setup.api_base,
        traces: setup.traces,
        metric_source: setup.metric_source,
        metrics: setup.metrics,
        path,
        next_id: saved.next_id,
        instances: saved
            .instances
            .into_iter()
            .map(|i| ((i.rule.clone(), i.fingerprint.clone()), i))
            .collect(),
        groups: saved
            .groups
            .into_iter()
            .map(|g| ((g.receiver.clone(), g.key.clone()), g))
            .collect(),
        outbox: saved.outbox.into_iter().map(|o| (o.id, o)).collect(),
        notes: saved
            .notes
            .into_iter()
            .map(|n| ((n.fingerprint.clone(), n.receiver.clone()), n))
            .collect(),
        receivers: BTreeMap::new(),
        reports: reports_tx,
        history: HashMap::new(),
        status: status.clone(),
        dirty: false,
        grace_until_ms: now_ms() + STARTUP_GRACE_MS,
    };
    if let Err(e) = lookout_ingest::fsutil::create_dir_all(&setup.dir) {
        tracing::error!(dir = %setup.dir.display(), error = %e, "cannot create the alert state directory; alert state will not survive a restart");
    }
    engine.apply_config(setup.cfg, true);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(engine.cfg.alerting.evaluation_interval.get());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    if ready.load(Ordering::Acquire) {
                        engine.tick(now_ms());
                    }
                }
                Some(r) = reports_rx.recv() => engine.on_report(r),
                Some(cfg) = reload_rx.recv() => {
                    let interval = cfg.alerting.evaluation_interval.get();
                    engine.apply_config(cfg, false);
                    every = tokio::time::interval(interval);
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                () = shutdown.cancelled() => {
                    engine.save();
                    for r in engine.receivers.values() {
                        r.stop.cancel();
                    }
                    return;
                }
            }
            // Durable before visible: the API never shows a delivery the state file
            // does not have yet.
            engine.save_if_dirty();
            engine.publish();
        }
    });
    AlertsHandle {
        status,
        reload: reload_tx,
    }
}

/// One evaluation round of `cfg`'s rules at `now_ms` with no receivers and no state file:
/// the cost measured by `benches/alerts.rs`. Returns the number of instances.
#[doc(hidden)]
pub fn bench_evaluator(
    cfg: AlertsConfig,
    traces: Arc<TracesShared>,
    metrics: AlertMetrics,
) -> impl FnMut(i64) -> usize {
    let (reports, _) = mpsc::unbounded_channel();
    let mut engine = Engine {
        external_url: "http://127.0.0.1:7070".into(),
        cfg,
        api_base: String::new(),
        traces,
        metric_source: None,
        metrics,
        path: PathBuf::new(),
        next_id: 0,
        instances: BTreeMap::new(),
        groups: BTreeMap::new(),
        outbox: BTreeMap::new(),
        notes: BTreeMap::new(),
        receivers: BTreeMap::new(),
        reports,
        history: HashMap::new(),
        status: Arc::new(Mutex::new(AlertsResponse {
            rules: Vec::new(),
            receivers: Vec::new(),
        })),
        dirty: false,
        grace_until_ms: 0,
    };
    move |now| {
        engine.tick(now);
        engine.instances.len()
    }
}

fn now_ms() -> i64 {
    i64::try_from(lookout_ingest::clock::now_unix_nano() / 1_000_000).unwrap_or(i64::MAX)
}

fn rfc3339_ms(ms: i64) -> String {
    lookout_ingest::values::rfc3339(u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn load_state(path: &std::path::Path) -> Persisted {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "alert state is unreadable; starting with none");
                Persisted::default()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot read alert state; starting with none");
            Persisted::default()
        }
    }
}

impl Engine {
    fn apply_config(&mut self, cfg: AlertsConfig, first: bool) {
        self.external_url = if cfg.alerting.external_url.is_empty() {
            self.api_base.clone()
        } else {
            cfg.alerting.external_url.trim_end_matches('/').to_string()
        };
        // Receivers are restarted with their new settings; undelivered notifications
        // of receivers that remain are queued again.
        for (_, r) in std::mem::take(&mut self.receivers) {
            r.stop.cancel();
        }
        for (name, rc) in &cfg.receivers {
            let stop = CancellationToken::new();
            let tx = notify::spawn_receiver(
                name.clone(),
                rc.clone(),
                self.metrics.clone(),
                self.reports.clone(),
                stop.clone(),
            );
            self.receivers.insert(
                name.clone(),
                Receiver {
                    kind: rc.kind,
                    cfg: rc.clone(),
                    tx,
                    stop,
                    delivered: 0,
                    failed: 0,
                },
            );
        }
        let names: BTreeSet<&str> = cfg.rules.iter().map(|r| r.name.as_str()).collect();
        let before = self.instances.len();
        self.instances
            .retain(|(rule, _), _| names.contains(rule.as_str()));
        self.history.retain(|rule, _| names.contains(rule.as_str()));
        if self.instances.len() != before {
            tracing::info!(
                dropped = before - self.instances.len(),
                "alert instances of removed rules dropped"
            );
        }
        let outbox: Vec<Outgoing> = self.outbox.values().cloned().collect();
        for o in outbox {
            match self.receivers.get(&o.receiver) {
                Some(r) => {
                    let _ = r.tx.send(o);
                }
                None => {
                    tracing::warn!(receiver = %o.receiver, "receiver is gone; its undelivered notification is dropped");
                    self.outbox.remove(&o.id);
                }
            }
        }
        self.groups
            .retain(|(receiver, _), _| cfg.receivers.contains_key(receiver));
        tracing::info!(
            rules = cfg.rules.len(),
            receivers = cfg.receivers.len(),
            pending_notifications = self.outbox.len(),
            "alerting {}",
            if first { "configured" } else { "reloaded" }
        );
        self.cfg = cfg;
        self.dirty = true;
        self.publish();
    }

    fn tick(&mut self, now: i64) {
        let started = Instant::now();
        let now_s = u64::try_from(now / 1000).unwrap_or(0);
        let rules = self.cfg.rules.clone();
        let mut cache = RedCache::default();
        for rule in &rules {
            let samples = match (&rule.signal, &rule.metric) {
                (Some(signal), _) => {
                    let red = self.traces.red.lock();
                    rules::red_samples(rule, *signal, &red, &mut cache, now_s)
                }
                (None, Some(metric)) => match &self.metric_source {
                    Some(src) => rules::metric_samples(
                        rule,
                        metric,
                        src.as_ref(),
                        self.history.entry(rule.name.clone()).or_default(),
                        now,
                    ),
                    None => Vec::new(),
                },
                (None, None) => Vec::new(),
            };
            self.dirty |= self.evaluate(rule, samples, now);
        }
        self.notify(&rules, now);
        self.instances.retain(|_, i| match i.state {
            St::Resolved => i.resolved_ms.is_some_and(|t| now - t < KEEP_RESOLVED_MS),
            _ => true,
        });
        let m = &self.metrics;
        m.evaluations.inc();
        m.evaluation_seconds
            .observe(started.elapsed().as_secs_f64());
        for st in [St::Inactive, St::Pending, St::Firing, St::Resolved] {
            let n = self.instances.values().filter(|i| i.state == st).count();
            m.instances
                .with_label_values(&[st.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Apply one rule's samples; true when an instance changed state or went away.
    fn evaluate(&mut self, rule: &AlertRule, samples: Vec<Sample>, now: i64) -> bool {
        let mut seen = BTreeSet::new();
        let mut changed = false;
        let for_ms = ms(rule.for_.get());
        let keep_ms = ms(rule.keep_firing_for.get());
        for s in samples {
            let mut labels = s.labels;
            labels.insert("alertname".into(), rule.name.clone());
            labels.insert("severity".into(), rule.severity.clone());
            for (k, v) in &rule.labels {
                labels.insert(k.clone(), v.clone());
            }
            let fp = fingerprint(&labels);
            seen.insert(fp.clone());
            let key = (rule.name.clone(), fp.clone());
            let inst = self.instances.entry(key).or_insert_with(|| Instance {
                rule: rule.name.clone(),
                labels: labels.clone(),
                fingerprint: fp,
                state: St::Inactive,
                since_ms: now,
                active_ms: None,
                firing_ms: None,
                last_true_ms: None,
                resolved_ms: None,
                value: None,
                annotations: Labels::new(),
            });
            inst.labels = labels;
            inst.value = s.value;
            if s.value.is_none() && inst.state == St::Firing && now < self.grace_until_ms {
                // Just started: the RED metrics may still be filling from the WAL replay;
                // no data yet is not a recovery.
                continue;
            }
            let holds = s.value.is_some_and(|v| rule.op.holds(v, rule.threshold));
            changed |= step(inst, holds, now, for_ms, keep_ms);
            if holds || inst.state != St::Firing {
                inst.annotations = annotations(rule, inst, &s.trace_ids, &self.external_url, now);
            }
        }
        // Instances without a sample this time (a service gone quiet) have no data.
        let grace = now < self.grace_until_ms;
        for inst in self.instances.values_mut() {
            if grace && inst.state == St::Firing {
                continue;
            }
            if inst.rule == rule.name && !seen.contains(&inst.fingerprint) {
                inst.value = None;
                changed |= step(inst, false, now, for_ms, keep_ms);
            }
        }
        let before = self.instances.len();
        self.instances
            .retain(|(r, fp), i| r != &rule.name || seen.contains(fp) || i.state != St::Inactive);
        changed || before != self.instances.len()
    }

    /// Group the instances of changed rules per receiver and queue what needs sending.
    fn notify(&mut self, rules: &[AlertRule], now: i64) {
        let names: Vec<String> = self.receivers.keys().cloned().collect();
        for receiver in names {
            let Some(rc) = self.receivers.get(&receiver).map(|r| r.cfg.clone()) else {
                continue;
            };
            let kind = rc.kind;
            // Current members of each group: firing, plus resolved ones not yet told.
            let mut groups: BTreeMap<String, (Labels, Vec<&Instance>)> = BTreeMap::new();
            for rule in rules.iter().filter(|r| r.receivers.contains(&receiver)) {
                for inst in self.instances.values().filter(|i| i.rule == rule.name) {
                    if !matches!(inst.state, St::Firing | St::Resolved) {
                        continue;
                    }
                    let gl = group_labels(&rc.group_by, &inst.labels);
                    let key = model::group_key(&gl);
                    groups
                        .entry(key)
                        .or_insert_with(|| (gl, Vec::new()))
                        .1
                        .push(inst);
                }
            }
            let mut keys: BTreeSet<String> = groups.keys().cloned().collect();
            keys.extend(
                self.groups
                    .keys()
                    .filter(|(r, _)| *r == receiver)
                    .map(|(_, k)| k.clone()),
            );
            let mut queue = Vec::new();
            for key in keys {
                let (gl, members) = groups.remove(&key).unwrap_or_default();
                let state = self
                    .groups
                    .get(&(receiver.clone(), key.clone()))
                    .cloned()
                    .unwrap_or_default();
                let firing: BTreeSet<String> = members
                    .iter()
                    .filter(|i| i.state == St::Firing)
                    .map(|i| i.fingerprint.clone())
                    .collect();
                let resolved: Vec<&Instance> = members
                    .iter()
                    .filter(|i| i.state == St::Resolved && state.notified.contains(&i.fingerprint))
                    .copied()
                    .collect();
                let added = firing.difference(&state.notified).count() > 0;
                let gone = state.notified.iter().any(|f| !firing.contains(f));
                let repeat_ms = match kind {
                    ReceiverKind::Alertmanager => ms(rc.repeat_interval.get()).min(AM_RESEND_MS),
                    ReceiverKind::Webhook => ms(rc.repeat_interval.get()),
                };
                let repeat = !firing.is_empty() && now - state.last_sent_ms >= repeat_ms;
                let send = added || (gone && rc.send_resolved) || repeat;
                if send {
                    let mut alerts: Vec<&Instance> = members
                        .iter()
                        .filter(|i| i.state == St::Firing)
                        .copied()
                        .collect();
                    if rc.send_resolved {
                        alerts.extend(resolved.iter().copied());
                    }
                    if !alerts.is_empty() {
                        queue.push(self.body(&receiver, kind, &key, &gl, &alerts, now));
                    }
                }
                let k = (receiver.clone(), key.clone());
                if firing.is_empty() {
                    self.groups.remove(&k);
                } else if send || firing != state.notified {
                    self.groups.insert(
                        k,
                        Group {
                            receiver: receiver.clone(),
                            key,
                            notified: firing,
                            last_sent_ms: if send { now } else { state.last_sent_ms },
                        },
                    );
                }
                self.dirty |= send || gone;
            }
            for o in queue {
                self.enqueue(o);
            }
        }
    }

    fn body(
        &self,
        receiver: &str,
        kind: ReceiverKind,
        key: &str,
        group_labels: &Labels,
        alerts: &[&Instance],
        now: i64,
    ) -> Outgoing {
        let status = if alerts.iter().any(|i| i.state == St::Firing) {
            "firing"
        } else {
            "resolved"
        };
        let generator =
            |i: &Instance| format!("{}/api/v1/alerts#{}", self.external_url, urlencode(&i.rule));
        let starts = |i: &Instance| rfc3339_ms(i.firing_ms.unwrap_or(i.since_ms));
        let body = match kind {
            ReceiverKind::Webhook => {
                let label_sets: Vec<&Labels> = alerts.iter().map(|i| &i.labels).collect();
                let ann_sets: Vec<&Labels> = alerts.iter().map(|i| &i.annotations).collect();
                serde_json::to_string(&WebhookBody {
                    version: "4".into(),
                    group_key: key.to_string(),
                    truncated_alerts: 0,
                    status: status.into(),
                    receiver: receiver.to_string(),
                    group_labels: group_labels.clone(),
                    common_labels: model::common(&label_sets),
                    common_annotations: model::common(&ann_sets),
                    external_url: self.external_url.clone(),
                    alerts: alerts
                        .iter()
                        .map(|i| WebhookAlert {
                            status: i.state.as_str().into(),
                            labels: i.labels.clone(),
                            annotations: i.annotations.clone(),
                            starts_at: starts(i),
                            ends_at: i
                                .resolved_ms
                                .filter(|_| i.state == St::Resolved)
                                .map_or_else(|| model::ZERO_TIME.into(), rfc3339_ms),
                            generator_url: generator(i),
                            fingerprint: i.fingerprint.clone(),
                        })
                        .collect(),
                })
            }
            ReceiverKind::Alertmanager => serde_json::to_string(
                &alerts
                    .iter()
                    .map(|i| PostableAlert {
                        labels: i.labels.clone(),
                        annotations: i.annotations.clone(),
                        starts_at: starts(i),
                        ends_at: rfc3339_ms(match i.state {
                            St::Resolved => i.resolved_ms.unwrap_or(now),
                            _ => now + AM_ENDS_AHEAD_MS,
                        }),
                        generator_url: generator(i),
                    })
                    .collect::<Vec<_>>(),
            ),
        };
        Outgoing {
            id: 0,
            receiver: receiver.to_string(),
            status: status.into(),
            fingerprints: alerts.iter().map(|i| i.fingerprint.clone()).collect(),
            body: body.unwrap_or_default(),
            queued_ms: now,
        }
    }

    fn enqueue(&mut self, mut o: Outgoing) {
        self.next_id += 1;
        o.id = self.next_id;
        for fp in &o.fingerprints {
            self.notes.insert(
                (fp.clone(), o.receiver.clone()),
                Note {
                    fingerprint: fp.clone(),
                    receiver: o.receiver.clone(),
                    status: o.status.clone(),
                    queued_ms: o.queued_ms,
                    result: "pending".into(),
                    attempts: 0,
                    error: None,
                    id: o.id,
                },
            );
        }
        if let Some(r) = self.receivers.get(&o.receiver) {
            let _ = r.tx.send(o.clone());
        }
        self.outbox.insert(o.id, o);
        self.dirty = true;
    }

    fn on_report(&mut self, r: Report) {
        let (result, attempts, error, done) = match r.outcome {
            Outcome::Retrying { attempts, error } => ("retrying", attempts, Some(error), false),
            Outcome::Delivered { attempts } => ("delivered", attempts, None, true),
            Outcome::Failed { attempts, error } => ("failed", attempts, Some(error), true),
        };
        if let Some(rc) = self.receivers.get_mut(&r.receiver) {
            match result {
                "delivered" => rc.delivered += 1,
                "failed" => rc.failed += 1,
                _ => {}
            }
        }
        for note in self.notes.values_mut().filter(|n| n.id == r.id) {
            note.result = result.into();
            note.attempts = attempts;
            note.error.clone_from(&error);
        }
        if done {
            self.outbox.remove(&r.id);
            self.dirty = true;
        }
    }

    fn publish(&self) {
        let rules = self
            .cfg
            .rules
            .iter()
            .map(|r| {
                let mut instances: Vec<AlertInstanceStatus> = self
                    .instances
                    .values()
                    .filter(|i| i.rule == r.name)
                    .map(|i| AlertInstanceStatus {
                        labels: i.labels.clone(),
                        state: i.state.as_str().into(),
                        value: i.value,
                        since: rfc3339_ms(i.since_ms),
                        firing_since: i
                            .firing_ms
                            .filter(|_| i.state == St::Firing)
                            .map(rfc3339_ms),
                        fingerprint: i.fingerprint.clone(),
                        notifications: self
                            .notes
                            .values()
                            .filter(|n| n.fingerprint == i.fingerprint)
                            .map(|n| NotificationStatus {
                                receiver: n.receiver.clone(),
                                status: n.status.clone(),
                                queued_at: rfc3339_ms(n.queued_ms),
                                result: n.result.clone(),
                                attempts: n.attempts,
                                error: n.error.clone(),
                            })
                            .collect(),
                    })
                    .collect();
                instances.sort_by_key(|i| match i.state.as_str() {
                    "firing" => 0,
                    "pending" => 1,
                    "resolved" => 2,
                    _ => 3,
                });
                let state = ["firing", "pending"]
                    .into_iter()
                    .find(|st| instances.iter().any(|i| i.state == *st))
                    .unwrap_or("inactive")
                    .to_string();
                AlertRuleStatus {
                    state,
                    name: r.name.clone(),
                    signal: match (&r.signal, &r.metric) {
                        (Some(s), _) => s.as_str().to_string(),
                        (None, Some(m)) => format!("metric:{m}"),
                        (None, None) => String::new(),
                    },
                    service: r.service.clone(),
                    operation: r.operation.clone(),
                    op: r.op.as_str().into(),
                    threshold: r.threshold,
                    window: r.window.to_string(),
                    for_: r.for_.to_string(),
                    receivers: r.receivers.clone(),
                    instances,
                }
            })
            .collect();
        let receivers = self
            .receivers
            .iter()
            .map(|(name, r)| ReceiverStatus {
                name: name.clone(),
                kind: match r.kind {
                    ReceiverKind::Webhook => "webhook".into(),
                    ReceiverKind::Alertmanager => "alertmanager".into(),
                },
                delivered: r.delivered,
                failed: r.failed,
                pending: self.outbox.values().filter(|o| &o.receiver == name).count() as u64,
            })
            .collect();
        *self.status.lock() = AlertsResponse { rules, receivers };
        self.metrics
            .notifications_pending
            .set(i64::try_from(self.outbox.len()).unwrap_or(i64::MAX));
    }

    fn save_if_dirty(&mut self) {
        if self.dirty {
            self.save();
        }
    }

    /// Write the state atomically: temp file, fsync, rename, fsync of the directory.
    fn save(&mut self) {
        // Notes of instances that are gone are no longer shown.
        let live: BTreeSet<String> = self
            .instances
            .values()
            .map(|i| i.fingerprint.clone())
            .collect();
        self.notes.retain(|(fp, _), _| live.contains(fp));
        let state = Persisted {
            next_id: self.next_id,
            instances: self.instances.values().cloned().collect(),
            groups: self.groups.values().cloned().collect(),
            outbox: self.outbox.values().cloned().collect(),
            notes: self.notes.values().cloned().collect(),
        };
        match write_atomic(&self.path, &state) {
            Ok(()) => self.dirty = false,
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "cannot save alert state");
                self.metrics.state_write_errors.inc();
            }
        }
    }
}

/// Replace the state file atomically (`state.json.tmp`, fsync, rename, directory fsync),
/// created `0640`.
fn write_atomic(path: &std::path::Path, state: &Persisted) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    lookout_ingest::fsutil::write_atomic(path, &bytes)
}

/// The state machine of one instance; true when its state changed.
fn step(inst: &mut Instance, holds: bool, now: i64, for_ms: i64, keep_ms: i64) -> bool {
    let before = inst.state;
    if holds {
        inst.last_true_ms = Some(now);
    }
    inst.state = match (inst.state, holds) {
        (St::Inactive | St::Resolved, true) => {
            inst.active_ms = Some(now);
            if for_ms == 0 {
                St::Firing
            } else {
                St::Pending
            }
        }
        (St::Pending, true) => {
            if now - inst.active_ms.unwrap_or(now) >= for_ms {
                St::Firing
            } else {
                St::Pending
            }
        }
        (St::Pending, false) => St::Inactive,
        (St::Firing, true) => St::Firing,
        (St::Firing, false) => {
            if inst.last_true_ms.is_some_and(|t| now - t < keep_ms) {
                St::Firing
            } else {
                St::Resolved
            }
        }
        (s, false) => s,
    };
    if inst.state != before {
        inst.since_ms = now;
        match inst.state {
            St::Firing => {
                inst.firing_ms = Some(now);
                inst.resolved_ms = None;
            }
            St::Resolved => inst.resolved_ms = Some(now),
            St::Inactive => inst.active_ms = None,
            St::Pending => {}
        }
        tracing::info!(
            rule = %inst.rule,
            labels = ?inst.labels,
            from = before.as_str(),
            to = inst.state.as_str(),
            value = ?inst.value,
            "alert state changed"
        );
    }
    inst.state != before
}

fn group_labels(group_by: &[String], labels: &Labels) -> Labels {
    if group_by.iter().any(|g| g == "...") {
        return labels.clone();
    }
    group_by
        .iter()
        .filter_map(|g| labels.get(g).map(|v| (g.clone(), v.clone())))
        .collect()
}

fn annotations(
    rule: &AlertRule,
    inst: &Instance,
    trace_ids: &[String],
    external_url: &str,
    now: i64,
) -> Labels {
    let value = inst
        .value
        .map(model::human)
        .unwrap_or_else(|| "no data".into());
    let threshold = model::human(rule.threshold);
    let window = rule.window.to_string();
    let service = inst.labels.get("service").cloned().unwrap_or_default();
    let operation = inst.labels.get("operation").cloned().unwrap_or_default();
    let vars = [
        ("service", service.as_str()),
        ("operation", operation.as_str()),
        ("value", value.as_str()),
        ("threshold", threshold.as_str()),
        ("window", window.as_str()),
        ("rule", rule.name.as_str()),
    ];
    let mut a = Labels::new();
    let summary = if rule.summary.is_empty() {
        format!(
            "{} of {} is {} ({} {} over {})",
            rule.signal.map_or_else(
                || rule.metric.clone().unwrap_or_default(),
                |s| s.as_str().to_string()
            ),
            if service.is_empty() {
                "all services"
            } else {
                &service
            },
            value,
            rule.op.as_str(),
            threshold,
            window
        )
    } else {
        model::render(&rule.summary, &vars, &inst.labels)
    };
    a.insert("summary".into(), summary);
    if !rule.description.is_empty() {
        a.insert(
            "description".into(),
            model::render(&rule.description, &vars, &inst.labels),
        );
    }
    a.insert("value".into(), value.clone());
    a.insert("threshold".into(), threshold);
    if !trace_ids.is_empty() {
        a.insert("trace_ids".into(), trace_ids.join(","));
    }
    // The traces behind the breach: the service's traces of the window, narrowed to
    // errors or to slow ones as the signal says.
    if rule.signal.is_some() && !service.is_empty() {
        let from = now - ms(rule.window.get());
        let mut q = format!(
            "{external_url}/api/v1/traces?service={}&from={}&to={}",
            urlencode(&service),
            urlencode(&rfc3339_ms(from)),
            urlencode(&rfc3339_ms(now)),
        );
        if !operation.is_empty() {
            q.push_str(&format!("&operation={}", urlencode(&operation)));
        }
        match rule.signal {
            Some(lookout_config::AlertSignal::ErrorRate) => q.push_str("&status=error"),
            Some(
                lookout_config::AlertSignal::LatencyP50
                | lookout_config::AlertSignal::LatencyP90
                | lookout_config::AlertSignal::LatencyP95
                | lookout_config::AlertSignal::LatencyP99,
            ) => q.push_str(&format!(
                "&min_duration={}ms",
                rule.threshold.max(0.0).round()
            )),
            _ => {}
        }
        a.insert("query".into(), q);
    }
    a
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst() -> Instance {
        Instance {
            rule: "R".into(),
            labels: Labels::new(),
            fingerprint: "f".into(),
            state: St::Inactive,
            since_ms: 0,
            active_ms: None,
            firing_ms: None,
            last_true_ms: None,
            resolved_ms: None,
            value: None,
            annotations: Labels::new(),
        }
    }

    #[test]
    fn pending_for_then_firing_then_resolved() {
        let mut i = inst();
        assert!(step(&mut i, true, 0, 30_000, 0));
        assert_eq!(i.state, St::Pending);
        assert!(!step(&mut i, true, 29_000, 30_000, 0));
        assert!(step(&mut i, true, 30_000, 30_000, 0));
        assert_eq!(i.state, St::Firing);
        assert!(step(&mut i, false, 31_000, 30_000, 0));
        assert_eq!(i.state, St::Resolved);
        // A blip while pending goes back to inactive.
        let mut i = inst();
        step(&mut i, true, 0, 30_000, 0);
        step(&mut i, false, 1_000, 30_000, 0);
        assert_eq!(i.state, St::Inactive);
    }

    #[test]
    fn keep_firing_for_rides_out_flapping() {
        let mut i = inst();
        step(&mut i, true, 0, 0, 10_000);
        assert_eq!(i.state, St::Firing);
        assert!(!step(&mut i, false, 5_000, 0, 10_000));
        assert_eq!(i.state, St::Firing);
        step(&mut i, true, 6_000, 0, 10_000);
        assert!(!step(&mut i, false, 15_000, 0, 10_000));
        assert!(step(&mut i, false, 16_000, 0, 10_000));
        assert_eq!(i.state, St::Resolved);
    }

    #[test]
    fn url_encoding() {
        assert_eq!(urlencode("POST /pay"), "POST%20%2Fpay");
    }
}
