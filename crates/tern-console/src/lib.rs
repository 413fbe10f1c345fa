//! Tern's web console: the front end under `web/` (Preact and uPlot, built by Vite with the
//! machine's Node.js when this crate is built, see `build.rs`), embedded in the binary. The
//! HTTP bridge serves it at `/`; it speaks to the broker only through the operator API.

mod generated {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// One file of the console.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its contents.
    pub bytes: &'static [u8],
    /// Its media type.
    pub content_type: &'static str,
    /// Whether its name holds a hash of its contents (under `/assets/`): it never changes, so
    /// a browser may keep it for good; others (`/index.html`) must be asked for again.
    pub immutable: bool,
}

/// The file served at `path` (`/` is `/index.html`).
pub fn asset(path: &str) -> Option<Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    generated::FILES
        .iter()
        .find(|(name, _)| *name == path)
        .map(|(name, bytes)| Asset {
            bytes,
            content_type: content_type(name),
            immutable: name.starts_with("/assets/"),
        })
}

/// Every file's path and size in bytes.
pub fn files() -> impl Iterator<Item = (&'static str, usize)> {
    generated::FILES
        .iter()
        .map(|(name, bytes)| (*name, bytes.len()))
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.
    use super::*;

    #[test]
    fn the_console_adds_less_than_a_megabyte() {
        let total: usize = files().map(|(_, size)| size).sum();
        assert!(total > 0, "the console was not built into the crate");
        assert!(total < 1_000_000, "the console's files take {total} bytes");
    }

    #[test]
    fn the_page_loads_only_its_own_hashed_files_and_nothing_from_elsewhere() {
        let page = std::str::from_utf8(asset("/").unwrap().bytes).unwrap();
        assert!(!asset("/").unwrap().immutable);
        let mut referenced = 0;
        for part in page.split(['"', '\'']) {
            assert!(
                !part.contains("//"),
                "the page names another origin: {part}"
            );
            if part.starts_with("/assets/") {
                let file = asset(part).unwrap_or_else(|| panic!("{part} is not embedded"));
                assert!(file.immutable);
                referenced += 1;
            }
        }
        assert!(referenced >= 2, "a script and a style sheet: {page}");
        assert!(
            !page.contains("<script>"),
            "no inline script (the CSP forbids it)"
        );
        for (name, _) in files() {
            let text = String::from_utf8_lossy(asset(name).unwrap().bytes);
            for scheme in ["http://", "https://"] {
                // Only the SVG namespace and licence comments may name a URL.
                let named = text.matches(scheme).count();
                let allowed = text.matches("http://www.w3.org/").count();
                assert!(named <= allowed, "{name} names a URL");
            }
        }
    }

    /// The front end's pure parts (metrics text, the topic tree) have tests of their own in
    /// `web/test/`, run with the Node.js the build used.
    #[test]
    fn the_front_ends_own_tests_pass() {
        let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_owned());
        let run = std::process::Command::new(&node)
            .args(["--test", "test/"])
            .current_dir(&web)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {node}: {e}"));
        let report = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{report}");
        assert!(report.contains("# fail 0"), "{report}");
    }

    #[test]
    fn media_types_follow_the_extension() {
        assert_eq!(content_type("/index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("/assets/a-1.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("/assets/a-1.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("/x"), "application/octet-stream");
    }
}
