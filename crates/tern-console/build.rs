//! Builds the web console (`web/`, Preact and uPlot with Vite) with the machine's Node.js and
//! npm into `OUT_DIR`, and writes the table of its files that `src/lib.rs` embeds. `npm ci`
//! installs exactly what `web/package-lock.json` pins (with no install scripts) and runs only
//! when the lock changed; the build runs again only when the front end's sources change.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the front end is made of: a change to any of these rebuilds it.
const SOURCES: [&str; 5] = [
    "web/package.json",
    "web/package-lock.json",
    "web/index.html",
    "web/vite.config.js",
    "web/src",
];

fn main() {
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-env-changed=NPM");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let web = manifest.join("web");
    let dist = out.join("console-dist");
    if let Err(message) = build(&web, &dist) {
        // A build script's panic is the build's error message.
        panic!("\n\nbuilding the web console failed: {message}\n\n");
    }
    let mut files = Vec::new();
    collect(&dist, &dist, &mut files);
    files.sort();
    let mut table = String::from("/// The console's files: path (from `/`), contents.\n");
    table.push_str("pub(crate) static FILES: &[(&str, &[u8])] = &[\n");
    for (path, absolute) in &files {
        let _ = writeln!(table, "    ({path:?}, include_bytes!({absolute:?})),");
    }
    table.push_str("];\n");
    if let Err(error) = std::fs::write(out.join("assets.rs"), table) {
        panic!("cannot write the console's file table: {error}");
    }
}

fn build(web: &Path, dist: &Path) -> Result<(), String> {
    let npm = std::env::var("NPM").unwrap_or_else(|_| "npm".to_owned());
    let lock = std::fs::read(web.join("package-lock.json"))
        .map_err(|e| format!("cannot read web/package-lock.json: {e}"))?;
    // npm keeps a copy of the lock it installed from in node_modules: equal, nothing to do.
    let installed = std::fs::read(web.join("node_modules/.tern-package-lock.json")).ok();
    if installed.as_deref() != Some(lock.as_slice()) {
        run(
            Command::new(&npm)
                .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
                .current_dir(web),
            &npm,
        )?;
        std::fs::write(web.join("node_modules/.tern-package-lock.json"), &lock)
            .map_err(|e| format!("cannot record the installed lock: {e}"))?;
    }
    let dist_text = dist.to_str().ok_or("OUT_DIR is not UTF-8")?;
    run(
        Command::new(&npm)
            .args([
                "exec",
                "--offline",
                "--",
                "vite",
                "build",
                "--outDir",
                dist_text,
            ])
            .args(["--emptyOutDir", "--logLevel", "warn"])
            .current_dir(web),
        &npm,
    )
}

fn run(command: &mut Command, npm: &str) -> Result<(), String> {
    let shown = format!("{command:?}");
    match command.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("{shown} ended with {status}")),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "`{npm}` was not found: the console is built with Node.js (18 or later) and npm \
             (Debian: `apt-get install nodejs npm`); set NPM to another npm"
        )),
        Err(error) => Err(format!("cannot run {shown}: {error}")),
    }
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if let (Ok(relative), Some(absolute)) = (path.strip_prefix(root), path.to_str()) {
            let relative = relative.to_string_lossy().replace('\\', "/");
            files.push((format!("/{relative}"), absolute.to_owned()));
        }
    }
}
