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

/// Applies a scrape job's `relabel_configs` (keep, drop and replace, with
/// Prometheus's anchored regexes) to the targets Kubernetes pod discovery
/// makes of one pod: one per container port. Prints the kept targets'
/// labels without the discovery's `__meta_` ones, duplicates merged as
/// Prometheus merges them.
const RELABEL: &str = r#"import json, re, sys, yaml
job = yaml.safe_load(open(sys.argv[1]))["scrape_configs"][0]
pod = json.loads(sys.argv[2])
def meta(name): return re.sub(r"[^a-zA-Z0-9_]", "_", name)
kept = []
for port in pod["ports"]:
    labels = {"job": job["job_name"], "__metrics_path__": "/metrics",
              "__address__": "10.0.0.7:%d" % port["containerPort"],
              "__meta_kubernetes_namespace": "default",
              "__meta_kubernetes_pod_name": "portcullis-abc",
              "__meta_kubernetes_pod_container_port_name": port["name"]}
    for k, v in pod["annotations"].items():
        labels["__meta_kubernetes_pod_annotation_" + meta(k)] = v
    for k, v in pod["labels"].items():
        labels["__meta_kubernetes_pod_label_" + meta(k)] = v
    for rule in job.get("relabel_configs", []):
        value = rule.get("separator", ";").join(labels.get(l, "") for l in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep" and not match: labels = None; break
        if action == "drop" and match: labels = None; break
        if action == "replace" and match:
            replacement = re.sub(r"\$(\d+)", r"\\g<\1>", rule.get("replacement", "$1"))
            labels[rule["target_label"]] = match.expand(replacement)
    if labels is not None:
        labels = {k: v for k, v in labels.items() if not k.startswith("__meta_")}
        if labels not in kept: kept.append(labels)
json.dump(kept, sys.stdout)"#;

/// The Kubernetes scrape job finds the Deployment's pods by their
/// annotations and scrapes the admin listener's /metrics under the job name
/// the alerts select, so `PortcullisDown` fires when a pod stops answering.
#[test]
fn kubernetes_scrape_job_yields_the_targets_the_down_alert_selects() {
    let docs = yaml_documents(&repo().join("deploy/kubernetes/deployment.yaml"));
    let pod = &docs[0]["spec"]["template"];
    let ports = &pod["spec"]["containers"][0]["ports"];
    let input = serde_json::json!({
        "ports": ports,
        "annotations": pod["metadata"]["annotations"],
        "labels": pod["metadata"]["labels"],
    });
    let config = repo().join("deploy/prometheus/kubernetes.yml");
    let out = run(Command::new(tool("python3"))
        .args(["-c", RELABEL])
        .arg(&config)
        .arg(input.to_string()));
    assert_success(&out, "relabelling with PyYAML (target/venv)");
    let targets: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let admin = ports
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "admin"))
        .expect("an admin port");
    assert_eq!(targets.as_array().map(Vec::len), Some(1), "{targets}");
    let target = &targets[0];
    assert_eq!(
        target["__address__"],
        format!("10.0.0.7:{}", admin["containerPort"])
    );
    assert_eq!(target["__metrics_path__"], "/metrics");
    assert_eq!(target["instance"], "portcullis-abc");
    // The job name is the one PortcullisDown and PortcullisAbsent select,
    // and the compose file's static job's.
    let selector = format!("up{{job=\"{}\"}}", target["job"].as_str().expect("job"));
    let alerts = read("deploy/prometheus/alerts.yml");
    assert_eq!(
        alerts.matches(&selector).count(),
        2,
        "{selector} in alerts.yml"
    );
    let compose = yaml_documents(&repo().join("deploy/compose/prometheus.yml"));
    assert_eq!(compose[0]["scrape_configs"][0]["job_name"], target["job"]);
    // A pod of another app, even annotated, is not the gateway's target.
    let mut other = input.clone();
    other["labels"]["app.kubernetes.io/name"] = "something-else".into();
    let out = run(Command::new(tool("python3"))
        .args(["-c", RELABEL])
        .arg(&config)
        .arg(other.to_string()));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]");
}

/// Debian's promtool is built without Kubernetes discovery, so the job is
/// checked with a static target list in its place: everything else
/// (relabel regexes, rule files) is promtool's own check.
#[test]
fn kubernetes_scrape_configuration_passes_promtool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = replaced(
        &read("deploy/prometheus/kubernetes.yml"),
        &[(
            "kubernetes_sd_configs:\n      - role: pod",
            "static_configs:\n      - targets: [\"10.0.0.7:9090\"]",
        )],
    );
    std::fs::write(dir.path().join("kubernetes.yml"), text).expect("write");
    std::fs::copy(
        repo().join("deploy/prometheus/alerts.yml"),
        dir.path().join("alerts.yml"),
    )
    .expect("copy rules");
    let out = run(Command::new("promtool")
        .args(["check", "config", "kubernetes.yml"])
        .current_dir(dir.path()));
    assert_success(&out, "promtool check config");
}
