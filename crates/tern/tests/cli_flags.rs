//! `tern sub` and `tern pub` with mosquitto_sub's and mosquitto_pub's flags, against `tern
//! serve`: output formats (compared with mosquitto_sub's own output), -C, -R, -N, -T, -U, -E,
//! --retained-only, --remove-retained, -e and -D properties, -L URLs, wills, -r, -n, -l, -s,
//! -f, -x, --unix; and what is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::time::Duration;

use support::cli::{self, Running};
use support::Tern;

const WAIT: Duration = Duration::from_secs(20);

/// A broker of its own for a test, and its port as an argument.
fn broker() -> (Tern, String) {
    let broker = Tern::start();
    let port = broker.port.to_string();
    (broker, port)
}

fn base(port: &str) -> Vec<&str> {
    vec!["-h", "127.0.0.1", "-p", port]
}

/// Starts `tern sub` with `args` (and -d) and waits until it has subscribed.
fn subscriber(port: &str, args: &[&str]) -> Running {
    let mut all = vec!["sub"];
    all.extend(base(port));
    all.extend(args);
    all.push("-d");
    let mut sub = cli::tern(&all);
    assert!(sub.wait_stderr("subscribed", WAIT), "{:?}", sub.errors);
    sub
}

/// Runs `tern pub` with `args` (and `input` on stdin); it must succeed.
fn publish(port: &str, args: &[&str], input: &[u8]) {
    let mut all = vec!["pub"];
    all.extend(base(port));
    all.extend(args);
    let (status, _, err) = cli::run(&all, input);
    assert!(status.success(), "tern pub {args:?}: {err}");
}

/// Lets `sub` finish (it must stop by itself) and returns its output.
fn output(sub: Running) -> String {
    let (status, out, err) = sub.finish(WAIT);
    assert!(status.success(), "{status:?}: {err}");
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn output_formats_match_mosquitto_sub() {
    let (_broker, port) = broker();
    // %E (the remaining message expiry) is left out: each delivery counts it down on its own.
    let format = "%t|%p|%q|%r|%l|%x|%X|%10t|%-10t|%.3t|%5.2t|%05l|%-5l|%C|%F|%R|%D|%P|%%|\\t|@@";
    let tern = subscriber(&port, &["-t", "fmt/#", "-V", "5", "-C", "3", "-F", format]);
    // stdbuf: mosquitto_sub's standard output is a pipe here, and its lines are read as they come.
    let mut mosquitto = cli::spawn(std::process::Command::new("stdbuf").args([
        "-oL",
        "mosquitto_sub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        "mqttv5",
        "-t",
        "fmt/#",
        "-C",
        "3",
        "-F",
        format,
        "-d",
    ]));
    // mosquitto_sub -d writes its debug lines to standard output.
    loop {
        let line = mosquitto.line(WAIT).expect("mosquitto_sub subscribes");
        if line.starts_with("Subscribed") {
            break;
        }
    }
    let props = [
        "-D",
        "publish",
        "content-type",
        "text/x",
        "-D",
        "publish",
        "message-expiry-interval",
        "600",
        "-D",
        "publish",
        "response-topic",
        "r/t",
        "-D",
        "publish",
        "correlation-data",
        "cd",
        "-D",
        "publish",
        "user-property",
        "k",
        "v",
        "-D",
        "publish",
        "user-property",
        "k2",
        "v2",
        "-D",
        "publish",
        "payload-format-indicator",
        "1",
    ];
    let mut args = vec!["-t", "fmt/a", "-m", "hello", "-q", "1"];
    args.extend(props);
    publish(&port, &args, b"");
    publish(&port, &["-t", "fmt/bee", "-m", "Zz", "-q", "2"], b"");
    publish(&port, &["-t", "fmt/c", "-n"], b"");
    let ours = output(tern);
    let (status, theirs, _) = mosquitto.finish(WAIT);
    assert!(status.success());
    let theirs: String = String::from_utf8_lossy(&theirs)
        .lines()
        .filter(|l| l.starts_with("fmt/"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(ours, theirs);
    assert_eq!(
        ours.lines().next(),
        Some(
            "fmt/a|hello|0|0|5|68656c6c6f|68656C6C6F|     fmt/a|fmt/a     |fmt|   fm|00005|5    \
             |text/x|1|r/t|cd|k:v k2:v2|%|\t|@"
        )
    );
}

#[test]
fn json_formats_carry_the_same_fields_as_mosquitto_sub() {
    let (_broker, port) = broker();
    for format in ["%j", "%J"] {
        let tern = subscriber(&port, &["-t", "json/#", "-C", "1", "-F", format]);
        publish(
            &port,
            &[
                "-t",
                "json/a",
                "-m",
                "{\"a\": [1, 2]}",
                "-D",
                "publish",
                "user-property",
                "k",
                "v",
            ],
            b"",
        );
        let line = output(tern);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["topic"], "json/a");
        assert_eq!(value["payloadlen"], 13);
        assert_eq!(value["properties"]["user-properties"]["k"], "v");
        assert!(value["tst"].as_str().unwrap().contains('T'));
        if format == "%J" {
            assert_eq!(value["payload"]["a"][1], 2, "{line}");
        } else {
            assert_eq!(value["payload"], "{\"a\": [1, 2]}", "{line}");
        }
    }
}

#[test]
fn count_no_retained_filter_out_no_newline_and_verbose() {
    let (_broker, port) = broker();
    publish(&port, &["-t", "sel/old", "-m", "stale", "-r"], b"");
    // -R leaves the retained message out, -T the filtered topic; -C counts what is printed
    // (all of it, with --random-filter 100).
    let sub = subscriber(
        &port,
        &[
            "-t",
            "sel/#",
            "-R",
            "-T",
            "sel/skip/#",
            "-C",
            "2",
            "-v",
            "-N",
            "--random-filter",
            "100",
        ],
    );
    publish(&port, &["-t", "sel/skip/x", "-m", "no"], b"");
    publish(&port, &["-t", "sel/a", "-m", "ab"], b"");
    publish(&port, &["-t", "sel/b", "-m", "cd"], b"");
    assert_eq!(output(sub), "sel/a absel/b cd");
    // --retained-only prints the retained message and stops at the first live one.
    let sub = subscriber(&port, &["-t", "sel/#", "--retained-only"]);
    publish(&port, &["-t", "sel/a", "-m", "live"], b"");
    assert_eq!(output(sub), "stale\n");
}

#[test]
fn retain_null_message_and_remove_retained() {
    let (_broker, port) = broker();
    publish(&port, &["-t", "ret/a", "-m", "keep", "-r"], b"");
    publish(&port, &["-t", "ret/b", "-m", "also", "-r", "-q", "1"], b"");
    let sub = subscriber(&port, &["-t", "ret/a", "-C", "1", "-F", "%r:%p"]);
    assert_eq!(output(sub), "1:keep\n");
    // -n -r clears the retained message: a new subscriber's first message is a live one.
    publish(&port, &["-t", "ret/a", "-n", "-r"], b"");
    let sub = subscriber(&port, &["-t", "ret/a", "-C", "1"]);
    publish(&port, &["-t", "ret/a", "-m", "fresh"], b"");
    assert_eq!(output(sub), "fresh\n");
    // --remove-retained clears what it receives; --retained-only stops at the live message.
    let sub = subscriber(
        &port,
        &["-t", "ret/#", "--remove-retained", "--retained-only"],
    );
    publish(&port, &["-t", "ret/live", "-m", "x"], b"");
    assert_eq!(output(sub), "also\n");
    let sub = subscriber(&port, &["-t", "ret/#", "-C", "1"]);
    publish(
        &port,
        &["-t", "ret/live", "-m", "nothing retained before me"],
        b"",
    );
    assert_eq!(output(sub), "nothing retained before me\n");
}

#[test]
fn payload_from_lines_stdin_and_file() {
    let (_broker, port) = broker();
    let sub = subscriber(
        &port,
        &["-t", "in/#", "-C", "6", "-F", "[%t %p]", "-q", "1"],
    );
    // -l: one message per line, the empty one included, the last without its newline too.
    publish(
        &port,
        &["-t", "in/l", "-l", "-q", "1", "-M", "1"],
        b"a\n\nb\nc",
    );
    publish(&port, &["-t", "in/s", "-s"], b"whole\ninput");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload");
    std::fs::write(&file, b"from a file").unwrap();
    publish(&port, &["-t", "in/f", "-f", file.to_str().unwrap()], b"");
    assert_eq!(
        output(sub),
        "[in/l a]\n[in/l ]\n[in/l b]\n[in/l c]\n[in/s whole\ninput]\n[in/f from a file]\n"
    );
}

#[test]
fn persistent_sessions_unsubscribe_and_exit_after_subscribe() {
    let (_broker, port) = broker();
    let session = ["-c", "-i", "cli-flags-session", "-q", "1"];
    let run = |extra: &[&str]| {
        let mut args = vec!["sub"];
        args.extend(base(&port));
        args.extend(session);
        args.extend(extra);
        args.push("-d");
        cli::tern(&args).finish(WAIT)
    };
    // -E: subscribe to two topics and leave; the session keeps them.
    let (status, _, err) = run(&["-t", "ses/1", "-t", "ses/2", "-E"]);
    assert!(
        status.success() && err.contains("session_present: false"),
        "{err}"
    );
    // -U drops ses/1 from the session (after subscribing to ses/3).
    let (status, _, err) = run(&["-t", "ses/3", "-U", "ses/1", "-E"]);
    assert!(
        status.success() && err.contains("session_present: true"),
        "{err}"
    );
    for topic in ["ses/1", "ses/2", "ses/3"] {
        publish(&port, &["-t", topic, "-m", topic, "-q", "1"], b"");
    }
    // Queued while nobody ran: ses/2 and ses/3, not the unsubscribed ses/1.
    let (status, out, err) = run(&["-t", "ses/3", "-C", "2"]);
    assert!(status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out), "ses/2\nses/3\n");
    // -x 0 with -c: the session ends with the connection.
    let (status, _, err) = run(&["-t", "ses/3", "-x", "0", "-E"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = run(&["-t", "ses/3", "-E"]);
    assert!(
        status.success() && err.contains("session_present: false"),
        "{err}"
    );
}

#[test]
fn response_topic_and_properties_reach_the_subscriber() {
    let (_broker, port) = broker();
    let sub = subscriber(
        &port,
        &[
            "-t",
            "prop/#",
            "-C",
            "1",
            "-F",
            "%R|%D|%P|%C|%F|%S|%E",
            "-D",
            "subscribe",
            "subscription-identifier",
            "9",
            "-D",
            "subscribe",
            "user-property",
            "a",
            "b",
        ],
    );
    publish(
        &port,
        &[
            "-t",
            "prop/x",
            "-m",
            "m",
            "-e",
            "reply/here",
            "--correlation-data",
            "c-1",
            "-D",
            "publish",
            "user-property",
            "site",
            "north",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
            "--message-expiry",
            "600",
        ],
        b"",
    );
    // The broker counts the expiry down by the whole seconds the message waited.
    let printed = output(sub);
    let expected = "reply/here|c-1|site:north|text/plain|1|9|";
    assert!(
        [format!("{expected}600\n"), format!("{expected}599\n")].contains(&printed),
        "{printed}"
    );
}

#[test]
fn urls_give_credentials_host_port_and_topic() {
    let broker_dir = tempfile::tempdir().unwrap();
    let passwd = broker_dir.path().join("passwd");
    let (status, _, err) = cli::run(&["passwd", passwd.to_str().unwrap(), "alice"], b"s3cret\n");
    assert!(status.success(), "{err}");
    let broker = Tern::start_with_config(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[auth.default]\npassword_file = \"{}\"\n",
        passwd.display()
    ));
    let url = |password: &str| {
        format!(
            "mqtt://alice:{password}@127.0.0.1:{}/url/topic",
            broker.port
        )
    };
    let good = url("s3cret");
    let mut sub = cli::tern(&["sub", "-L", &good, "-C", "1", "-d"]);
    assert!(sub.wait_stderr("subscribed", WAIT), "{:?}", sub.errors);
    let (status, _, err) = cli::run(&["pub", "-L", &good, "-m", "via url"], b"");
    assert!(status.success(), "{err}");
    assert_eq!(output(sub), "via url\n");
    // A wrong password: the exit status is the CONNACK's code, as with mosquitto_pub.
    let bad = url("wrong");
    let (status, _, err) = cli::run(&["pub", "-L", &bad, "-m", "x"], b"");
    assert_eq!(status.code(), Some(0x86), "{err}");
    let (status, _, err) = cli::run(&["pub", "-L", &bad, "-m", "x", "-V", "311"], b"");
    assert_eq!(status.code(), Some(4), "{err}");
    // --quiet keeps the status and prints nothing.
    let (status, _, err) = cli::run(&["pub", "-L", &bad, "-m", "x", "--quiet"], b"");
    assert_eq!((status.code(), err.as_str()), (Some(0x86), ""));
}

#[test]
fn id_prefix_is_followed_by_the_process_id() {
    let (broker, port) = broker();
    let mut args = vec!["pub"];
    args.extend(base(&port));
    args.extend(["-I", "cli-prefix-", "-t", "x", "-m", "y"]);
    let publisher = cli::tern(&args);
    let connected = format!("client \"cli-prefix-{}\" connected", publisher.pid());
    let (status, _, err) = publisher.finish(WAIT);
    assert!(status.success(), "{err}");
    assert!(broker.wait_for_log(&connected, WAIT), "{connected}");
}

#[test]
fn will_is_published_when_the_client_is_killed() {
    let (_broker, port) = broker();
    let watcher = subscriber(
        &port,
        &["-t", "will/#", "-q", "1", "-C", "1", "-F", "%t %p %q"],
    );
    let doomed = subscriber(
        &port,
        &[
            "-t",
            "nothing",
            "--will-topic",
            "will/gone",
            "--will-payload",
            "bye",
            "--will-qos",
            "1",
            "--will-retain",
        ],
    );
    doomed.kill();
    assert_eq!(output(watcher), "will/gone bye 1\n");
    // --will-retain: it stays for later subscribers.
    let later = subscriber(&port, &["-t", "will/#", "-C", "1", "-F", "%r %p"]);
    assert_eq!(output(later), "1 bye\n");
}

#[test]
fn timeout_exits_27_and_unknown_or_unsupported_flags_are_refused() {
    let (_broker, port) = broker();
    let (status, _, err) = cli::run(&["sub", "-p", &port, "-t", "idle", "-W", "1"], b"");
    assert_eq!(status.code(), Some(27), "{err}");
    assert!(err.contains("timed out"), "{err}");
    // -h is the host; help and the version are long options only.
    let (status, out, _) = cli::run(&["sub", "--version"], b"");
    assert!(status.success() && String::from_utf8_lossy(&out).starts_with("tern-sub "));
    let (status, out, _) = cli::run(&["pub", "--help"], b"");
    let help = String::from_utf8_lossy(&out);
    assert!(status.success() && help.contains("-h, --host") && help.contains("--will-topic"));
    for (args, why) in [
        (vec!["sub", "--bogus", "-t", "x"], "unexpected argument"),
        (vec!["sub", "-S", "-t", "x"], "unexpected argument"),
        (
            vec!["pub", "-t", "x", "-m", "y", "--ciphers", "HIGH"],
            "not supported",
        ),
        (
            vec![
                "pub",
                "-t",
                "x",
                "-m",
                "y",
                "--psk",
                "00",
                "--psk-identity",
                "me",
            ],
            "TLS-PSK",
        ),
        (
            vec!["pub", "-t", "x", "-m", "y", "-V", "31"],
            "3.1 is not supported",
        ),
        (vec!["sub", "-t", "x", "-c"], "needs a client id"),
        (vec!["pub", "-t", "x"], "message"),
        (
            vec!["pub", "-t", "x", "-m", "y", "-n"],
            "cannot be used with",
        ),
        (
            vec!["sub", "-t", "x", "-F", "%z"],
            "Invalid format specifier",
        ),
        (
            vec!["sub", "-t", "x", "--random-filter", "0"],
            "--random-filter",
        ),
        (
            vec!["sub", "-t", "x", "-L", "mqtt://host"],
            "names no topic",
        ),
        (
            vec!["sub", "-t", "x", "-R", "--retained-only"],
            "cannot be used with",
        ),
        (
            vec![
                "pub",
                "-t",
                "x",
                "-m",
                "y",
                "-D",
                "puback",
                "user-property",
                "a",
                "b",
            ],
            "puback",
        ),
    ] {
        let (status, _, err) = cli::run(&args, b"");
        assert!(!status.success(), "{args:?} was accepted");
        assert!(err.contains(why), "{args:?}: {err}");
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_and_bind_address() {
    let (_broker, port) = broker();
    // Tern serves TCP only; a relay puts a Unix socket in front of it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let upstream: u16 = port.parse().unwrap();
    tokio::spawn(async move {
        while let Ok((mut unix, _)) = listener.accept().await {
            let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                .await
                .unwrap();
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
            });
        }
    });
    let sub = tokio::task::spawn_blocking({
        let port = port.clone();
        move || subscriber(&port, &["-t", "unix/#", "-C", "2", "-v"])
    })
    .await
    .unwrap();
    let socket = path.to_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        let (status, _, err) = cli::run(
            &["pub", "--unix", &socket, "-t", "unix/a", "-m", "over unix"],
            b"",
        );
        assert!(status.success(), "{err}");
        publish(
            &port,
            &["-A", "127.0.0.1", "-t", "unix/b", "-m", "bound"],
            b"",
        );
        assert_eq!(output(sub), "unix/a over unix\nunix/b bound\n");
    })
    .await
    .unwrap();
}

/// A SOCKS5 proxy (RFC 1928, user name and password per RFC 1929) for one connection at a
/// time: checks the credentials and the requested host, then relays to the broker.
async fn socks5_proxy(upstream: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut head = [0u8; 3];
            client.read_exact(&mut head).await.unwrap();
            assert_eq!(
                head,
                [5, 1, 2],
                "one method offered: user name and password"
            );
            client.write_all(&[5, 2]).await.unwrap();
            let field = |len: usize| vec![0u8; len];
            let mut version_len = [0u8; 2];
            client.read_exact(&mut version_len).await.unwrap();
            let mut user = field(usize::from(version_len[1]));
            client.read_exact(&mut user).await.unwrap();
            let password_len = usize::from(client.read_u8().await.unwrap());
            let mut password = field(password_len);
            client.read_exact(&mut password).await.unwrap();
            let ok = user == b"me@home" && password == b"p:w";
            client.write_all(&[1, u8::from(!ok)]).await.unwrap();
            if !ok {
                continue;
            }
            let mut request = [0u8; 5];
            client.read_exact(&mut request).await.unwrap();
            assert_eq!(request[..4], [5, 1, 0, 3], "CONNECT to a host name");
            let mut host = field(usize::from(request[4]) + 2);
            client.read_exact(&mut host).await.unwrap();
            let port = u16::from_be_bytes([host[host.len() - 2], host[host.len() - 1]]);
            assert_eq!(&host[..host.len() - 2], b"localhost");
            assert_eq!(port, upstream);
            let mut broker = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                .await
                .unwrap();
            client
                .write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0])
                .await
                .unwrap();
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_proxy_and_request_with_a_response_topic() {
    let (_broker, port) = broker();
    let proxy = socks5_proxy(port.parse().unwrap()).await;
    // A responder that answers on the request's response topic.
    let (responder, _task) = tern_client::Client::start(
        tern_client::ClientOptions::new("cli-flags-responder"),
        tern_client::TcpTransport::new(format!("127.0.0.1:{port}")),
    )
    .unwrap();
    responder.wait_connected(WAIT).await.unwrap();
    responder
        .serve("svc/echo", |request| async move {
            let mut reply = b"echo: ".to_vec();
            reply.extend_from_slice(&request.payload);
            Ok(tern_client::Bytes::from(reply))
        })
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        let proxy_url = format!("socks5h://me%40home:p%3Aw@127.0.0.1:{proxy}");
        let (status, out, err) = cli::run(
            &[
                "req",
                "-h",
                "localhost",
                "-p",
                &port,
                "--proxy",
                &proxy_url,
                "-t",
                "svc/echo",
                "-e",
                "my/replies",
                "-m",
                "ping",
            ],
            b"",
        );
        assert!(status.success(), "{err}");
        assert_eq!(String::from_utf8_lossy(&out), "echo: ping\n");
        let wrong = format!(
            "pub -h localhost -p {port} --connect-timeout 1 -t x -m y \
             --proxy socks5h://me%40home:nope@127.0.0.1:{proxy}"
        );
        let (status, _, _) = cli::run(&wrong.split(' ').collect::<Vec<_>>(), b"");
        assert!(!status.success());
    })
    .await
    .unwrap();
}
