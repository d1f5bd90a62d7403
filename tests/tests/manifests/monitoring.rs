//! deploy/monitoring: the PrometheusRule's alerts through `promtool check
//! rules` and `promtool test rules` (tests/monitoring/alerts.test.yaml), the
//! dashboard's every query through promtool's PromQL parser, every metric
//! either names against the agent's metric names, and the PodMonitor against
//! the DaemonSet it scrapes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::kustomize::{kustomization, render, the_container};
use crate::support::{
    arr, assert_success, deploy, read, repo, require_tool, run, s, yaml_docs, TempDir,
};

/// The agent's metrics, the one list the bundle is checked against: counters
/// with their `_total`, histograms by their base name (their `_bucket`,
/// `_sum` and `_count` series are accepted).
pub const METRICS: &[&str] = &[
    "netpol_agent_build_info",
    "netpol_agent_policy_hash_info",
    "netpol_agent_policy_generation",
    "netpol_agent_ready",
    "netpol_agent_last_reload_failed",
    "netpol_agent_policy_reloads_total",
    "netpol_agent_last_reload_success_timestamp_seconds",
    "netpol_agent_ct_gc_runs_total",
    "netpol_agent_ct_gc_deleted_total",
    "netpol_agent_map_entries",
    "netpol_agent_map_capacity",
    "netpol_agent_map_evictions_total",
    "netpol_agent_interfaces",
    "netpol_agent_packets_total",
    "netpol_agent_bytes_total",
    "netpol_agent_events_total",
    "netpol_agent_kubernetes_synced",
    // The process collector's standard set.
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "process_threads",
];
pub const HISTOGRAMS: &[&str] = &[
    "netpol_agent_reload_duration_seconds",
    "netpol_agent_ct_gc_duration_seconds",
];
/// Series Prometheus itself makes for every target.
const SCRAPE_SERIES: &[&str] = &["up"];

/// The alerts the bundle must have.
const ALERTS: &[&str] = &[
    "NetpolAgentDown",
    "NetpolAgentNotReady",
    "NetpolAgentReloadFailed",
    "NetpolAgentPolicyDrift",
    "NetpolAgentConntrackNearlyFull",
    "NetpolAgentEventsLost",
    "NetpolAgentMalformedDropsRising",
    "NetpolAgentSlowHook",
    "NetpolAgentKubernetesNotSynced",
];

fn known(metric: &str) -> bool {
    METRICS.contains(&metric)
        || SCRAPE_SERIES.contains(&metric)
        || HISTOGRAMS.iter().any(|h| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| metric == format!("{h}{suffix}"))
        })
}

/// The metric names a PromQL expression selects. Strings, label matchers
/// (`{...}`), ranges and subqueries (`[...]`), grouping lists (`by (...)`,
/// `on (...)`, ...) are taken out first; what is left that is a name not
/// followed by `(` (a function or aggregation) and not a keyword is a metric.
/// A mistake here shows as an unknown name, which fails the test.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "inf",
        "nan",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Blank out strings, {...} and [...].
    let mut plain = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut escaped = false;
                for d in chars.by_ref() {
                    if !escaped && d == c {
                        break;
                    }
                    escaped = d == '\\' && !escaped;
                }
                plain.push(' ');
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                for d in chars.by_ref() {
                    if d == close {
                        break;
                    }
                }
                plain.push(' ');
            }
            _ => plain.push(c),
        }
    }
    // Tokens: names, and single other characters.
    let mut tokens: Vec<String> = Vec::new();
    let mut cur = String::new();
    for c in plain.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' || (c == '.' && !cur.is_empty()) {
            cur.push(c);
        } else {
            if !cur.is_empty() {
                tokens.push(std::mem::take(&mut cur));
            }
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
        }
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let next = tokens.get(i + 1).map(String::as_str);
        if GROUPING.contains(&t.to_lowercase().as_str()) && next == Some("(") {
            // Skip the label list.
            while i < tokens.len() && tokens[i] != ")" {
                i += 1;
            }
        } else if t
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && next != Some("(")
            // `sum by (...) (...)`: an aggregation with its grouping first.
            && !next.is_some_and(|n| n == "by" || n == "without")
            && !KEYWORDS.contains(&t.to_lowercase().as_str())
            // Durations after `offset` and numbers like 1e3 start with a digit;
            // 0x... too. Names only.
            && !t.contains('.')
        {
            names.insert(t.clone());
        }
        i += 1;
    }
    names
}

fn promtool() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/promtool");
    require_tool(&p, "run `cargo xtask setup` as root (Debian's prometheus)").then_some(p)
}

/// `promtool check rules` on a file holding one recording rule per
/// expression: promtool parses each with Prometheus's own PromQL parser.
fn check_promql(promtool: &Path, exprs: &[String]) -> std::process::Output {
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("netpol:query_{i}"), "expr": e}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "queries", "rules": rules}]});
    let tmp = TempDir::new("promql");
    let path = tmp.0.join("queries.yaml");
    std::fs::write(&path, file.to_string()).unwrap();
    run(Command::new(promtool).args(["check", "rules"]).arg(&path))
}

/// Grafana's variables replaced by values PromQL accepts.
fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "6h")
        .replace("$node", ".*")
}

fn dashboard() -> Value {
    serde_json::from_str(&read(&deploy().join("monitoring/dashboard.json")))
        .expect("dashboard.json is JSON")
}

/// Every target expression of the dashboard's panels, rows' panels included,
/// with its panel's title.
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().expect("a target without expr");
                out.push((
                    p["title"].as_str().unwrap_or_default().to_owned(),
                    expr.to_owned(),
                ));
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// The PrometheusRule's `spec`, which is a Prometheus rule file as is.
fn rule_file() -> Option<Value> {
    let bundle = render("monitoring")?;
    Some(bundle.resource("PrometheusRule")["spec"].clone())
}

#[test]
fn the_alerts_parse_use_exported_metrics_and_pass_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let Some(spec) = rule_file() else { return };
    let tmp = TempDir::new("alerts");
    std::fs::write(tmp.0.join("rules.yaml"), spec.to_string()).unwrap();
    let out = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(tmp.0.join("rules.yaml")));
    assert_success(&out, "promtool check rules (the PrometheusRule's groups)");

    let mut alerts = Vec::new();
    for group in arr(&spec["groups"], "groups") {
        for rule in arr(&group["rules"], "rules") {
            let name = s(&rule["alert"], "an alerting rule").to_owned();
            let expr = s(&rule["expr"], "expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{name}: no metric in {expr}");
            for m in &names {
                assert!(known(m), "{name}: {m} is not a metric the agent exports");
            }
            assert!(
                rule["labels"]["severity"].is_string()
                    && rule["annotations"]["summary"].is_string()
                    && rule["annotations"]["description"].is_string(),
                "{name}: severity, summary and description"
            );
            alerts.push(name);
        }
    }
    assert_eq!(alerts, ALERTS, "the alerts, in order");

    // Each alert fires in one case and stays quiet in another.
    let tests_file = repo().join("tests/monitoring/alerts.test.yaml");
    let tests = yaml_docs(&tests_file).remove(0);
    assert_eq!(tests["rule_files"], serde_json::json!(["rules.yaml"]));
    for alert in ALERTS {
        let cases: Vec<&Value> = arr(&tests["tests"], "tests")
            .iter()
            .flat_map(|t| arr(&t["alert_rule_test"], "alert_rule_test"))
            .filter(|c| c["alertname"] == *alert)
            .collect();
        let firing = cases
            .iter()
            .filter(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()));
        let quiet = cases.iter().filter(|c| {
            c["exp_alerts"].is_null() || c["exp_alerts"].as_array().is_some_and(|a| a.is_empty())
        });
        assert!(firing.count() >= 1, "{alert}: no case where it fires");
        assert!(quiet.count() >= 1, "{alert}: no case where it stays quiet");
    }
    std::fs::copy(&tests_file, tmp.0.join("alerts.test.yaml")).unwrap();
    let out = run(Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yaml"])
        .current_dir(&tmp.0));
    assert_success(
        &out,
        "promtool test rules tests/monitoring/alerts.test.yaml",
    );
}

#[test]
fn the_dashboard_queries_parse_and_use_exported_metrics() {
    let Some(promtool) = promtool() else { return };
    let dash = dashboard();
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 10, "{} queries", queries.len());
    let exprs: Vec<String> = queries.iter().map(|(_, e)| grafana_to_promql(e)).collect();
    for ((title, raw), expr) in queries.iter().zip(&exprs) {
        assert!(
            !expr.contains('$'),
            "{title}: an unknown Grafana variable in {raw}"
        );
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{title}: no metric in {raw}");
        for m in &names {
            assert!(known(m), "{title}: {m} is not a metric the agent exports");
        }
    }
    let out = check_promql(&promtool, &exprs);
    assert_success(&out, "promtool check rules (the dashboard's queries)");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{} rules found", exprs.len())),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The node variable lists the nodes from an exported metric.
    for var in arr(&dash["templating"]["list"], "templating") {
        if var["type"] == "query" {
            let q = s(&var["definition"], "a query variable's definition");
            let metric = q
                .strip_prefix("label_values(")
                .and_then(|r| r.split(',').next())
                .unwrap_or_else(|| panic!("variable {}: {q}", var["name"]));
            assert!(known(metric.trim()), "variable {}: {metric}", var["name"]);
        }
    }

    // What the dashboard is for: verdicts by reason and by rule, the top
    // denied traffic, map fill, reload state.
    let all = |pred: &dyn Fn(&str) -> bool| exprs.iter().any(|e| pred(e));
    assert!(all(
        &|e| e.contains("netpol_agent_packets_total") && e.contains("by (verdict, reason)")
    ));
    assert!(all(
        &|e| e.contains("netpol_agent_packets_total") && e.contains("by (rule")
    ));
    assert!(all(
        &|e| e.starts_with("topk(") && e.contains("verdict=\"drop\"")
    ));
    assert!(all(
        &|e| e.contains("netpol_agent_map_entries") && e.contains("/ netpol_agent_map_capacity")
    ));
    assert!(all(&|e| e.contains("netpol_agent_last_reload_failed")));
    assert!(all(
        &|e| e.contains("netpol_agent_last_reload_success_timestamp_seconds")
    ));
    assert!(all(&|e| e.contains("netpol_agent_policy_hash_info")));
}

/// The checks above can fail: a misspelled metric is unknown, a query with
/// an unclosed parenthesis fails promtool's parser, an alert whose expected
/// value is wrong fails its unit test.
#[test]
fn the_checks_catch_a_wrong_metric_a_broken_query_and_a_wrong_alert() {
    let names = metric_names(
        "sum by (map) (rate(netpol_agent_map_evicitons_total{map=\"conntrack\"}[5m])) / on (node) group_left netpol_agent_map_capacity offset 5m",
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "netpol_agent_map_evicitons_total".to_owned(),
            "netpol_agent_map_capacity".to_owned()
        ])
    );
    assert!(!known("netpol_agent_map_evicitons_total"));
    assert!(known("netpol_agent_reload_duration_seconds_bucket"));
    assert!(!known("netpol_agent_reload_duration_seconds_total"));

    let Some(promtool) = promtool() else { return };
    let out = check_promql(
        &promtool,
        &["sum(rate(netpol_agent_packets_total[5m])".to_owned()],
    );
    assert!(
        !out.status.success(),
        "promtool accepted an unclosed parenthesis"
    );

    let Some(spec) = rule_file() else { return };
    let tmp = TempDir::new("alerts-wrong");
    std::fs::write(tmp.0.join("rules.yaml"), spec.to_string()).unwrap();
    let tests = read(&repo().join("tests/monitoring/alerts.test.yaml"));
    let wrong = tests.replacen(
        "summary: conntrack on node-a is 95% full",
        "summary: conntrack on node-a is 50% full",
        1,
    );
    assert_ne!(tests, wrong);
    std::fs::write(tmp.0.join("alerts.test.yaml"), wrong).unwrap();
    let out = run(Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yaml"])
        .current_dir(&tmp.0));
    assert!(
        !out.status.success(),
        "promtool test rules passed a wrong expectation"
    );
}

#[test]
fn the_pod_monitor_scrapes_the_agents_metrics_port() {
    let Some(bundle) = render("monitoring") else {
        return;
    };
    let Some(agent) = kustomization() else { return };
    let pm = bundle.resource("PodMonitor");
    let ds = agent.resource("DaemonSet");
    let pod_labels = ds["spec"]["template"]["metadata"]["labels"].clone();
    let namespace = ds["metadata"]["namespace"].clone();
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["metadata"]["namespace"], namespace);
    assert_eq!(
        arr(&pm["spec"]["namespaceSelector"]["matchNames"], "matchNames"),
        &vec![namespace]
    );
    let selector = pm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&pod_labels[k], v, "the agent's pods carry {k}={v}");
    }
    let endpoints = arr(&pm["spec"]["podMetricsEndpoints"], "podMetricsEndpoints");
    assert_eq!(endpoints.len(), 1);
    let port = s(&endpoints[0]["port"], "port");
    assert_eq!(port, "metrics");
    let c = the_container(&ds["spec"]["template"]["spec"], "DaemonSet containers");
    assert!(
        arr(&c["ports"], "ports").iter().any(|p| p["name"] == port),
        "the agent's container has a port named {port}"
    );
    assert_eq!(endpoints[0]["path"], "/metrics");
    // The alerts and the dashboard group by `node`.
    assert!(arr(&endpoints[0]["relabelings"], "relabelings")
        .iter()
        .any(|r| {
            r["targetLabel"] == "node"
                && r["sourceLabels"] == serde_json::json!(["__meta_kubernetes_pod_node_name"])
        }));
    // The PrometheusRule's `up` alert names the job the Operator gives this
    // PodMonitor's targets: NAMESPACE/NAME.
    let job = format!(
        "{}/{}",
        s(&pm["metadata"]["namespace"], "namespace"),
        s(&pm["metadata"]["name"], "name")
    );
    let rule = bundle.resource("PrometheusRule").to_string();
    assert!(rule.contains(&format!("up{{job=\\\"{job}\\\"}}")), "{rule}");
    // The dashboard ConfigMap holds dashboard.json as shipped.
    let cm = bundle.configmap("netpol-agent-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        cm["data"]["dashboard.json"],
        read(&deploy().join("monitoring/dashboard.json")).as_str()
    );
}
