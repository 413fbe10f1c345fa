//! Debian's `mosquitto` broker on a free loopback port, for tests that run against it too.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound then released; the broker binds it right after).
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

/// Debian's mosquitto on a free loopback port, with in-flight and queue limits raised so they
/// are not what the tests measure; killed when dropped.
pub(crate) struct Mosquitto {
    child: Child,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("mosquitto.conf");
            std::fs::write(
                &config,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                     max_inflight_messages 0\nmax_queued_messages 1000000\n\
                     max_queued_bytes 0\nset_tcp_nodelay true\n"
                ),
            )
            .expect("write mosquitto.conf");
            let mut child = Command::new("mosquitto")
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto is installed (scripts/setup-test-deps.sh)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // Port taken in the meantime: try another.
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("mosquitto did not start");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
