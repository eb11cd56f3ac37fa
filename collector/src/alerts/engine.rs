//! The evaluation loop: rule values → instance states → grouped notifications, with the
//! state persisted after every change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use lookout_config::{AlertRule, ReceiverConfig, ReceiverKind};
use lookout_proto::api::{
    AlertInstanceStatus, AlertRuleStatus, AlertsResponse, NotificationStatus, ReceiverStatus,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::annotate::{annotations, urlencode};
use super::config::AlertsConfig;
use super::metrics::AlertMetrics;
use super::model::{self, fingerprint, Labels, PostableAlert, WebhookAlert, WebhookBody};
use super::notify::{self, Outcome, Outgoing, Report};
use super::rules::{self, MetricHistory, MetricSource, RedCache, Sample};
use super::state::{load_state, step, write_atomic, Group, Instance, Note, Persisted, St};
use super::time::{ms, now_ms, rfc3339_ms};
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
    /// Cluster mode: rules are evaluated by the one member holding the alert leader's
    /// lease, on RED figures merged from every member, and the state it keeps in the
    /// cluster goes to the next leader.
    pub cluster: Option<crate::cluster::peers::Peers>,
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
    /// Cluster mode (see [`AlertsSetup::cluster`]).
    cluster: Option<crate::cluster::peers::Peers>,
    /// Whether this node evaluated the last round as the cluster's leader.
    leading: bool,
}

/// The state file in the alert directory.
const STATE_FILE: &str = "state.json";

/// Load the saved state, start the receivers and the evaluation loop.
pub fn spawn(setup: AlertsSetup, shutdown: CancellationToken) -> AlertsHandle {
    let (reports_tx, mut reports_rx) = mpsc::unbounded_channel();
    let (reload_tx, mut reload_rx) = mpsc::unbounded_channel::<AlertsConfig>();
    let ready = setup.ready.clone();
    let dir = setup.dir.clone();
    let cfg = setup.cfg.clone();
    let saved = load_state(&dir.join(STATE_FILE));
    let mut engine = Engine::new(setup, saved, reports_tx, now_ms() + STARTUP_GRACE_MS);
    let status = engine.status.clone();
    if let Err(e) = lookout_ingest::fsutil::create_dir_all(&dir) {
        tracing::error!(dir = %dir.display(), error = %e, "cannot create the alert state directory; alert state will not survive a restart");
    }
    engine.apply_config(cfg, true);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(engine.cfg.alerting.evaluation_interval.get());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    if ready.load(Ordering::Acquire) {
                        match engine.cluster.clone() {
                            None => engine.tick(now_ms()),
                            Some(peers) => engine.tick_in_cluster(&peers).await,
                        }
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
            if engine.save_if_dirty() && engine.leading {
                engine.keep_in_cluster().await;
            }
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
    let setup = AlertsSetup {
        cfg,
        api_base: String::new(),
        traces,
        metric_source: None,
        metrics,
        dir: PathBuf::new(),
        ready: Arc::new(AtomicBool::new(true)),
        cluster: None,
    };
    let mut engine = Engine::new(setup, Persisted::default(), reports, 0);
    engine.external_url = "http://127.0.0.1:7070".into();
    move |now| {
        engine.tick(now);
        engine.instances.len()
    }
}

impl Engine {
    /// An engine with `saved` state, no receivers yet and no external URL (see
    /// [`Engine::apply_config`]).
    fn new(
        setup: AlertsSetup,
        saved: Persisted,
        reports: mpsc::UnboundedSender<Report>,
        grace_until_ms: i64,
    ) -> Self {
        Self {
            external_url: String::new(),
            cfg: setup.cfg,
            api_base: setup.api_base,
            traces: setup.traces,
            metric_source: setup.metric_source,
            metrics: setup.metrics,
            path: setup.dir.join(STATE_FILE),
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
            reports,
            history: HashMap::new(),
            status: Arc::new(Mutex::new(AlertsResponse::default())),
            dirty: false,
            grace_until_ms,
            cluster: setup.cluster,
            leading: false,
        }
    }

    /// One round in cluster mode: nothing unless this node is the leader; a new leader
    /// first takes the state the previous one kept, so a firing it notified is not
    /// notified again.
    async fn tick_in_cluster(&mut self, peers: &crate::cluster::peers::Peers) {
        let status = peers.status();
        if !status.is_alert_leader() {
            self.leading = false;
            return;
        }
        if !self.leading {
            match status.load_alert_state().await {
                Ok(Some(json)) => match serde_json::from_slice::<Persisted>(&json) {
                    Ok(saved) => self.take_over(saved),
                    Err(e) => {
                        tracing::error!(error = %e, "the cluster's alert state is unreadable; starting from this node's")
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the cluster's alert state; evaluating later");
                    return;
                }
            }
            self.leading = true;
        }
        let now = now_ms();
        let now_s = u64::try_from(now / 1000).unwrap_or(0);
        let mut windows: Vec<std::time::Duration> = self
            .cfg
            .rules
            .iter()
            .filter(|r| r.signal.is_some())
            .map(|r| r.window.get())
            .collect();
        windows.sort();
        windows.dedup();
        let mut merged = HashMap::new();
        for w in windows {
            let mut res = self.traces.red.lock().services(now_s, w);
            let (others, missing) = peers
                .ask::<lookout_proto::api::ServicesResponse>(&format!(
                    "/api/v1/services?window={}s",
                    w.as_secs()
                ))
                .await;
            for o in others.into_iter().flatten() {
                crate::traces::red::merge_services(&mut res, o);
            }
            if !missing.is_empty() {
                self.metrics.cluster_partial.inc();
            }
            merged.insert(w, res);
        }
        self.tick_with(now, RedCache::merged(merged));
    }

    /// Take the state the previous leader kept: instances, groups, what is to be sent.
    fn take_over(&mut self, saved: Persisted) {
        tracing::info!(
            instances = saved.instances.len(),
            "alert leader: taking the cluster's alert state"
        );
        self.next_id = self.next_id.max(saved.next_id);
        self.instances = saved
            .instances
            .into_iter()
            .map(|i| ((i.rule.clone(), i.fingerprint.clone()), i))
            .collect();
        self.groups = saved
            .groups
            .into_iter()
            .map(|g| ((g.receiver.clone(), g.key.clone()), g))
            .collect();
        self.outbox = saved.outbox.into_iter().map(|o| (o.id, o)).collect();
        self.notes = saved
            .notes
            .into_iter()
            .map(|n| ((n.fingerprint.clone(), n.receiver.clone()), n))
            .collect();
        self.apply_config(self.cfg.clone(), true);
        self.dirty = true;
    }

    /// Keep the state in the cluster for the next leader.
    async fn keep_in_cluster(&mut self) {
        let Some(peers) = self.cluster.clone() else {
            return;
        };
        let json = match serde_json::to_vec(&self.persisted()) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the alert state");
                return;
            }
        };
        if let Err(e) = peers.status().store_alert_state(json).await {
            tracing::warn!(error = %e, "cannot keep the alert state in the cluster; a new leader may notify again");
            self.metrics.state_write_errors.inc();
        }
    }

    fn apply_config(&mut self, cfg: AlertsConfig, first: bool) {
        self.external_url = if cfg.alerting.external_url.is_empty() {
            self.api_base.clone()
        } else {
            cfg.alerting.external_url.trim_end_matches('/').to_string()
        };
        // Receivers are restarted with their new settings; undelivered notifications
        // of receivers that remain are queued again, and their counts kept.
        let old: BTreeMap<String, Receiver> = std::mem::take(&mut self.receivers);
        for r in old.values() {
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
                    delivered: old.get(name).map_or(0, |o| o.delivered),
                    failed: old.get(name).map_or(0, |o| o.failed),
                },
            );
            // A receiver that changed (or, at start, any receiver) gets the firing alerts
            // it failed to take again: the fix is what the user is waiting for.
            if first || old.get(name).is_none_or(|o| o.cfg != *rc) {
                self.resend_failed(name);
            }
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

    /// Forget that `receiver` was told of firing alerts whose notification failed, so the
    /// next evaluation sends them again.
    fn resend_failed(&mut self, receiver: &str) {
        let failed = |fp: &String| {
            self.notes
                .get(&(fp.clone(), receiver.to_string()))
                .is_some_and(|n| n.result == "failed")
        };
        let mut again = 0usize;
        let mut emptied = Vec::new();
        for (k, g) in self.groups.iter_mut().filter(|((r, _), _)| r == receiver) {
            let before = g.notified.len();
            g.notified.retain(|fp| !failed(fp));
            again += before - g.notified.len();
            if g.notified.is_empty() {
                emptied.push(k.clone());
            }
        }
        for k in emptied {
            self.groups.remove(&k);
        }
        if again > 0 {
            tracing::info!(
                receiver,
                alerts = again,
                "firing alerts whose notification failed are sent again"
            );
            self.dirty = true;
        }
    }

    fn tick(&mut self, now: i64) {
        self.tick_with(now, RedCache::default());
    }

    /// Evaluate every rule at `now`, RED figures from `cache` (this node's RED when empty).
    fn tick_with(&mut self, now: i64, mut cache: RedCache) {
        let started = Instant::now();
        let now_s = u64::try_from(now / 1000).unwrap_or(0);
        let rules = self.cfg.rules.clone();
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
            let inst = self
                .instances
                .entry(key)
                .or_insert_with(|| Instance::new(&rule.name, labels.clone(), fp, now));
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
            let mut groups = current_groups(&self.instances, rules, &receiver, &rc.group_by);
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
                let k = (receiver.clone(), key);
                let told = self.groups.get(&k).cloned().unwrap_or_default();
                let u = GroupUpdate::new(&members, &told, &rc, now);
                if u.send && !u.alerts.is_empty() {
                    queue.push(self.body(&receiver, rc.kind, &k.1, &gl, &u.alerts, now));
                }
                self.dirty |= u.send || u.gone;
                if u.firing.is_empty() {
                    self.groups.remove(&k);
                } else if u.send || u.firing != told.notified {
                    let (receiver, key) = k.clone();
                    self.groups.insert(
                        k,
                        Group {
                            receiver,
                            key,
                            notified: u.firing,
                            last_sent_ms: if u.send { now } else { told.last_sent_ms },
                        },
                    );
                }
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
        let postable = |i: &Instance, ends_at: String| PostableAlert {
            labels: i.labels.clone(),
            annotations: i.annotations.clone(),
            starts_at: rfc3339_ms(i.firing_ms.unwrap_or(i.since_ms)),
            ends_at,
            generator_url: format!("{}/api/v1/alerts#{}", self.external_url, urlencode(&i.rule)),
        };
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
                            alert: postable(
                                i,
                                i.resolved_ms
                                    .filter(|_| i.state == St::Resolved)
                                    .map_or_else(|| model::ZERO_TIME.into(), rfc3339_ms),
                            ),
                            fingerprint: i.fingerprint.clone(),
                        })
                        .collect(),
                })
            }
            ReceiverKind::Alertmanager => serde_json::to_string(
                &alerts
                    .iter()
                    .map(|i| {
                        let ends_ms = match i.state {
                            St::Resolved => i.resolved_ms.unwrap_or(now),
                            _ => now + AM_ENDS_AHEAD_MS,
                        };
                        postable(i, rfc3339_ms(ends_ms))
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

    /// Make the current rules, instances and receivers the status the API shows.
    fn publish(&self) {
        let rules = self.cfg.rules.iter().map(|r| self.rule_status(r)).collect();
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
        *self.status.lock() = AlertsResponse {
            rules,
            receivers,
            warnings: Vec::new(),
        };
        self.metrics
            .notifications_pending
            .set(i64::try_from(self.outbox.len()).unwrap_or(i64::MAX));
    }

    /// A rule with its instances, firing first, then pending, resolved and inactive.
    fn rule_status(&self, r: &AlertRule) -> AlertRuleStatus {
        let mut instances: Vec<AlertInstanceStatus> = self
            .instances
            .values()
            .filter(|i| i.rule == r.name)
            .map(|i| self.instance_status(i))
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
    }

    /// An instance with the deliveries of its notifications.
    fn instance_status(&self, i: &Instance) -> AlertInstanceStatus {
        AlertInstanceStatus {
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
        }
    }

    /// Save when something changed; whether it did.
    fn save_if_dirty(&mut self) -> bool {
        let dirty = self.dirty;
        if dirty {
            self.save();
        }
        dirty
    }

    /// What is saved.
    fn persisted(&mut self) -> Persisted {
        // Notes of instances that are gone are no longer shown.
        let live: BTreeSet<String> = self
            .instances
            .values()
            .map(|i| i.fingerprint.clone())
            .collect();
        self.notes.retain(|(fp, _), _| live.contains(fp));
        Persisted {
            next_id: self.next_id,
            instances: self.instances.values().cloned().collect(),
            groups: self.groups.values().cloned().collect(),
            outbox: self.outbox.values().cloned().collect(),
            notes: self.notes.values().cloned().collect(),
        }
    }

    /// Write the state atomically: temp file, fsync, rename, fsync of the directory.
    fn save(&mut self) {
        let state = self.persisted();
        match write_atomic(&self.path, &state) {
            Ok(()) => self.dirty = false,
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "cannot save alert state");
                self.metrics.state_write_errors.inc();
            }
        }
    }
}

/// The current members of each group of `receiver` by group key: firing and resolved
/// instances of the rules that notify it.
fn current_groups<'a>(
    instances: &'a BTreeMap<(String, String), Instance>,
    rules: &[AlertRule],
    receiver: &str,
    group_by: &[String],
) -> BTreeMap<String, (Labels, Vec<&'a Instance>)> {
    let mut groups: BTreeMap<String, (Labels, Vec<&Instance>)> = BTreeMap::new();
    for rule in rules
        .iter()
        .filter(|r| r.receivers.iter().any(|n| n == receiver))
    {
        for inst in instances.values().filter(|i| i.rule == rule.name) {
            if !matches!(inst.state, St::Firing | St::Resolved) {
                continue;
            }
            let gl = group_labels(group_by, &inst.labels);
            let key = model::group_key(&gl);
            groups
                .entry(key)
                .or_insert_with(|| (gl, Vec::new()))
                .1
                .push(inst);
        }
    }
    groups
}

/// What one group of one receiver needs, given what it was last told.
struct GroupUpdate<'a> {
    /// Fingerprints of the firing members.
    firing: BTreeSet<String>,
    /// A notification is due: new firing alerts, resolved ones (with `send_resolved`),
    /// or the repeat interval passed.
    send: bool,
    /// The alerts to send: the firing ones, and with `send_resolved` the resolved ones
    /// that were notified as firing.
    alerts: Vec<&'a Instance>,
    /// An alert notified as firing no longer is.
    gone: bool,
}

impl<'a> GroupUpdate<'a> {
    fn new(members: &[&'a Instance], told: &Group, rc: &ReceiverConfig, now: i64) -> Self {
        let firing: BTreeSet<String> = members
            .iter()
            .filter(|i| i.state == St::Firing)
            .map(|i| i.fingerprint.clone())
            .collect();
        let added = firing.difference(&told.notified).count() > 0;
        let gone = told.notified.iter().any(|f| !firing.contains(f));
        let repeat_ms = match rc.kind {
            ReceiverKind::Alertmanager => ms(rc.repeat_interval.get()).min(AM_RESEND_MS),
            ReceiverKind::Webhook => ms(rc.repeat_interval.get()),
        };
        let repeat = !firing.is_empty() && now - told.last_sent_ms >= repeat_ms;
        let send = added || (gone && rc.send_resolved) || repeat;
        let mut alerts: Vec<&Instance> = members
            .iter()
            .filter(|i| i.state == St::Firing)
            .copied()
            .collect();
        if rc.send_resolved {
            alerts.extend(
                members
                    .iter()
                    .filter(|i| i.state == St::Resolved && told.notified.contains(&i.fingerprint)),
            );
        }
        Self {
            firing,
            send,
            alerts,
            gone,
        }
    }
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
