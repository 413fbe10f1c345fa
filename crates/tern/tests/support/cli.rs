//! Runs `tern pub`/`tern sub` (or any command) as a child process and reads its output line by
//! line as it comes, so tests wait on what a command prints rather than on time.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running command whose standard output and error are collected as lines.
pub(crate) struct Running {
    child: Child,
    stdout: mpsc::Receiver<Vec<u8>>,
    stderr: mpsc::Receiver<String>,
    /// Standard error lines read so far.
    pub(crate) errors: Vec<String>,
}

/// Starts `tern` with `args`; standard input is piped (see [`Running::stdin`]).
pub(crate) fn tern(args: &[&str]) -> Running {
    spawn(Command::new(env!("CARGO_BIN_EXE_tern")).args(args))
}

/// Starts any command.
pub(crate) fn spawn(command: &mut Command) -> Running {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let (out_tx, stdout) = mpsc::channel();
    let mut out = BufReader::new(child.stdout.take().expect("stdout is piped"));
    std::thread::spawn(move || loop {
        let mut line = Vec::new();
        match out.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if out_tx.send(line).is_err() {
                    return;
                }
            }
        }
    });
    let (err_tx, stderr) = mpsc::channel();
    let err = BufReader::new(child.stderr.take().expect("stderr is piped"));
    std::thread::spawn(move || {
        for line in err.lines() {
            let Ok(line) = line else { return };
            if err_tx.send(line).is_err() {
                return;
            }
        }
    });
    Running {
        child,
        stdout,
        stderr,
        errors: Vec::new(),
    }
}

impl Running {
    /// The command's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command's standard input.
    pub(crate) fn stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin is piped")
    }

    /// The next line of standard output (without its newline), if one comes within
    /// `timeout`.
    pub(crate) fn line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.stdout.recv_timeout(timeout).ok()?;
        let text = String::from_utf8_lossy(&line);
        Some(text.strip_suffix('\n').unwrap_or(&text).to_owned())
    }

    /// Waits for a standard error line containing `needle`; every line read is kept in
    /// `errors`.
    pub(crate) fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> bool {
        self.wait_stderr_line(|line| line.contains(needle), timeout)
            .is_some()
    }

    /// Waits for a standard error line that `matches`, and returns it; every line read is kept
    /// in `errors`.
    pub(crate) fn wait_stderr_line(
        &mut self,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        if let Some(line) = self.errors.iter().find(|l| matches(l)) {
            return Some(line.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = matches(&line).then(|| line.clone());
                    self.errors.push(line);
                    if found.is_some() {
                        return found;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits for the command to exit (killing it after `timeout`) and returns its status,
    /// the rest of its standard output (as written) and all its standard error.
    pub(crate) fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<u8>, String) {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        // Standard output closes when the command exits.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => out.extend_from_slice(&line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    eprintln!("killed after {timeout:?}");
                    let _ = self.child.kill();
                    break;
                }
            }
        }
        let status = self.child.wait().expect("wait for the command");
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            self.errors.push(line);
        }
        (status, out, self.errors.join("\n"))
    }

    /// Kills the command at once (SIGKILL: no DISCONNECT, so a will is published).
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tern` with `args` and `input` on standard input to completion.
pub(crate) fn run(args: &[&str], input: &[u8]) -> (ExitStatus, Vec<u8>, String) {
    let mut running = tern(args);
    let mut stdin = running.stdin();
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    running.finish(Duration::from_secs(30))
}
