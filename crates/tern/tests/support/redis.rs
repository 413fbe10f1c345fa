//! Debian's `redis-server` on loopback with nothing written to disk, for the tests of the
//! `redis-auth` feature: started on a free port, stopped and started again on the same one,
//! killed when dropped; commands are sent over a plain socket in RESP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One running `redis-server`.
pub(crate) struct RedisServer {
    child: Option<Child>,
    /// The port it listens on.
    pub(crate) port: u16,
}

impl RedisServer {
    /// Starts a server on a free loopback port, without persistence.
    pub(crate) fn start() -> Self {
        // The port the system hands out for a moment is free for the server to take.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self { child: None, port };
        server.restart();
        server
    }

    /// Stops the server (SIGKILL): clients see their connections end.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on its port, empty; returns once it accepts connections.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/setup-test-deps.sh installs it)");
        let out = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let (ready, wait) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { return };
                if line.contains("Ready to accept connections") {
                    let _ = ready.send(());
                }
            }
        });
        self.child = Some(child);
        assert!(
            wait.recv_timeout(START_TIMEOUT).is_ok(),
            "redis-server did not start on port {}",
            self.port
        );
    }

    /// Runs one command and returns its reply's first line (`+OK`, `:1`, `$-1`, ...).
    pub(crate) fn command(&self, args: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to Redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).expect("send");
        let mut reply = Vec::new();
        let mut byte = [0_u8; 1];
        while !reply.ends_with(b"\r\n") {
            stream.read_exact(&mut byte).expect("a reply");
            reply.push(byte[0]);
        }
        let reply = String::from_utf8_lossy(&reply).trim_end().to_owned();
        assert!(!reply.starts_with('-'), "Redis refused {args:?}: {reply}");
        reply
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
