//! Starts the real `tern` binary on an ephemeral loopback port for black-box tests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

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
    /// Starts `tern serve --bind 127.0.0.1 --port 0` and waits for its listening line.
    pub(crate) fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["serve", "--bind", "127.0.0.1", "--port", "0"])
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
    /// The broker's process identifier.
    #[allow(dead_code)] // Not every test binary that shares this module reads it.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Tern {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
