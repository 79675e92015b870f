//! The files in `deploy/` are checked, not just written: Prometheus config and alert rules pass
//! `promtool`, every Grafana query names only metrics the server exports, the compose stack and
//! the Kubernetes manifests parse and hold what the runbook promises, the Dockerfile's health
//! check is a real subcommand.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use meshwork_server::metrics::Metrics;
use yaml_rust2::YamlLoader;

fn deploy() -> PathBuf {
    meshwork_testkit::repo_root().join("deploy")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy().join(rel)).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    let promtool = "/usr/bin/promtool";
    assert!(
        std::path::Path::new(promtool).exists(),
        "`cargo xtask ci` installs Debian's prometheus"
    );
    for (what, file) in [
        ("config", "prometheus/prometheus.yml"),
        ("rules", "prometheus/alerts.yml"),
    ] {
        let out = Command::new(promtool)
            .args(["check", what])
            .arg(deploy().join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check {what} {file}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Metric names in PromQL text: `meshwork_` followed by `[a-z_]`, histogram suffixes removed.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("meshwork_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        out.insert(base.to_owned());
        rest = &tail[end..];
    }
    out
}

fn exported() -> BTreeSet<String> {
    Metrics::new()
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn grafana_and_alert_queries_name_only_exported_metrics() {
    let exported = exported();
    assert!(
        exported.contains("meshwork_commands_appended_total"),
        "{exported:?}"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("grafana/dashboards/meshwork.json")).unwrap();
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            used.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    used.extend(metric_names(&read("prometheus/alerts.yml")));
    assert!(
        used.len() >= 10,
        "the dashboard covers the command metrics: {used:?}"
    );
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "queries name metrics the server does not export: {unknown:?}"
    );
    for required in [
        "meshwork_commands_appended_total",
        "meshwork_conflicts_total",
        "meshwork_command_queue_depth",
        "meshwork_signature_verify_seconds",
        "meshwork_packets_sent_total",
        "meshwork_bytes_sent_total",
        "meshwork_command_apply_seconds",
    ] {
        assert!(used.contains(required), "the dashboard lacks {required}");
    }
}

#[test]
fn compose_stack_holds_the_services_and_its_files_exist() {
    let docs = YamlLoader::load_from_str(&read("compose.yaml")).unwrap();
    let services = &docs[0]["services"];
    for name in [
        "meshwork",
        "prometheus",
        "grafana",
        "coturn",
        "otel-collector",
    ] {
        assert!(
            !services[name].is_badvalue(),
            "compose.yaml has no {name} service"
        );
    }
    assert_eq!(
        services["meshwork"]["build"]["dockerfile"].as_str(),
        Some("deploy/Dockerfile")
    );
    // Every bind mount of a file from deploy/ points at a file that exists.
    for (_, svc) in services.as_hash().unwrap() {
        for v in svc["volumes"].as_vec().into_iter().flatten() {
            let spec = v.as_str().unwrap();
            if let Some(rel) = spec.strip_prefix("./") {
                let src = rel.split(':').next().unwrap();
                assert!(
                    deploy().join(src).exists(),
                    "compose mounts missing deploy/{src}"
                );
            }
        }
    }
    let grafana =
        YamlLoader::load_from_str(&read("grafana/provisioning/datasources/prometheus.yml"))
            .unwrap();
    assert_eq!(
        grafana[0]["datasources"][0]["uid"].as_str(),
        Some("prometheus")
    );
}

#[test]
fn kubernetes_manifests_parse_and_cover_the_runbook() {
    let docs = YamlLoader::load_from_str(&read("k8s/meshwork.yaml")).unwrap();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in [
        "ConfigMap",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ] {
        assert!(kinds.contains(k), "k8s/meshwork.yaml has no {k}");
    }
    let sts = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("StatefulSet"))
        .unwrap();
    assert!(
        !sts["spec"]["volumeClaimTemplates"].is_badvalue(),
        "data on a PVC"
    );
    let svc = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Service"))
        .unwrap();
    let protocols: BTreeSet<&str> = svc["spec"]["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|p| p["protocol"].as_str())
        .collect();
    assert_eq!(protocols, BTreeSet::from(["TCP", "UDP"]));
    let probe =
        &sts["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]["command"];
    assert_eq!(probe[1].as_str(), Some("healthcheck"));
}

#[test]
fn dockerfile_and_systemd_unit_use_real_commands_and_hardening() {
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("FROM scratch AS runtime"));
    assert!(dockerfile.contains("USER 10001:10001"), "non-root");
    assert!(dockerfile.contains(r#"CMD ["/meshwork-server", "healthcheck"]"#));
    assert!(dockerfile.contains("EXPOSE 8080/tcp 4433/udp"));
    let unit = read("systemd/meshwork-server.service");
    for directive in [
        "DynamicUser=yes",
        "StateDirectory=meshwork",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(directive), "the unit lacks {directive}");
    }
    // The subcommands these files run exist in the binary.
    let bin = env!("CARGO_BIN_EXE_meshwork-server");
    let help = Command::new(bin).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for sub in [
        "serve",
        "healthcheck",
        "verify-log",
        "backup",
        "restore",
        "invite",
    ] {
        assert!(help.contains(sub), "meshwork-server has no `{sub}`");
    }
}
