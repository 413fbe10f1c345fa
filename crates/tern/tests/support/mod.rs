//! Starts the real `tern` binary on an ephemeral loopback port for black-box tests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

#[allow(dead_code)] // Not every test file uses it.
pub(crate) mod cli;
#[allow(dead_code)] // Not every test file uses it.
pub(crate) mod cluster;
#[allow(dead_code)] // Not every test file uses it.
pub(crate) mod mosquitto;
#[allow(dead_code)] // Not every test file uses it.
pub(crate) mod mqtt;
#[allow(dead_code)] // Not every test file uses it.
pub(crate) mod nats;
#[allow(dead_code)] // Not every test file uses it.
pub(crate) mod peer;
#[allow(dead_code)] // Not every test file uses it.
pub(crate) mod redis;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// `tern serve` on an ephemeral loopback port with state in memory only.
pub(crate) const IN_MEMORY: &[&str] = &[
    "serve",
    "--bind",
    "127.0.0.1",
    "--port",
    "0",
    "--durability",
    "none",
];

/// Resident memory of the process `pid`, in bytes.
#[allow(dead_code)] // Not every test file uses it.
pub(crate) fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

/// A running `tern serve`, killed when dropped.
pub(crate) struct Tern {
    child: Child,
    /// The port it listens on.
    pub(crate) port: u16,
    /// Every line it has logged so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Tern {
    /// Starts `tern serve --bind 127.0.0.1 --port 0` with state in memory only
    /// (`--durability none`) and waits for its listening line.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn start() -> Self {
        Self::start_with(IN_MEMORY)
    }

    /// Starts `tern serve --bind 127.0.0.1 --port 0` keeping its state in `dir` (durability
    /// `fsync`, the default) and waits for its listening line.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn start_with_data(dir: &std::path::Path) -> Self {
        Self::start_on_data(dir, &[])
    }

    /// Starts `tern serve --recover` on `dir` (see [`Tern::start_with_data`]): a damaged store
    /// is salvaged rather than refused.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn start_recovering(dir: &std::path::Path) -> Self {
        Self::start_on_data(dir, &["--recover"])
    }

    fn start_on_data(dir: &std::path::Path, extra: &[&str]) -> Self {
        let dir = dir.to_str().expect("UTF-8 path");
        let mut args = vec![
            "serve",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            dir,
        ];
        args.extend_from_slice(extra);
        Self::start_with(&args)
    }

    /// Runs `tern serve` on `dir` (with `extra` arguments) expecting it to refuse to start:
    /// a non-zero exit status before listening. Returns its error output.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn refused(dir: &std::path::Path, extra: &[&str]) -> String {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["serve", "--bind", "127.0.0.1", "--port", "0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tern runs");
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let (done, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            let _ = done.send(text);
        });
        // The error output ends when tern exits; a broker that started keeps it open.
        let Ok(stderr) = output.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tern started on {} instead of refusing", dir.display());
        };
        let status = child.wait().expect("tern exits");
        assert!(!status.success(), "tern must not start: {stderr}");
        assert!(
            !stderr.contains("listening for MQTT"),
            "refused before listening: {stderr}"
        );
        stderr
    }

    /// Starts `tern serve --config FILE` with `config` written to a scratch file; the first
    /// listener of the file must be a plain TCP one on a loopback address.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn start_with_config(config: &str) -> Self {
        Self::start_with_config_env(config, &[])
    }

    /// [`Tern::start_with_config`] with `env` added to the broker's environment.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn start_with_config_env(config: &str, env: &[(&str, &str)]) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("tern-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, config).expect("write the configuration");
        // State in memory only: tests never share (or leave behind) a data directory.
        let mut command = Command::new(env!("CARGO_BIN_EXE_tern"));
        command
            .args(["serve", "--config", path.to_str().expect("UTF-8 path")])
            .args(["--durability", "none"])
            .envs(env.iter().copied());
        let tern = Self::start_command(command);
        let _ = std::fs::remove_file(&path);
        tern
    }

    /// Starts `tern serve --config PATH` with state in memory only; the file stays, for a
    /// SIGHUP to read again.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn start_with_config_file(path: &std::path::Path) -> Self {
        let path = path.to_str().expect("UTF-8 path");
        Self::start_with(&["serve", "--config", path, "--durability", "none"])
    }

    /// The broker's process id.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the broker is still running.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// As [`Tern::start`], under an open-file limit (soft and hard) lowered to `limit`, as
    /// `ulimit -n` in a shell does.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn start_with_open_file_limit(limit: u64) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("ulimit -n \"$0\" && exec \"$@\"")
            .arg(limit.to_string())
            .arg(env!("CARGO_BIN_EXE_tern"))
            .args(IN_MEMORY);
        Self::start_command(command)
    }

    fn start_with(args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tern"));
        command.args(args);
        Self::start_command(command)
    }

    fn start_command(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tern starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (found, port) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
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
                lines.lock().expect("log lock").push(line);
            }
        });
        let port = match port.recv_timeout(Duration::from_secs(20)) {
            Ok(port) => port,
            Err(why) => {
                // Say why: the broker's own last words, and how it ended if it did.
                let status = child.try_wait();
                let _ = child.kill();
                let _ = child.wait();
                let lines = log.lock().map(|l| l.join("\n")).unwrap_or_default();
                panic!("tern logged no listening port ({why:?}; exit: {status:?}):\n{lines}");
            }
        };
        Self { child, port, log }
    }

    /// Whether the broker logs a line containing `needle` within `timeout`.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_line(needle, timeout).is_some()
    }

    /// Every line the broker has logged so far.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// The first line the broker logs containing `needle`, waiting up to `timeout` for it.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn wait_for_log_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        logged_line(&self.log, needle, timeout)
    }
}

/// Sends `signal` (`STOP`, `CONT`) to the process `pid`.
#[allow(dead_code)] // Not every test file uses it.
pub(crate) fn signal_process(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "SIG{signal} sent");
}

/// Stops the process `pid` (SIGSTOP) and waits until every one of its threads has stopped: a
/// thread that was running keeps going until the signal reaches it.
#[allow(dead_code)] // Not every test file uses it.
pub(crate) fn stop_process(pid: u32) {
    signal_process(pid, "STOP");
    let tasks = format!("/proc/{pid}/task");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all_stopped = std::fs::read_dir(&tasks)
            .expect("the process's threads")
            .filter_map(Result::ok)
            .all(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                // The state follows the command name, which is in parentheses.
                stat.rsplit(") ")
                    .next()
                    .is_some_and(|rest| rest.starts_with('T'))
            });
        if all_stopped {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process did not stop"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The first line of `log` (lines a child process writes, collected as they come) containing
/// `needle`, waiting up to `timeout` for it.
pub(crate) fn logged_line(
    log: &Mutex<Vec<String>>,
    needle: &str,
    timeout: Duration,
) -> Option<String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let found = log
            .lock()
            .expect("log lock")
            .iter()
            .find(|l| l.contains(needle))
            .cloned();
        if found.is_some() {
            return found;
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Tern {
    /// Kills the broker with SIGKILL: no chance to flush or say goodbye.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the broker with SIGTERM and returns its exit status.
    #[allow(dead_code)] // Not every test file uses it.
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
