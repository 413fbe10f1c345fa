//! `tern serve --nodes N`: one command runs N nodes over a `nats-server` it starts beside them,
//! each on its own port; a message published on the first node reaches a subscriber on the
//! last, and SIGTERM stops every process it started.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::time::Duration;

use support::cli::{self, Running};
use support::cluster::{receive_until, send, WAIT};
use support::mqtt::RawClient;
use tern_codec::{QoS, ReasonCode};

/// The MQTT port `node` logged that it listens on (its log lines come prefixed `node |`).
fn node_port(nodes: &mut Running, node: &str) -> u16 {
    let prefix = format!("{node} | ");
    let line = nodes
        .wait_stderr_line(
            |line| line.starts_with(&prefix) && line.contains("listening for MQTT on "),
            WAIT,
        )
        .unwrap_or_else(|| panic!("{node} logged no port:\n{}", nodes.errors.join("\n")));
    let address = line
        .split("listening for MQTT on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an address");
    address.rsplit(':').next().unwrap().parse().expect("a port")
}

/// Runs `tern bench` with `args` and returns its one JSON report.
fn bench(args: &[&str]) -> serde_json::Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["bench", "--host", "127.0.0.1", "--quiet"])
        .args(args)
        .output()
        .expect("tern bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tern bench failed: {stderr}");
    serde_json::from_slice(&output.stdout).expect("one JSON report")
}

fn connect(port: u16, id: &str) -> RawClient {
    let (client, connack) = RawClient::connect(port, id, true, 0).expect("connects");
    assert_eq!(connack.reason_code, ReasonCode::Success);
    client
}

#[test]
fn three_nodes_over_one_embedded_nats_server_act_as_one_broker() {
    let data = tempfile::tempdir().unwrap();
    let nats = support::nats::binary();
    let mut args = support::IN_MEMORY.to_vec();
    let (data_dir, nats) = (data.path().to_str().unwrap(), nats.to_str().unwrap());
    args.extend([
        "--nodes",
        "3",
        "--data-dir",
        data_dir,
        "--nats-server",
        nats,
    ]);
    let mut nodes = cli::tern(&args);
    let first = node_port(&mut nodes, "node-0");
    let last = node_port(&mut nodes, "node-2");
    assert_ne!(first, last);
    // The server's JetStream lives under the data directory, as the nodes' stores do.
    assert!(data.path().join("nats/jetstream").is_dir());

    let mut subscriber = connect(last, "on-the-last");
    subscriber.subscribe("sensors/#", QoS::AtLeastOnce).unwrap();
    let mut publisher = connect(first, "on-the-first");
    send(&mut publisher, "sensors/a.b/*", "crossed", QoS::AtLeastOnce);
    let seen = receive_until(&mut subscriber, |seen| !seen.is_empty());
    assert_eq!(
        seen,
        [(
            "sensors/a.b/*".to_owned(),
            "crossed".to_owned(),
            QoS::AtLeastOnce
        )]
    );
    drop((subscriber, publisher));

    // `tern bench` across nodes: publishers on the first, subscribers on the last.
    let report = bench(&[
        "pairs",
        "--qos",
        "1",
        "--pairs",
        "2",
        "--duration",
        "0.5",
        "--port",
        &first.to_string(),
        "--sub-port",
        &last.to_string(),
    ]);
    for field in ["lost", "duplicated", "out_of_order", "foreign"] {
        assert_eq!(report[field], 0, "{field}: {report}");
    }
    assert!(
        report["delivered_in_window"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(report["acknowledged"], report["sent"], "{report}");
    // And connections that each hold a QoS 1 subscription on one node.
    let report = bench(&[
        "connections",
        "--connections",
        "20",
        "--subscribe-qos",
        "1",
        "--port",
        &last.to_string(),
    ]);
    assert_eq!(report["connections"]["subscribed"], 20, "{report}");
    assert_eq!(report["connections"]["subscribe_failed"], 0, "{report}");

    // SIGTERM stops the nodes, then the server: nothing it started keeps listening.
    support::signal_process(nodes.pid(), "TERM");
    let (status, _, log) = nodes.finish(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{log}");
    for port in [first, last] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open:\n{log}"
        );
    }
    assert!(log.contains("nats-server | "), "{log}");
}

#[test]
fn nodes_refuse_a_file_that_has_its_own_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        "[cluster]\nnats = [\"nats://127.0.0.1:4222\"]\nnode_id = \"n1\"\n",
    )
    .unwrap();
    let (status, _, log) = cli::run(
        &[
            "serve",
            "--nodes",
            "2",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        b"",
    );
    assert!(!status.success());
    assert!(log.contains("--nodes runs its own NATS server"), "{log}");
}
