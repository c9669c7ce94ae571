//! The per-stage breakdown of `verity bench`: every service's Prometheus histograms, scraped
//! before and after the run, and the difference reported per stage of a transaction's way
//! (count, mean, p50, p99).
//!
//! The stages in the order a transaction passes them:
//! gateway call → ingress (validate, forward) → sequencer (admission, mempool wait, execution,
//! commit) → publishing (sent to JetStream) → replica (applied) → gateway (feed, announced).
//! The later ones are measured as the age of the mini-block (from its `timestamp_ms`, taken
//! when the sequencer started producing it) where it passes each service, so they add up along
//! the path instead of being separate intervals; on one machine the clocks agree.
//!
//! Percentiles come from histogram buckets (interpolated inside a bucket, as Prometheus's
//! `histogram_quantile` does), so they are as coarse as the buckets
//! ([`verity_telemetry::SECONDS_BUCKETS`]).
//!
//! Only the exposition of our own exporter is parsed (`name{labels} value` lines, no
//! timestamps): a general Prometheus parser crate would pull in a regex engine for that.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

/// One stage of the breakdown.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stage {
    /// The service that measures it.
    pub service: String,
    /// What it measures.
    pub stage: String,
    /// The histogram (with its label filter, if any).
    pub metric: String,
    /// Observations during the run.
    pub count: u64,
    /// Mean in milliseconds.
    pub mean_ms: f64,
    /// Median in milliseconds (bucket-interpolated).
    pub p50_ms: f64,
    /// 99th percentile in milliseconds (bucket-interpolated).
    pub p99_ms: f64,
}

/// A label that must have a value.
type LabelFilter = Option<(&'static str, &'static str)>;

/// A stage: service, histogram, label filter, description.
const STAGES: &[(&str, &str, LabelFilter, &str)] = &[
    (
        "gateway",
        "verity_gateway_request_seconds",
        Some(("method", "realtime_sendRawTransaction")),
        "realtime_sendRawTransaction, whole call (per tx)",
    ),
    (
        "ingress",
        "verity_ingress_validate_seconds",
        None,
        "decode, hash, stateless checks (per tx)",
    ),
    (
        "ingress",
        "verity_ingress_forward_seconds",
        None,
        "forward to the sequencer until admitted (per tx)",
    ),
    (
        "sequencer",
        "verity_sequencer_admit_seconds",
        None,
        "admission: state read, mempool insert (per tx)",
    ),
    (
        "sequencer",
        "verity_sequencer_mempool_wait_seconds",
        None,
        "wait in the mempool until taken (per tx)",
    ),
    (
        "sequencer",
        "verity_sequencer_commit_wait_seconds",
        None,
        "producer waits for the previous commit (per mini-block)",
    ),
    (
        "sequencer",
        "verity_sequencer_execute_seconds",
        None,
        "take, execute, sign (per mini-block)",
    ),
    (
        "sequencer",
        "verity_sequencer_commit_seconds",
        None,
        "MDBX write and durable commit (per mini-block)",
    ),
    (
        "sequencer",
        "verity_sequencer_mini_block_seconds",
        None,
        "mini-block from take to committed",
    ),
    (
        "sequencer",
        "verity_sequencer_seal_block_seconds",
        None,
        "seal a block: finish the roots, sign (per block)",
    ),
    (
        "sequencer",
        "verity_sequencer_block_roots_seconds",
        None,
        "add a mini-block to its block's roots (per mini-block, while it commits)",
    ),
    (
        "sequencer",
        "verity_sequencer_publish_mini_block_age_seconds",
        None,
        "mini-block age when sent to JetStream",
    ),
    (
        "replica",
        "verity_replica_mini_block_age_seconds",
        None,
        "mini-block age once applied",
    ),
    (
        "gateway",
        "verity_gateway_feed_mini_block_age_seconds",
        None,
        "mini-block age on arrival at the gateway's feed",
    ),
    (
        "gateway",
        "verity_gateway_announce_mini_block_age_seconds",
        None,
        "mini-block age when receipts are handed out",
    ),
];

/// Where each service serves `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Endpoints(Vec<(String, String)>);

impl Endpoints {
    /// The endpoints a devnet wrote into `dir/run/<service>.json` (when that devnet's gateway
    /// is the one at `rpc_url`), plus `extra` (`name=url`).
    pub fn discover(
        devnet_dir: Option<&Path>,
        rpc_url: &str,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let mut endpoints = Vec::new();
        let gateway_http = devnet_dir
            .and_then(|dir| std::fs::read_to_string(dir.join("run").join("gateway.json")).ok())
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|value| value["http"].as_str().map(str::to_owned));
        let same_chain = gateway_http.is_some_and(|http| rpc_url.contains(&http));
        if let Some(dir) = devnet_dir.filter(|_| same_chain) {
            let run = dir.join("run");
            if let Ok(entries) = std::fs::read_dir(&run) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.extension().is_none_or(|e| e != "json") {
                        continue;
                    }
                    let Some(service) = path.file_stem().and_then(|s| s.to_str()) else {
                        continue;
                    };
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let value: serde_json::Value = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", path.display()))?;
                    if let Some(addr) = value["metrics"].as_str() {
                        endpoints.push((service.to_owned(), format!("http://{addr}/metrics")));
                    }
                }
            }
        }
        for item in extra {
            let (name, url) = item.split_once('=').with_context(|| {
                format!("--metrics-url {item}: expected SERVICE=URL, e.g. sequencer=http://10.0.0.5:9100/metrics")
            })?;
            endpoints.push((name.to_owned(), url.to_owned()));
        }
        endpoints.sort();
        Ok(Self(endpoints))
    }

    /// True when there is nothing to scrape.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Scrapes every endpoint; one that does not answer is left out (its stages show no data).
    pub async fn scrape(&self) -> Scrape {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
        let mut services = HashMap::new();
        for (service, url) in &self.0 {
            match fetch(&client, url).await {
                Ok(text) => {
                    services.insert(service.clone(), parse(&text));
                }
                Err(error) => tracing::warn!(service, url, %error, "metrics scrape failed"),
            }
        }
        Scrape(services)
    }
}

async fn fetch(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<bytes::Bytes>>,
    url: &str,
) -> anyhow::Result<String> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    let response = tokio::time::timeout(std::time::Duration::from_secs(5), client.get(uri))
        .await
        .context("timed out")??;
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// One sample line: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Samples per service.
#[derive(Debug, Clone, Default)]
pub struct Scrape(HashMap<String, Vec<Sample>>);

/// Parses the Prometheus text exposition (comments skipped, unparsable lines ignored).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}')?;
            let mut labels = BTreeMap::new();
            for pair in body.split("\",").filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=')?;
                labels.insert(
                    key.trim_matches(',').to_owned(),
                    value.trim_matches('"').to_owned(),
                );
            }
            (name, labels)
        }
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A histogram's state summed over the series that match a label filter.
#[derive(Debug, Default, Clone, PartialEq)]
struct Histogram {
    count: f64,
    sum: f64,
    /// Cumulative counts by upper bound, ascending.
    buckets: Vec<(f64, f64)>,
}

impl Histogram {
    fn of(samples: &[Sample], metric: &str, filter: Option<(&str, &str)>) -> Self {
        let matches = |s: &Sample| {
            filter.is_none_or(|(k, v)| s.labels.get(k).is_some_and(|value| value == v))
        };
        let mut histogram = Self::default();
        let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for sample in samples.iter().filter(|s| matches(s)) {
            let Some(suffix) = sample.name.strip_prefix(metric) else {
                continue;
            };
            match suffix {
                "_count" => histogram.count += sample.value,
                "_sum" => histogram.sum += sample.value,
                "_bucket" => {
                    let le = match sample.labels.get("le").map(String::as_str) {
                        Some("+Inf") => f64::INFINITY,
                        Some(text) => match text.parse::<f64>() {
                            Ok(le) => le,
                            Err(_) => continue,
                        },
                        None => continue,
                    };
                    // f64 bounds keyed by their bits: positive floats sort as their bits do.
                    buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += sample.value;
                }
                _ => {}
            }
        }
        histogram.buckets = buckets.into_values().collect();
        histogram
    }

    fn minus(&self, before: &Self) -> Self {
        let earlier: HashMap<u64, f64> = before
            .buckets
            .iter()
            .map(|(le, c)| (le.to_bits(), *c))
            .collect();
        Self {
            count: self.count - before.count,
            sum: self.sum - before.sum,
            buckets: self
                .buckets
                .iter()
                .map(|(le, c)| (*le, c - earlier.get(&le.to_bits()).copied().unwrap_or(0.0)))
                .collect(),
        }
    }

    /// The `q` quantile (0..1), interpolated inside its bucket; the highest finite bound when
    /// it falls in the +Inf bucket.
    fn quantile(&self, q: f64) -> f64 {
        if self.count <= 0.0 {
            return 0.0;
        }
        let target = q * self.count;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, cumulative) in &self.buckets {
            if cumulative >= target {
                if le.is_infinite() {
                    return lower;
                }
                let width = cumulative - below;
                let within = if width > 0.0 {
                    (target - below) / width
                } else {
                    1.0
                };
                return lower + (le - lower) * within;
            }
            if le.is_finite() {
                lower = le;
            }
            below = cumulative;
        }
        lower
    }
}

/// The stages measured between `before` and `after` (stages without observations are left out).
pub fn breakdown(before: &Scrape, after: &Scrape) -> Vec<Stage> {
    let empty = Vec::new();
    STAGES
        .iter()
        .filter_map(|&(service, metric, filter, stage)| {
            let now = after.0.get(service)?;
            let then = before.0.get(service).unwrap_or(&empty);
            let delta =
                Histogram::of(now, metric, filter).minus(&Histogram::of(then, metric, filter));
            if delta.count < 1.0 {
                return None;
            }
            Some(Stage {
                service: service.to_owned(),
                stage: stage.to_owned(),
                metric: match filter {
                    Some((k, v)) => format!("{metric}{{{k}=\"{v}\"}}"),
                    None => metric.to_owned(),
                },
                count: delta.count as u64,
                mean_ms: delta.sum / delta.count * 1e3,
                p50_ms: delta.quantile(0.5) * 1e3,
                p99_ms: delta.quantile(0.99) * 1e3,
            })
        })
        .collect()
}

/// CPU time a process used during the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceCpu {
    /// The service (or `bench`, the load generator itself).
    pub service: String,
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
}

/// CPU seconds per scraped service between the scrapes (`process_cpu_seconds_total`).
pub fn cpu(before: &Scrape, after: &Scrape) -> Vec<ServiceCpu> {
    let seconds = |scrape: &Scrape, service: &str| {
        scrape.0.get(service).and_then(|samples| {
            samples
                .iter()
                .find(|s| s.name == "process_cpu_seconds_total")
                .map(|s| s.value)
        })
    };
    let mut services: Vec<&String> = after.0.keys().collect();
    services.sort();
    services
        .into_iter()
        .filter_map(|service| {
            let used = seconds(after, service)? - seconds(before, service)?;
            Some(ServiceCpu {
                service: service.clone(),
                cpu_seconds: used,
            })
        })
        .collect()
}

/// The breakdown as an aligned text table.
pub fn table(stages: &[Stage]) -> String {
    let mut out = format!(
        "{:<10} {:<56} {:>9} {:>9} {:>9} {:>9}\n",
        "service", "stage", "count", "mean ms", "p50 ms", "p99 ms"
    );
    for s in stages {
        out.push_str(&format!(
            "{:<10} {:<56} {:>9} {:>9.2} {:>9.2} {:>9.2}\n",
            s.service, s.stage, s.count, s.mean_ms, s.p50_ms, s.p99_ms
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# TYPE verity_x_seconds histogram
verity_x_seconds_bucket{le="0.001"} 1
verity_x_seconds_bucket{le="0.01"} 2
verity_x_seconds_bucket{le="+Inf"} 2
verity_x_seconds_sum 0.0105
verity_x_seconds_count 2
verity_gateway_request_seconds_bucket{method="eth_call",outcome="ok",le="0.01"} 7
verity_gateway_request_seconds_count{method="eth_call",outcome="ok"} 7
"#;

    const AFTER: &str = r#"# TYPE verity_x_seconds histogram
verity_x_seconds_bucket{le="0.001"} 1
verity_x_seconds_bucket{le="0.01"} 52
verity_x_seconds_bucket{le="+Inf"} 102
verity_x_seconds_sum 10.5105
verity_x_seconds_count 102
verity_gateway_request_seconds_bucket{method="eth_call",outcome="ok",le="0.01"} 9
verity_gateway_request_seconds_count{method="eth_call",outcome="ok"} 9
"#;

    /// Labels, +Inf and comments parse; the difference of two scrapes gives the run's count,
    /// mean and interpolated quantiles.
    #[test]
    fn the_difference_of_two_scrapes_gives_the_runs_histogram() {
        let samples = parse(AFTER);
        assert_eq!(samples.len(), 7);
        assert_eq!(
            samples[5].labels.get("method").map(String::as_str),
            Some("eth_call")
        );
        assert_eq!(samples[2].value, 102.0);
        let delta = Histogram::of(&samples, "verity_x_seconds", None).minus(&Histogram::of(
            &parse(BEFORE),
            "verity_x_seconds",
            None,
        ));
        assert_eq!(delta.count, 100.0);
        assert!((delta.sum - 10.5).abs() < 1e-9);
        // 50 observations in (0.001, 0.01], 50 above: the median is the top of the first.
        assert!((delta.quantile(0.5) - 0.01).abs() < 1e-9);
        // The 25th lies half way through (0.001, 0.01].
        assert!((delta.quantile(0.25) - 0.0055).abs() < 1e-9);
        // Beyond the last finite bound: reported as that bound.
        assert!((delta.quantile(0.99) - 0.01).abs() < 1e-9);
        let calls = Histogram::of(
            &samples,
            "verity_gateway_request_seconds",
            Some(("method", "eth_call")),
        );
        assert_eq!(calls.count, 9.0);
        let none = Histogram::of(
            &samples,
            "verity_gateway_request_seconds",
            Some(("method", "eth_sendRawTransaction")),
        );
        assert_eq!(none.count, 0.0);
    }

    /// CPU per service is the difference of `process_cpu_seconds_total`.
    #[test]
    fn cpu_is_the_difference_of_two_scrapes() {
        let scrape = |value: f64| {
            Scrape(
                [(
                    "replica".to_owned(),
                    parse(&format!("# TYPE process_cpu_seconds_total gauge\nprocess_cpu_seconds_total {value}\n")),
                )]
                .into(),
            )
        };
        let used = cpu(&scrape(1.5), &scrape(4.0));
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].service, "replica");
        assert!((used[0].cpu_seconds - 2.5).abs() < 1e-9);
    }

    /// A stage appears only when its service was scraped and observed something in between.
    #[test]
    fn breakdown_reports_the_stages_that_ran() {
        let scrape = |text: &str| {
            Scrape(
                [(
                    "sequencer".to_owned(),
                    parse(&text.replace("verity_x_seconds", "verity_sequencer_commit_seconds")),
                )]
                .into(),
            )
        };
        let stages = breakdown(&scrape(BEFORE), &scrape(AFTER));
        assert_eq!(stages.len(), 1);
        assert_eq!(stages[0].count, 100);
        assert!((stages[0].mean_ms - 105.0).abs() < 1e-6);
        assert!(table(&stages).contains("MDBX write"));
        assert!(breakdown(&scrape(AFTER), &scrape(AFTER)).is_empty());
    }
}
