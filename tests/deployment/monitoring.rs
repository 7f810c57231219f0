//! deploy/prometheus and deploy/grafana: promtool on the rules and the
//! dashboard's queries, and only metric names the gateway exports.

use std::process::Command;

use serde_json::Value;

use super::*;

/// The metric names src/metrics.rs registers.
fn exported_metrics() -> Vec<String> {
    let source = read("src/metrics.rs");
    let names: Vec<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("portcullis_") && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(str::to_owned)
        .collect();
    assert!(
        names.len() >= 20,
        "metric names found in src/metrics.rs: {names:?}"
    );
    names
}

/// `portcullis_*` names in a text; a histogram's series carry a suffix.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("portcullis_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[track_caller]
fn assert_exported(names: &[String], file: &str) {
    let exported = exported_metrics();
    assert!(!names.is_empty(), "{file} names no portcullis metric");
    for name in names {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| exported.iter().any(|e| e == base))
            .unwrap_or(name);
        assert!(
            exported.iter().any(|e| e == base),
            "{file} uses {name}, which the gateway does not export"
        );
    }
}

#[test]
fn prometheus_alert_rules_pass_promtool_and_their_unit_tests() {
    let out = run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo().join("deploy/prometheus/alerts.yml")));
    assert_success(&out, "promtool check rules");
    let out = run(Command::new("promtool")
        .args(["test", "rules"])
        .arg(repo().join("deploy/prometheus/alerts.test.yml")));
    assert_success(&out, "promtool test rules");
}

#[test]
fn alert_rules_and_dashboard_use_only_metrics_the_gateway_exports() {
    assert_exported(
        &metric_names(&read("deploy/prometheus/alerts.yml")),
        "alerts.yml",
    );
    assert_exported(
        &metric_names(&read("deploy/grafana/portcullis.json")),
        "portcullis.json",
    );
}

/// Every PromQL expression of the dashboard: panel targets and variables.
fn dashboard_queries() -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "definition", Value::String(q)) => out.push(q.clone()),
                        _ => walk(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/portcullis.json")).expect("dashboard JSON");
    let mut queries = Vec::new();
    walk(&dashboard, &mut queries);
    queries
}

#[test]
fn grafana_dashboard_queries_parse_as_promql() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{queries:?}");
    // promtool parses PromQL in rule files: each query becomes a recording
    // rule, with Grafana's variables given values.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in queries.iter().enumerate() {
        let query = match query.strip_prefix("label_values(") {
            // label_values(METRIC, LABEL) is Grafana's, not PromQL.
            Some(args) => args.split(',').next().expect("a metric").to_owned(),
            None => query
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*"),
        };
        let query = serde_json::to_string(&query).expect("a JSON string is YAML");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {query}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dashboard.rules.yml");
    std::fs::write(&path, rules).expect("write rules");
    let out = run(Command::new("promtool").args(["check", "rules"]).arg(&path));
    assert_success(&out, "promtool check rules on the dashboard's queries");
}
