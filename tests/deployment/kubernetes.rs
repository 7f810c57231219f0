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
        "networkpolicy",
        "poddisruptionbudget",
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

/// The Secret as deployment.yaml's header creates it: its name and the
/// keys of its `--from-file=KEY=PATH` arguments.
fn documented_secret() -> (String, Vec<String>) {
    let text = read(&format!("{KUBERNETES}/deployment.yaml"));
    let command: Vec<&str> = text
        .lines()
        .map(|line| line.trim_start_matches('#').trim())
        .skip_while(|line| !line.starts_with("kubectl create secret generic "))
        .scan(true, |more, line| {
            let this = (*more).then_some(line);
            *more = line.ends_with('\\');
            this
        })
        .collect();
    let words: Vec<&str> = command.iter().flat_map(|l| l.split_whitespace()).collect();
    assert!(
        words.len() > 4,
        "deployment.yaml documents `kubectl create secret generic`"
    );
    let keys = words
        .iter()
        .filter_map(|word| word.strip_prefix("--from-file="))
        .map(|arg| {
            arg.split_once('=')
                .expect("--from-file=KEY=PATH")
                .0
                .to_owned()
        })
        .collect();
    (words[4].to_owned(), keys)
}

#[test]
fn config_map_checks_with_the_documented_secret() {
    // As shipped, without the Secret: everything but the secret files.
    let out = check_with(&config_map_toml(), &["--skip-files"]);
    assert_success(
        &out,
        "portcullis check --skip-files on the ConfigMap as shipped",
    );
    let dir = secrets();
    let mount = dir.path().to_str().expect("utf-8");
    // Checked as shipped: `check` does not resolve the cluster's names.
    let text = replaced(&config_map_toml(), &[(SECRET_MOUNT, mount)]);
    let out = check(&text);
    assert_success(&out, "portcullis check on the ConfigMap's configuration");
    // Every file the configuration reads is a key of the Secret the
    // documented command creates, and the README shows the same command.
    let (name, keys) = documented_secret();
    for file in ["signing-key.pem", "admin-token"] {
        assert!(config_map_toml().contains(&format!("{SECRET_MOUNT}/{file}")));
        assert!(
            keys.iter().any(|k| k == file),
            "the Secret has {file}: {keys:?}"
        );
    }
    assert!(read("README.md").contains(&format!("kubectl create secret generic {name} ")));
}

/// Keys never go into a tracked manifest: no file under deploy/ is a
/// Secret, so nobody fills one in and commits it.
#[test]
fn no_tracked_manifest_holds_a_secret() {
    let mut folders = vec![repo().join("deploy")];
    let mut yaml = 0;
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("deploy/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                yaml += 1;
                let text = std::fs::read_to_string(&path).expect("read");
                let secret = text.lines().any(|l| l.trim() == "kind: Secret");
                assert!(!secret, "{} is a Secret", path.display());
            }
        }
    }
    assert!(yaml >= 5, "the deploy/ YAML files were found");
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
    let (secret_name, _) = documented_secret();
    assert_eq!(
        named(volumes, "secrets")["secret"]["secretName"],
        secret_name.as_str()
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

/// The admin port admits only the pods named in the policy; the proxy port
/// is open. A rule without `ports` would open every port, and a peer
/// without a pod selector whole namespaces or the world.
#[test]
fn network_policy_admits_the_admin_port_only_from_where_it_is_scraped_and_administered() {
    let deployment = manifest("Deployment");
    let policy = manifest("NetworkPolicy");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selector = policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert!(!selector.is_empty());
    assert!(selector.iter().all(|(k, v)| &pod_labels[k] == v));
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    let container_ports: Vec<&Value> = container(&deployment)["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|port| &port["name"])
        .collect();
    let rules = policy["spec"]["ingress"].as_array().expect("ingress");
    let mut admin_rules = 0;
    for rule in rules {
        let ports = rule["ports"]
            .as_array()
            .expect("every rule names its ports");
        for port in ports {
            assert!(container_ports.contains(&&port["port"]), "{port}");
        }
        if ports.iter().any(|port| port["port"] == "admin") {
            admin_rules += 1;
            let peers = rule["from"]
                .as_array()
                .expect("the admin port names its peers");
            assert!(!peers.is_empty());
            for peer in peers {
                let pods = peer["podSelector"]["matchLabels"].as_object();
                assert!(pods.is_some_and(|p| !p.is_empty()), "{peer}");
                assert!(peer.get("ipBlock").is_none(), "{peer}");
            }
        } else {
            assert!(ports.iter().all(|port| port["port"] == "http"), "{rule}");
        }
    }
    assert_eq!(admin_rules, 1);
    // Prometheus is one of the admitted peers: the pods carry the scrape
    // annotation for the admin port.
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    let admin_port = named(&container(&deployment)["ports"], "admin")["containerPort"].to_string();
    assert_eq!(annotations["prometheus.io/port"], admin_port.as_str());
    assert!(rules
        .iter()
        .any(|rule| rule["from"]
            .as_array()
            .is_some_and(
                |peers| peers.iter().any(|peer| peer["podSelector"]["matchLabels"]
                    ["app.kubernetes.io/name"]
                    == "prometheus")
            )));
}

/// Two replicas on one node are one failure: the scheduler must put them
/// on different nodes.
#[test]
fn replicas_spread_over_nodes() {
    let deployment = manifest("Deployment");
    assert!(deployment["spec"]["replicas"].as_u64().expect("replicas") >= 2);
    let pod = &deployment["spec"]["template"];
    let constraints = pod["spec"]["topologySpreadConstraints"]
        .as_array()
        .expect("topologySpreadConstraints");
    let by_node = constraints
        .iter()
        .find(|c| c["topologyKey"] == "kubernetes.io/hostname")
        .expect("a spread over nodes");
    assert_eq!(by_node["whenUnsatisfiable"], "DoNotSchedule");
    assert_eq!(by_node["maxSkew"], 1);
    let selector = by_node["labelSelector"]["matchLabels"]
        .as_object()
        .expect("labelSelector");
    assert!(!selector.is_empty());
    assert!(selector
        .iter()
        .all(|(k, v)| &pod["metadata"]["labels"][k] == v));
}

fn port_of(addr: &toml::Value) -> u64 {
    let addr: SocketAddr = addr
        .as_str()
        .expect("an address")
        .parse()
        .expect("host:port");
    u64::from(addr.port())
}
