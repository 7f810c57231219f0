//! deploy/kubernetes: the manifests against the Kubernetes schemas, their
//! configuration through `check`, and their parts against each other.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::*;

const KUBERNETES: &str = "deploy/kubernetes";
/// Where the Deployment mounts the Secret; the ConfigMap's paths point here.
const SECRET_MOUNT: &str = "/run/secrets/portcullis";

fn kubernetes_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(KUBERNETES))
        .expect("deploy/kubernetes")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The one manifest of `kind` under deploy/kubernetes.
fn manifest(kind: &str) -> Value {
    let mut found: Vec<Value> = kubernetes_files()
        .iter()
        .flat_map(|path| yaml_documents(path))
        .filter(|doc| doc["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} in {KUBERNETES}");
    found.remove(0)
}

fn config_map_toml() -> String {
    manifest("ConfigMap")["data"]["portcullis.toml"]
        .as_str()
        .expect("the ConfigMap holds portcullis.toml")
        .to_owned()
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|items| items.iter().find(|item| item["name"] == name))
        .unwrap_or_else(|| panic!("no entry named {name}"))
}

#[test]
fn manifests_match_the_kubernetes_schemas() {
    let files = kubernetes_files();
    for name in [
        "configmap",
        "deployment",
        "poddisruptionbudget",
        "secret",
        "service",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(format!("{name}.yaml"))),
            "{KUBERNETES}/{name}.yaml"
        );
    }
    // --strict refuses unknown fields, the usual way a manifest is wrong.
    let out = run(Command::new(tool("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", "1.37.0"])
        .args(&files));
    assert_success(&out, "kubernetes-validate --strict");
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        report.matches(" passed for resource ").count(),
        files.len(),
        "every manifest was validated: {report}"
    );
}

#[test]
fn config_map_checks_once_the_secret_is_filled_in() {
    let dir = secrets();
    let mount = dir.path().to_str().expect("utf-8");
    // Checked as shipped: `check` does not resolve the cluster's names.
    let text = replaced(&config_map_toml(), &[(SECRET_MOUNT, mount)]);
    let out = check(&text);
    assert_success(&out, "portcullis check on the ConfigMap's configuration");
    // Every file the configuration reads is a key of the shipped Secret.
    let secret = manifest("Secret");
    let keys = secret["stringData"].as_object().expect("stringData");
    for file in ["signing-key.pem", "admin-token"] {
        assert!(config_map_toml().contains(&format!("{SECRET_MOUNT}/{file}")));
        assert!(keys.contains_key(file), "the Secret has {file}");
    }
}

#[test]
fn secret_placeholders_refuse_to_start() {
    // Applied as shipped, the Secret's empty values must stop the gateway
    // rather than run it with an empty admin token or no key.
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = manifest("Secret");
    for (name, value) in secret["stringData"].as_object().expect("stringData") {
        std::fs::write(dir.path().join(name), value.as_str().expect("a string")).expect("write");
    }
    let mount = dir.path().to_str().expect("utf-8");
    let text = replaced(&config_map_toml(), &[(SECRET_MOUNT, mount)]);
    let out = check(&text);
    assert_eq!(out.status.code(), Some(2), "check refuses the placeholders");
    // One error on each line that names a placeholder file.
    let errors = String::from_utf8_lossy(&out.stderr);
    for key in ["admin_token_file", "private_key_file"] {
        let line = 1 + text
            .lines()
            .position(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} in the ConfigMap"));
        assert!(
            errors.contains(&format!("portcullis.toml:{line}:")),
            "{key}: {errors}"
        );
    }
}

#[test]
fn termination_grace_covers_pre_stop_and_the_gateways_drain() {
    let deployment = manifest("Deployment");
    let config: toml::Table = config_map_toml().parse().expect("TOML");
    let server = &config["server"];
    let pre_stop = &container(&deployment)["lifecycle"]["preStop"]["exec"]["command"];
    assert_eq!(
        pre_stop[0], "/bin/sleep",
        "preStop sleeps while endpoints update"
    );
    let pre_stop: f64 = pre_stop[1]
        .as_str()
        .expect("seconds")
        .parse()
        .expect("a number");
    // After SIGTERM the gateway accepts for shutdown_grace, then gives
    // requests in flight shutdown_timeout; the kubelet kills at the end of
    // the grace period, counted from the start of preStop.
    let needed =
        pre_stop + seconds(&server["shutdown_grace"]) + seconds(&server["shutdown_timeout"]);
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_f64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > needed,
        "terminationGracePeriodSeconds {grace} <= {needed}"
    );
    assert!(pre_stop > 0.0);
}

#[test]
fn probes_and_ports_reach_the_listeners_the_configuration_opens() {
    let deployment = manifest("Deployment");
    let config: toml::Table = config_map_toml().parse().expect("TOML");
    let server = &config["server"];
    let container = container(&deployment);
    let ports = &container["ports"];
    let admin = server["admin_listen"].as_str().expect("admin_listen");
    assert!(
        admin.starts_with("0.0.0.0:"),
        "the kubelet probes the pod's address"
    );
    assert_eq!(
        named(ports, "admin")["containerPort"],
        port_of(&server["admin_listen"])
    );
    assert_eq!(
        named(ports, "http")["containerPort"],
        port_of(&server["listen"][0])
    );
    let readiness = &container["readinessProbe"]["httpGet"];
    assert_eq!(readiness["path"], "/readyz");
    assert_eq!(readiness["port"], "admin");
    let liveness = &container["livenessProbe"]["httpGet"];
    assert_eq!(liveness["path"], "/healthz");
    assert_eq!(liveness["port"], "admin");
    // The Service carries the proxy port only.
    let service = manifest("Service");
    let service_ports = service["spec"]["ports"].as_array().expect("ports");
    assert_eq!(service_ports.len(), 1);
    assert_eq!(service_ports[0]["targetPort"], "http");
}

#[test]
fn manifests_wire_the_shipped_config_map_secret_and_pods() {
    let deployment = manifest("Deployment");
    let pod = &deployment["spec"]["template"];
    let labels = pod["metadata"]["labels"].as_object().expect("pod labels");
    let selects_pods = |selector: &Value| {
        let selector = selector.as_object().expect("a selector");
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    assert!(selects_pods(&deployment["spec"]["selector"]["matchLabels"]));
    assert!(selects_pods(&manifest("Service")["spec"]["selector"]));
    assert!(selects_pods(
        &manifest("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    ));

    let volumes = &pod["spec"]["volumes"];
    let mounts = &container(&deployment)["volumeMounts"];
    let config_name = &manifest("ConfigMap")["metadata"]["name"];
    assert_eq!(&named(volumes, "config")["configMap"]["name"], config_name);
    let secret_name = &manifest("Secret")["metadata"]["name"];
    assert_eq!(
        &named(volumes, "secrets")["secret"]["secretName"],
        secret_name
    );
    assert_eq!(named(mounts, "secrets")["mountPath"], SECRET_MOUNT);
    // The container reads the ConfigMap's file where it is mounted.
    let args = &container(&deployment)["args"];
    let config_dir = named(mounts, "config")["mountPath"]
        .as_str()
        .expect("mountPath");
    assert_eq!(args[2], format!("{config_dir}/portcullis.toml"));
}

#[test]
fn pods_run_unprivileged_on_a_read_only_root() {
    let deployment = manifest("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = container(&deployment);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    // The image's user (Dockerfile), so files it owns stay readable.
    let uid = pod["securityContext"]["runAsUser"]
        .as_u64()
        .expect("runAsUser");
    assert!(read("Dockerfile").contains(&format!("--uid {uid} ")));
    assert_eq!(pod["automountServiceAccountToken"], false);
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
}

fn port_of(addr: &toml::Value) -> u64 {
    let addr: SocketAddr = addr
        .as_str()
        .expect("an address")
        .parse()
        .expect("host:port");
    u64::from(addr.port())
}
