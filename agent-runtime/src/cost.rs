//! Cost accounting: what each turn cost (the model's price per million tokens
//! times the tokens it reported, exact integers in pico-units), counted in
//! `switchboard_runtime_cost_total` by model and channel, summed per budget
//! window (the calendar month, UTC) in the tenant's database so every pod of the
//! agent shares one figure, and checked against the optional monthly budget.
//!
//! Cheap on the hot path: a turn adds its cost in memory and at most one
//! background flush per pod is in flight (an atomic upsert that returns the
//! shared totals; charges arriving meanwhile go in the next one). Other pods'
//! spend is read back at most every [`REFRESH_EVERY`], in the background.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, TimeZone, Utc};
use crds::UsageStatus;
use crds::money::{Micros, PICOS_PER_UNIT, cost_picos, format_picos};
use crds::runtime_config::{BudgetAction, BudgetConfig, PricingConfig, RuntimeConfig};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{IntCounterVec, Opts};

use crate::db::{Store, WindowSpend};
use crate::metrics::Metrics;
use crate::providers::Usage;

/// How stale the shared window total may get before a background read.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// The budget window containing `now`: its key (`2026-12`) and when it ends.
pub fn window_of(now: DateTime<Utc>) -> (String, DateTime<Utc>) {
    let (year, month) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    let end = Utc
        .with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    (now.format("%Y-%m").to_string(), end)
}

/// A spent budget: what to answer and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetSpent {
    /// Fallback response or refusal.
    pub action: BudgetAction,
    /// The month's budget, e.g. `50`.
    pub budget: String,
    /// Its currency.
    pub currency: String,
    /// When the window ends and the budget is fresh again.
    pub resets_at: DateTime<Utc>,
}

impl BudgetSpent {
    /// Time until the budget resets.
    pub fn retry_after(&self) -> Duration {
        (self.resets_at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
    }
}

/// The window's figures as this pod knows them.
struct Window {
    /// Key of the current window.
    key: String,
    /// The database's total for it, as last read (it only grows).
    shared: WindowSpend,
    /// Added here but not yet in the database, by window.
    pending: BTreeMap<String, WindowSpend>,
    /// When `shared` was last read or returned.
    refreshed_at: Option<Instant>,
}

impl Window {
    /// Moves to the window of `now` when the month turned.
    fn roll(&mut self, now: DateTime<Utc>) {
        let (key, _) = window_of(now);
        if key != self.key {
            self.key = key;
            self.shared = WindowSpend::default();
            self.refreshed_at = None;
        }
    }

    fn total(&self) -> WindowSpend {
        let pending = self.pending.get(&self.key).copied().unwrap_or_default();
        self.shared.plus(pending)
    }
}

/// What the metrics collector reads.
struct Figures {
    /// Cost by (model, channel), in pico-units, since start.
    cost: Mutex<BTreeMap<(String, String), i128>>,
    window: Mutex<Window>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The agent's cost accounting; shared by every turn.
pub struct CostLedger {
    prices: HashMap<String, PricingConfig>,
    currency: Option<String>,
    budget: Option<BudgetConfig>,
    store: Store,
    figures: Arc<Figures>,
    exhausted_turns: IntCounterVec,
    flushing: AtomicBool,
    refreshing: AtomicBool,
}

impl CostLedger {
    /// The ledger for `config`'s prices and budget, its metrics registered in
    /// `metrics`. Accounting is off (no storage, no status) when no model has a
    /// price.
    pub fn new(
        config: &RuntimeConfig,
        store: Store,
        metrics: &Metrics,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let prices: HashMap<_, _> = config
            .model_chain()
            .filter_map(|m| Some((m.name.clone(), m.pricing.clone()?)))
            .collect();
        let currency = config.pricing_currency().map(str::to_owned);
        let budget = config.budget.clone().filter(|_| currency.is_some());
        let (key, _) = window_of(Utc::now());
        let figures = Arc::new(Figures {
            cost: Mutex::new(BTreeMap::new()),
            window: Mutex::new(Window {
                key,
                shared: WindowSpend::default(),
                pending: BTreeMap::new(),
                refreshed_at: None,
            }),
        });
        let exhausted_turns = IntCounterVec::new(
            Opts::new(
                "switchboard_runtime_budget_exhausted_turns_total",
                "Turns answered by the spent-budget rule instead of a model, by action (fallback or reject).",
            ),
            &["action"],
        )?;
        metrics.register(Box::new(exhausted_turns.clone()))?;
        if let Some(currency) = &currency {
            metrics.register(Box::new(CostCollector::new(
                figures.clone(),
                currency.clone(),
                budget.as_ref().map(|b| b.monthly),
            )?))?;
        }
        Ok(Arc::new(Self {
            prices,
            currency,
            budget,
            store,
            figures,
            exhausted_turns,
            flushing: AtomicBool::new(false),
            refreshing: AtomicBool::new(false),
        }))
    }

    /// Whether costs are accounted (some model has a price).
    pub fn enabled(&self) -> bool {
        self.currency.is_some()
    }

    /// The cost of `usage` on `model` in pico-units (0 for a model without a price).
    pub fn cost_of(&self, model: &str, usage: Usage) -> i128 {
        self.prices.get(model).map_or(0, |p| {
            cost_picos(usage.prompt_tokens, p.input_per_million_tokens)
                + cost_picos(usage.completion_tokens, p.output_per_million_tokens)
        })
    }

    /// Accounts one model call: its cost into the metric and the window's spend,
    /// and a background flush into the database. Never waits for the database.
    pub fn charge(self: &Arc<Self>, model: &str, channel: &str, usage: Usage) {
        let Some(_) = &self.currency else {
            return;
        };
        let picos = self.cost_of(model, usage);
        {
            let mut cost = lock(&self.figures.cost);
            *cost
                .entry((model.to_owned(), channel.to_owned()))
                .or_default() += picos;
        }
        let amount = WindowSpend {
            tokens_in: i64::try_from(usage.prompt_tokens).unwrap_or(i64::MAX),
            tokens_out: i64::try_from(usage.completion_tokens).unwrap_or(i64::MAX),
            cost_picos: i64::try_from(picos).unwrap_or(i64::MAX),
            turns: 1,
        };
        {
            let mut window = lock(&self.figures.window);
            window.roll(Utc::now());
            let key = window.key.clone();
            let pending = window.pending.entry(key).or_default();
            *pending = pending.plus(amount);
        }
        self.schedule_flush();
    }

    /// `Some` when the month's budget is spent (as far as this pod knows: its own
    /// spend at once, other pods' within [`REFRESH_EVERY`]). Starts a background
    /// read of the shared total when it is stale.
    pub fn budget_spent(self: &Arc<Self>) -> Option<BudgetSpent> {
        let (budget, currency) = (self.budget.as_ref()?, self.currency.as_ref()?);
        let now = Utc::now();
        let (total, stale) = {
            let mut window = lock(&self.figures.window);
            window.roll(now);
            let stale = window
                .refreshed_at
                .is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
            (window.total(), stale)
        };
        if stale {
            self.schedule_refresh();
        }
        (i128::from(total.cost_picos) >= budget.monthly.to_picos()).then(|| BudgetSpent {
            action: budget.when_spent,
            budget: budget.monthly.to_string(),
            currency: currency.clone(),
            resets_at: window_of(now).1,
        })
    }

    /// Counts a turn answered by the spent-budget rule.
    pub fn count_exhausted(&self, action: BudgetAction) {
        let label = match action {
            BudgetAction::Fallback => "fallback",
            BudgetAction::Reject => "reject",
        };
        self.exhausted_turns.with_label_values(&[label]).inc();
    }

    /// Reads the window's shared total from the database (and sends what is
    /// pending). Errors are logged; the last reading stays.
    pub async fn refresh(&self) {
        if !self.enabled() {
            return;
        }
        let key = {
            let mut window = lock(&self.figures.window);
            window.roll(Utc::now());
            window.key.clone()
        };
        match self.store.window_spend(&key).await {
            Ok(total) => {
                let mut window = lock(&self.figures.window);
                if window.key == key {
                    window.shared = window.shared.max(total);
                    window.refreshed_at = Some(Instant::now());
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot read the budget window's spend"),
        }
        self.flush().await;
    }

    /// The window's tokens and cost for `status.usage` (`None` when costs are
    /// not accounted).
    pub fn usage_status(&self) -> Option<UsageStatus> {
        let currency = self.currency.clone()?;
        let (key, total) = {
            let mut window = lock(&self.figures.window);
            window.roll(Utc::now());
            (window.key.clone(), window.total())
        };
        let budget_spent = self
            .budget
            .as_ref()
            .is_some_and(|b| i128::from(total.cost_picos) >= b.monthly.to_picos());
        Some(UsageStatus {
            window: key,
            input_tokens: total.tokens_in,
            output_tokens: total.tokens_out,
            cost: format_picos(i128::from(total.cost_picos)),
            currency,
            budget: self.budget.as_ref().map(|b| b.monthly.to_string()),
            budget_spent,
        })
    }

    fn schedule_flush(self: &Arc<Self>) {
        if self.flushing.load(Ordering::Acquire) {
            return;
        }
        let ledger = self.clone();
        tokio::spawn(async move { ledger.flush().await });
    }

    fn schedule_refresh(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let ledger = self.clone();
        tokio::spawn(async move {
            ledger.refresh().await;
            ledger.refreshing.store(false, Ordering::Release);
        });
    }

    /// Adds everything pending to the database, one upsert per window, until
    /// nothing is pending; one flush at a time. On an error the amounts stay
    /// pending for the next flush.
    pub async fn flush(&self) {
        let Some(currency) = &self.currency else {
            return;
        };
        loop {
            if self.flushing.swap(true, Ordering::AcqRel) {
                return;
            }
            let batch: Vec<(String, WindowSpend)> = lock(&self.figures.window)
                .pending
                .iter()
                .filter(|(_, amount)| !amount.is_zero())
                .map(|(key, amount)| (key.clone(), *amount))
                .collect();
            let mut failed = false;
            for (key, amount) in &batch {
                match self.store.add_spend(key, currency, *amount).await {
                    Ok(total) => {
                        let mut window = lock(&self.figures.window);
                        if let Some(pending) = window.pending.get_mut(key) {
                            *pending = pending.minus(*amount);
                            if pending.is_zero() {
                                window.pending.remove(key);
                            }
                        }
                        if window.key == *key {
                            window.shared = window.shared.max(total);
                            window.refreshed_at = Some(Instant::now());
                        }
                    }
                    Err(err) => {
                        tracing::warn!(window = %key, error = %err, "cannot add to the budget window's spend; kept for the next flush");
                        failed = true;
                        break;
                    }
                }
            }
            self.flushing.store(false, Ordering::Release);
            // Charges that arrived during the writes go out now; after a failure
            // they wait for the next charge or refresh.
            let more = lock(&self.figures.window)
                .pending
                .values()
                .any(|a| !a.is_zero());
            if failed || !more {
                return;
            }
        }
    }
}

/// Renders the exact cost figures at scrape time: the cost counter (pico-units
/// divided once, so no float sum ever drifts) and the budget window gauges.
struct CostCollector {
    figures: Arc<Figures>,
    currency: String,
    budget: Option<Micros>,
    descs: Vec<Desc>,
}

const COST_TOTAL: &str = "switchboard_runtime_cost_total";
const COST_HELP: &str =
    "Cost of the model calls this pod made, in the pricing currency, by model and channel.";
const WINDOW_COST: &str = "switchboard_runtime_budget_window_cost";
const WINDOW_COST_HELP: &str = "The agent's spend in the current budget window (calendar month, UTC), all pods together, as this pod last saw it.";
const BUDGET_LIMIT: &str = "switchboard_runtime_budget_limit";
const BUDGET_LIMIT_HELP: &str = "The agent's monthly budget, in the pricing currency.";

impl CostCollector {
    fn new(
        figures: Arc<Figures>,
        currency: String,
        budget: Option<Micros>,
    ) -> Result<Self, prometheus::Error> {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            Desc::new(
                name.to_owned(),
                help.to_owned(),
                labels.iter().map(|l| (*l).to_owned()).collect(),
                HashMap::new(),
            )
        };
        let mut descs = vec![
            desc(COST_TOTAL, COST_HELP, &["model", "channel", "currency"])?,
            desc(WINDOW_COST, WINDOW_COST_HELP, &["currency"])?,
        ];
        if budget.is_some() {
            descs.push(desc(BUDGET_LIMIT, BUDGET_LIMIT_HELP, &["currency"])?);
        }
        Ok(Self {
            figures,
            currency,
            budget,
            descs,
        })
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn units(picos: i128) -> f64 {
    picos as f64 / PICOS_PER_UNIT as f64
}

fn gauge(value: f64, label_pairs: Vec<LabelPair>) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut metric = Metric::from_gauge(g);
    metric.set_label(label_pairs);
    metric
}

impl Collector for CostCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let currency = self.currency.as_str();
        let costs: Vec<Metric> = lock(&self.figures.cost)
            .iter()
            .map(|((model, channel), picos)| {
                let mut counter = Counter::default();
                counter.set_value(units(*picos));
                let mut metric = Metric::default();
                metric.set_label(labels(&[
                    ("channel", channel),
                    ("currency", currency),
                    ("model", model),
                ]));
                metric.set_counter(counter);
                metric
            })
            .collect();
        let window = {
            let mut window = lock(&self.figures.window);
            window.roll(Utc::now());
            window.total()
        };
        let mut out = vec![
            family(COST_TOTAL, COST_HELP, MetricType::COUNTER, costs),
            family(
                WINDOW_COST,
                WINDOW_COST_HELP,
                MetricType::GAUGE,
                vec![gauge(
                    units(i128::from(window.cost_picos)),
                    labels(&[("currency", currency)]),
                )],
            ),
        ];
        if let Some(budget) = self.budget {
            out.push(family(
                BUDGET_LIMIT,
                BUDGET_LIMIT_HELP,
                MetricType::GAUGE,
                vec![gauge(
                    units(budget.to_picos()),
                    labels(&[("currency", currency)]),
                )],
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_calendar_months_in_utc() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let (key, end) = window_of(at("2026-12-31T23:59:59Z"));
        assert_eq!(key, "2026-12");
        assert_eq!(end, at("2027-01-01T00:00:00Z"));
        let (key, end) = window_of(at("2027-02-01T00:00:00Z"));
        assert_eq!((key.as_str(), end), ("2027-02", at("2027-03-01T00:00:00Z")));
    }
}
