//! A real Prometheus (Debian's `/usr/bin/prometheus`) on a loopback port,
//! scraping portcullis's admin listener every second, plus helpers to read
//! its HTTP API and the text exposition format.
//!
//! Every wait is bounded and panics with the tail of Prometheus's log.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::blocking::Client;
use tempfile::TempDir;

use super::{free_port, kill_child, tail, WAIT};

/// One `scrape_configs` entry.
#[derive(Clone, Debug)]
pub struct ScrapeJob {
    pub name: String,
    /// `host:port` of the admin listener.
    pub target: String,
    /// `authorization: credentials_file` with this token.
    pub bearer: Option<String>,
    /// `basic_auth` with this user and password (`password_file`).
    pub basic: Option<(String, String)>,
}

impl ScrapeJob {
    pub fn new(name: &str, target: &str) -> ScrapeJob {
        ScrapeJob {
            name: name.to_string(),
            target: target.to_string(),
            bearer: None,
            basic: None,
        }
    }
}

/// One sample of an instant-vector answer.
#[derive(Clone, Debug)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

pub struct Prometheus {
    pub dir: TempDir,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    client: Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `jobs` every second and evaluating
    /// `rule_files` every second; returns once `/-/ready` answers 200.
    pub fn start(jobs: &[ScrapeJob], rule_files: &[PathBuf]) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-prom-")
            .tempdir()
            .unwrap();
        let mut yaml = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
        );
        if !rule_files.is_empty() {
            yaml.push_str("rule_files:\n");
            for f in rule_files {
                yaml.push_str(&format!("  - {:?}\n", f.display().to_string()));
            }
        }
        yaml.push_str("scrape_configs:\n");
        for (i, job) in jobs.iter().enumerate() {
            yaml.push_str(&format!(
                "  - job_name: {:?}\n    metrics_path: /metrics\n",
                job.name
            ));
            if let Some(token) = &job.bearer {
                let f = dir.path().join(format!("token-{i}"));
                fs::write(&f, token).unwrap();
                yaml.push_str(&format!(
                    "    authorization:\n      type: Bearer\n      credentials_file: {:?}\n",
                    f.display().to_string()
                ));
            }
            if let Some((user, pass)) = &job.basic {
                let f = dir.path().join(format!("password-{i}"));
                fs::write(&f, pass).unwrap();
                yaml.push_str(&format!(
                    "    basic_auth:\n      username: {user:?}\n      password_file: {:?}\n",
                    f.display().to_string()
                ));
            }
            yaml.push_str(&format!(
                "    static_configs:\n      - targets: [{:?}]\n",
                job.target
            ));
        }
        let config = dir.path().join("prometheus.yml");
        fs::write(&config, yaml).unwrap();
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let logf = File::create(&log).unwrap();
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf.try_clone().unwrap()))
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("spawn /usr/bin/prometheus");
        let client = Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut p = Prometheus {
            dir,
            port,
            child: Some(child),
            log,
            client,
        };
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = p.child.as_mut().unwrap().try_wait() {
                panic!("prometheus exited early: {st}\n{}", p.logs());
            }
            if matches!(p.client.get(p.url("/-/ready")).send(), Ok(r) if r.status() == 200) {
                return p;
            }
            if start.elapsed() > WAIT {
                panic!("prometheus not ready within {WAIT:?}\n{}", p.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.yml")
    }

    pub fn logs(&self) -> String {
        format!("--- prometheus log (tail)\n{}", tail(&self.log, 30))
    }

    /// GET an API path with query parameters; the `data` member of a
    /// `"status":"success"` answer, or the error.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<serde_json::Value, String> {
        let r = self
            .client
            .get(self.url(path))
            .query(params)
            .send()
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = r.status().as_u16();
        let v: serde_json::Value = r
            .json()
            .map_err(|e| format!("GET {path}: {status}, not JSON: {e}"))?;
        if v["status"] != "success" {
            return Err(format!("GET {path} {params:?}: {status} {v}"));
        }
        Ok(v["data"].clone())
    }

    /// An instant query; every sample of the vector it returns.
    pub fn query(&self, q: &str) -> Result<Vec<Sample>, String> {
        let data = self.api("/api/v1/query", &[("query", q)])?;
        if data["resultType"] != "vector" {
            return Err(format!("{q}: not a vector: {data}"));
        }
        let mut out = Vec::new();
        for s in data["result"].as_array().into_iter().flatten() {
            let labels = s["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let value = s["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("{q}: bad sample {s}"))?;
            out.push(Sample { labels, value });
        }
        Ok(out)
    }

    /// The value of a query that selects at most one series (`None`: no
    /// series). Panics on a query error or on several series.
    pub fn value(&self, q: &str) -> Option<f64> {
        let v = self
            .query(q)
            .unwrap_or_else(|e| panic!("query {q}: {e}\n{}", self.logs()));
        assert!(v.len() <= 1, "query {q}: more than one series: {v:?}");
        v.first().map(|s| s.value)
    }

    /// Waits until Prometheus holds a sample of `up{job=…}` whose scrape
    /// started after `after`, i.e. everything the target exposed at
    /// `after` is now queryable.
    pub fn wait_for_scrape_after(&self, job: &str, after: SystemTime) {
        let t = after.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let q = format!("timestamp(up{{job=\"{job}\"}})");
        let mut last = None;
        let start = Instant::now();
        loop {
            last = self.value(&q).or(last);
            if last.is_some_and(|ts| ts > t) {
                return;
            }
            if start.elapsed() > WAIT {
                panic!(
                    "no scrape of job {job} after {t} within {WAIT:?} (last sample at {last:?})\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `up{job=…}` has a sample and returns its value.
    pub fn wait_for_up(&self, job: &str) -> f64 {
        let q = format!("up{{job=\"{job}\"}}");
        let start = Instant::now();
        loop {
            if let Some(v) = self.value(&q) {
                return v;
            }
            if start.elapsed() > WAIT {
                panic!("job {job} never scraped within {WAIT:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `/api/v1/targets`: (job, health, lastError) of every active target.
    pub fn targets(&self) -> Vec<(String, String, String)> {
        let data = self
            .api("/api/v1/targets", &[])
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        data["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["labels"]["job"].as_str().unwrap_or_default().to_string(),
                    t["health"].as_str().unwrap_or_default().to_string(),
                    t["lastError"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// `/api/v1/rules`: (group, rule name, health, lastError, evaluated yet)
    /// of every loaded rule.
    pub fn rules(&self) -> Vec<(String, String, String, String, bool)> {
        let data = self
            .api("/api/v1/rules", &[])
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        let mut out = Vec::new();
        for g in data["groups"].as_array().into_iter().flatten() {
            let group = g["name"].as_str().unwrap_or_default().to_string();
            for r in g["rules"].as_array().into_iter().flatten() {
                let evaluated = r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001-01-01"));
                out.push((
                    group.clone(),
                    r["name"].as_str().unwrap_or_default().to_string(),
                    r["health"].as_str().unwrap_or_default().to_string(),
                    r["lastError"].as_str().unwrap_or_default().to_string(),
                    evaluated,
                ));
            }
        }
        out
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// the text exposition format
// ---------------------------------------------------------------------------

/// One sample line of a scrape: `name{labels} value`.
#[derive(Clone, Debug)]
pub struct TextSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the sample lines of a text exposition (comments skipped).
pub fn parse_exposition(text: &str) -> Vec<TextSample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rfind('}') {
            Some(i) => (&line[..=i], line[i + 1..].trim()),
            None => match line.split_once(' ') {
                Some((s, v)) => (s, v.trim()),
                None => continue,
            },
        };
        // an optional timestamp after the value
        let value = value.split_whitespace().next().unwrap_or("");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        out.push(TextSample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut v = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        v.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => v.push(c),
            }
        }
        out.insert(k.trim().trim_start_matches(',').trim().to_string(), v);
        rest = &after[end..];
    }
    out
}

/// The value of the series `name` whose labels include all of `labels`
/// (summed if several match); `None` if no series matches.
pub fn sample_value(samples: &[TextSample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    if matching.is_empty() {
        None
    } else {
        Some(matching.iter().sum())
    }
}

/// Names declared by `# TYPE name kind` lines, with their kind.
pub fn declared_types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            Some((p.next()?.to_string(), p.next()?.to_string()))
        })
        .collect()
}

/// Runs `promtool ARGS`, feeding `stdin`; (exit code, stdout + stderr).
pub fn promtool(args: &[&str], stdin: Option<&[u8]>, cwd: Option<&Path>) -> (Option<i32>, String) {
    use std::io::Write;
    let mut cmd = Command::new("/usr/bin/promtool");
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().expect("spawn /usr/bin/promtool");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = s.write_all(&input);
        });
    }
    let o = super::wait_output(
        child,
        Duration::from_secs(60),
        &format!("promtool {args:?}"),
    );
    (
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}
