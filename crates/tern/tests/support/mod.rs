//! Starts the real `tern` binary on an ephemeral loopback port for black-box tests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.
#![allow(dead_code)] // Each test binary uses a part of it.

pub(crate) mod mqtt;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `tern serve`, killed when dropped.
pub(crate) struct Tern {
    child: Child,
    /// The port it listens on.
    pub(crate) port: u16,
}

impl Tern {
    /// Starts `tern serve --bind 127.0.0.1 --port 0` with state in memory only
    /// (`--durability none`) and waits for its listening line.
    pub(crate) fn start() -> Self {
        Self::start_with(&["--durability", "none"])
    }

    /// Starts `tern serve --bind 127.0.0.1 --port 0` with `extra` arguments and waits for its
    /// listening line.
    pub(crate) fn start_with(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["serve", "--bind", "127.0.0.1", "--port", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tern starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (found, port) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(rest) = line.split("listening for MQTT on ").nth(1) {
                        let address = rest.split_whitespace().next().unwrap_or_default();
                        if let Some(port) = address
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse::<u16>().ok())
                        {
                            sent = found.send(port).is_ok();
                        }
                    }
                }
                // Keep draining so the broker never blocks on a full pipe.
            }
        });
        let port = port
            .recv_timeout(Duration::from_secs(20))
            .expect("tern logs its listening port");
        Self { child, port }
    }
}

impl Tern {
    /// Kills the broker with SIGKILL: no chance to flush or say goodbye.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the broker with SIGTERM and returns its exit status.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "SIGTERM sent");
        self.child.wait().expect("tern exits")
    }
}

impl Drop for Tern {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
