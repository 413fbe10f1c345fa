//! Firmware files the broker keeps (docs/fleet.md, "Firmware files"): an upload streamed to a
//! partial file in the data directory as it arrives (never held whole in memory, at most
//! `http.firmware_file_max_bytes`), synced, then renamed into place as
//! `firmware/<id>-<sha256>.bin`; and `GET /v1/fleet/firmware/{id}` serving them with range requests (206 for one
//! range, 416 for one past the end, the whole file otherwise) to a signed request of a device
//! of an owner the release is for, and to operators whose token may see that owner. Anyone
//! else is answered as for an unknown id: who may read is decided on the broker thread
//! (`Broker::firmware_file_for`, `admin_firmware::apply`), the bytes are read here.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Response};
use bytes::Bytes;
use serde::Deserialize;

use crate::admin::{ask, authorize};
use crate::admin_firmware::FirmwareOp;
use crate::admin_ops::AdminOp;
use crate::bridge::Op;
use crate::error::ApiError;
use crate::replay::Answer;
use crate::server::{unsigned, Shared};
use crate::signed::{signed_then, Served};
use crate::tokens::Scope;

/// The directory of the data directory the files are kept in.
const FIRMWARE_DIR: &str = "firmware";

/// Where the file of release `id`, of this digest, is kept.
pub(crate) fn file_path(data_dir: &Path, id: &str, sha256: &str) -> PathBuf {
    data_dir.join(FIRMWARE_DIR).join(file_name(id, sha256))
}

fn file_name(id: &str, sha256: &str) -> String {
    format!("{id}-{sha256}.bin")
}

/// An upload's body written to a file of its own in the firmware directory (synced), with
/// the SHA-256 (lowercase hex) and size of what was written.
#[derive(Debug)]
pub(crate) struct Received {
    partial: PathBuf,
    pub(crate) sha256: String,
    pub(crate) size: u64,
}

/// Distinguishes the partial files of uploads running at once.
static UPLOADS: AtomicU64 = AtomicU64::new(0);

/// The answer to an upload over `limit` bytes.
pub(crate) fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        413,
        "payload_too_large",
        format!("the firmware file is over {limit} bytes (http.firmware_file_max_bytes)"),
    )
}

/// Streams an upload's body to a partial file in the firmware directory, digesting it on the
/// way: never more than a frame of it in memory. Past `limit` bytes, or when the body stops
/// coming for `idle` (a large file may take longer than that in all), it is refused and what
/// was written goes.
pub(crate) async fn receive(
    data_dir: &Path,
    body: Body,
    limit: u64,
    idle: Duration,
) -> Result<Received, ApiError> {
    let dir = data_dir.join(FIRMWARE_DIR);
    let upload = UPLOADS.fetch_add(1, Ordering::Relaxed);
    let partial = dir.join(format!("upload-{}-{upload}.part", std::process::id()));
    let outcome = stream_to(&dir, &partial, body, limit, idle).await;
    if outcome.is_err() {
        remove(&partial).await;
    }
    outcome
}

async fn stream_to(
    dir: &Path,
    partial: &Path,
    mut body: Body,
    limit: u64,
    idle: Duration,
) -> Result<Received, ApiError> {
    use http_body_util::BodyExt;
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncWriteExt;
    let unwritable = |error: std::io::Error| {
        tracing::warn!(
            "cannot write the firmware file {}: {error}",
            partial.display()
        );
        ApiError::unavailable("the file could not be written")
    };
    tokio::fs::create_dir_all(dir).await.map_err(unwritable)?;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(partial).await.map_err(unwritable)?;
    let (mut digest, mut size) = (Sha256::new(), 0u64);
    let stalled = || {
        ApiError::new(
            408,
            "request_timeout",
            format!("the body stopped coming for {idle:?}"),
        )
    };
    while let Some(frame) = tokio::time::timeout(idle, body.frame())
        .await
        .map_err(|_| stalled())?
    {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size = size.saturating_add(data.len() as u64);
        if size > limit {
            return Err(too_large(limit));
        }
        digest.update(&data);
        file.write_all(&data).await.map_err(unwritable)?;
    }
    file.sync_all().await.map_err(unwritable)?;
    let sha256 = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Received {
        partial: partial.to_owned(),
        sha256,
        size,
    })
}

/// Puts a received file in place as the file of release `id` (renamed, the directory
/// synced); `Ok(true)` when a file of that name (the same bytes) was there already.
pub(crate) async fn keep(data_dir: &Path, id: &str, received: Received) -> Result<bool, String> {
    let dir = data_dir.join(FIRMWARE_DIR);
    let path = dir.join(file_name(id, &received.sha256));
    tokio::task::spawn_blocking(move || {
        let existed = path.exists();
        let placed = std::fs::rename(&received.partial, &path)
            .and_then(|()| std::fs::File::open(&dir)?.sync_all());
        if let Err(error) = placed {
            let _ = std::fs::remove_file(&received.partial);
            return Err(format!("cannot write {}: {error}", path.display()));
        }
        Ok(existed)
    })
    .await
    .map_err(|e| format!("writing the firmware file: {e}"))?
}

/// Drops a received file that is not kept.
pub(crate) async fn discard(received: Received) {
    remove(&received.partial).await;
}

async fn remove(path: &Path) {
    if let Err(error) = tokio::fs::remove_file(path).await {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot delete {}: {error}", path.display());
        }
    }
}

/// Deletes the file of a release (its release deleted, or its upload not taken).
pub(crate) fn forget(data_dir: &Path, id: &str, sha256: &str) {
    let path = file_path(data_dir, id, sha256);
    if let Err(error) = std::fs::remove_file(&path) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(
                "cannot delete the firmware file {}: {error}",
                path.display()
            );
        }
    }
}

/// What part of a file a request asks for (RFC 9110, section 14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// All of it: no Range, one that does not parse, or several ranges (which a server may
    /// answer with the whole file).
    Whole,
    /// The bytes from the first to the last, both included.
    Part(u64, u64),
    /// A range that starts past the end.
    Unsatisfiable,
}

/// Reads a `Range` header against a file of `size` bytes.
fn wanted(range: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Wanted::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // The last `n` bytes.
        return match last.parse::<u64>() {
            Ok(0) => Wanted::Unsatisfiable,
            Ok(_) if size == 0 => Wanted::Unsatisfiable,
            Ok(n) => Wanted::Part(size.saturating_sub(n), size - 1),
            Err(_) => Wanted::Whole,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return Wanted::Whole;
    };
    let end = match last {
        "" => u64::MAX,
        text => match text.parse::<u64>() {
            Ok(end) if end >= start => end,
            _ => return Wanted::Whole,
        },
    };
    if start >= size {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part(start, end.min(size - 1))
}

/// The release as the broker thread answered it: which file, how large.
#[derive(Debug, Deserialize)]
struct Kept {
    id: String,
    sha256: String,
    size: u64,
}

/// Reads what `range` asks of the release the broker thread answered with.
async fn serve(data_dir: &Path, answer: &Answer, range: Option<&str>) -> Result<Served, ApiError> {
    let kept: Kept = serde_json::from_slice(&answer.body)
        .map_err(|_| ApiError::unavailable("the release could not be read"))?;
    let size = kept.size;
    let (status, start, end) = match wanted(range, size) {
        Wanted::Whole => (200, 0, size),
        Wanted::Part(first, last) => (206, first, last + 1),
        Wanted::Unsatisfiable => {
            let error = ApiError::new(
                416,
                "range_not_satisfiable",
                format!("the file has {size} bytes"),
            );
            return Err(error);
        }
    };
    let path = file_path(data_dir, &kept.id, &kept.sha256);
    let missing = || {
        ApiError::new(
            404,
            "no_release",
            format!("the file of release {:?} is missing", kept.id),
        )
    };
    let read = tokio::task::spawn_blocking(move || read_part(&path, size, start, end))
        .await
        .map_err(|_| missing())?;
    let body = read.map_err(|error| {
        tracing::warn!("firmware file of {:?}: {error}", kept.id);
        missing()
    })?;
    let mut headers = vec![
        header("content-type", "application/octet-stream"),
        header("accept-ranges", "bytes"),
    ];
    if status == 206 {
        let range = format!("bytes {start}-{}/{size}", end - 1);
        headers.push(header("content-range", &range));
    }
    Ok(Served {
        status,
        body: Bytes::from(body),
        headers,
    })
}

/// Bytes `start..end` of the file, which must have `size` bytes.
fn read_part(path: &Path, size: u64, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    if file.metadata()?.len() != size {
        return Err(std::io::Error::other("its size is not the release's"));
    }
    file.seek(SeekFrom::Start(start))?;
    let length = usize::try_from(end - start).map_err(std::io::Error::other)?;
    let mut bytes = vec![0; length];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn header(name: &'static str, value: &str) -> (HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static(""));
    (HeaderName::from_static(name), value)
}

/// The `Content-Range` a 416 answer carries.
fn unsatisfiable_range(size: u64) -> (HeaderName, HeaderValue) {
    header("content-range", &format!("bytes */{size}"))
}

/// Downloads a release's file: a device's signed request (`Tern-Key`), or an operator's.
#[utoipa::path(
    get,
    path = "/v1/fleet/firmware/{id}",
    tag = "fleet",
    params(
        ("id" = String, Path, description = "The release's id."),
        ("Range" = Option<String>, Header, description = "bytes=FIRST-LAST, bytes=FIRST- or bytes=-N: one range."),
    ),
    responses(
        (status = 200, description = "The whole file (application/octet-stream)."),
        (status = 206, description = "The range asked for, with Content-Range."),
        (status = "4XX", description = "no_release (404): no such release with a kept file, or not one the device or token may read; range_not_satisfiable (416), with Content-Range: bytes */SIZE; or the signature or token refused.", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []), ("bearer" = ["read"]))
)]
pub(crate) async fn download(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    let range = request
        .headers()
        .get("range")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    if !request.headers().contains_key("tern-key") {
        return operator_download(shared, request, range).await;
    }
    let data_dir = shared.config.data_dir.clone();
    signed_then(
        Arc::clone(&shared),
        request,
        |_, parts, _| {
            let id = parts
                .path
                .strip_prefix("/v1/fleet/firmware/")
                .unwrap_or_default();
            Ok(Op::Firmware(crate::publish::levels_of(id, "bad_request")?))
        },
        move |answer| async move { served_or_416(&data_dir, &answer, range.as_deref()).await },
    )
    .await
}

/// [`serve`], a 416 carrying the file's size.
async fn served_or_416(
    data_dir: &Path,
    answer: &Answer,
    range: Option<&str>,
) -> Result<Served, (ApiError, Vec<(HeaderName, HeaderValue)>)> {
    serve(data_dir, answer, range).await.map_err(|error| {
        let size = serde_json::from_slice::<Kept>(&answer.body).map_or(0, |kept| kept.size);
        let headers = match error.status {
            416 => vec![unsatisfiable_range(size)],
            _ => Vec::new(),
        };
        (error, headers)
    })
}

/// An operator's download: a token that may see an owner the release is for.
async fn operator_download(
    shared: Arc<Shared>,
    request: Request,
    range: Option<String>,
) -> Response<Body> {
    let who = match authorize(&shared, &request, Scope::Read, "/v1/fleet/firmware") {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let op = FirmwareOp::File {
        realm: who.operator.realm().clone(),
        id: who.rest.clone(),
    };
    let answer = match ask(&shared, AdminOp::Firmware(op)).await {
        Ok(answer) if answer.status < 400 => answer,
        Ok(answer) => return who.refuse(&shared, &crate::server::error_of(&answer)),
        Err(error) => return who.refuse(&shared, &error),
    };
    match served_or_416(&shared.config.data_dir, &answer, range.as_deref()).await {
        Ok(served) => served.into_response(None),
        Err((error, headers)) => {
            let mut response = who.refuse(&shared, &error);
            response.headers_mut().extend(headers);
            response
        }
    }
}

impl Served {
    /// The response, signed over its body when a device asked.
    pub(crate) fn into_response(self, signer: Option<&crate::signed::Signer>) -> Response<Body> {
        let mut response = match signer {
            Some(signer) => crate::signed::respond(self.status, self.body, Some(signer), false),
            None => unsigned(self.status, self.body),
        };
        response.headers_mut().extend(self.headers);
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.
    use super::*;

    type Sender = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

    /// A body whose frames the test sends when it chooses.
    fn fed_body() -> (Sender, Body) {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let frames = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|frame| (frame, receiver))
        });
        (sender, Body::from_stream(frames))
    }

    /// The files in the firmware directory, with their sizes.
    fn files(data_dir: &Path) -> Vec<(String, u64)> {
        let Ok(entries) = std::fs::read_dir(data_dir.join(FIRMWARE_DIR)) else {
            return Vec::new();
        };
        let mut found: Vec<(String, u64)> = entries
            .flatten()
            .map(|e| {
                let size = e.metadata().map(|m| m.len()).unwrap_or_default();
                (e.file_name().to_string_lossy().into_owned(), size)
            })
            .collect();
        found.sort();
        found
    }

    #[tokio::test]
    async fn an_upload_is_written_to_disk_as_it_arrives_then_put_in_place() {
        let data = tempfile::tempdir().unwrap();
        let (sender, body) = fed_body();
        let dir = data.path().to_owned();
        let receiving =
            tokio::spawn(async move { receive(&dir, body, 4096, Duration::from_secs(10)).await });
        sender.send(Ok(Bytes::from(vec![1u8; 1000]))).await.unwrap();
        // The first part is on disk while the rest has not been sent: the body is not held
        // whole (bounded wait on the file's state).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let partial = files(data.path());
            if partial.len() == 1 && partial[0].0.ends_with(".part") && partial[0].1 == 1000 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not streamed: {partial:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sender.send(Ok(Bytes::from(vec![2u8; 500]))).await.unwrap();
        drop(sender);
        let received = receiving.await.unwrap().unwrap();
        assert_eq!(received.size, 1500);
        let mut whole = vec![1u8; 1000];
        whole.extend([2u8; 500]);
        use sha2::{Digest, Sha256};
        let sha: String = Sha256::digest(&whole)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(received.sha256, sha);
        assert!(!keep(data.path(), "fw-1", received).await.unwrap());
        let path = file_path(data.path(), "fw-1", &sha);
        assert_eq!(std::fs::read(&path).unwrap(), whole);
        assert_eq!(files(data.path()), [(format!("fw-1-{sha}.bin"), 1500)]);
    }

    #[tokio::test]
    async fn an_upload_past_the_limit_is_refused_and_leaves_nothing() {
        let data = tempfile::tempdir().unwrap();
        let (sender, body) = fed_body();
        let dir = data.path().to_owned();
        let receiving =
            tokio::spawn(async move { receive(&dir, body, 1000, Duration::from_secs(10)).await });
        sender.send(Ok(Bytes::from(vec![1u8; 600]))).await.unwrap();
        // The second frame passes the limit; the body is not read further.
        let _ = sender.send(Ok(Bytes::from(vec![1u8; 600]))).await;
        let refused = receiving.await.unwrap().unwrap_err();
        assert_eq!((refused.status, refused.code), (413, "payload_too_large"));
        assert_eq!(files(data.path()), []);
    }

    #[test]
    fn one_range_is_read_and_anything_else_is_the_whole_file_or_unsatisfiable() {
        let cases = [
            (None, Wanted::Whole),
            (Some("bytes=0-99"), Wanted::Part(0, 99)),
            (Some("bytes=100-"), Wanted::Part(100, 999)),
            (Some("bytes=900-5000"), Wanted::Part(900, 999)),
            (Some("bytes=-10"), Wanted::Part(990, 999)),
            (Some("bytes=-5000"), Wanted::Part(0, 999)),
            (Some("bytes=1000-"), Wanted::Unsatisfiable),
            (Some("bytes=-0"), Wanted::Unsatisfiable),
            (Some("bytes=5-2"), Wanted::Whole),
            (Some("bytes=0-1,5-6"), Wanted::Whole),
            (Some("items=0-1"), Wanted::Whole),
            (Some("bytes=x-1"), Wanted::Whole),
        ];
        for (range, want) in cases {
            assert_eq!(wanted(range, 1000), want, "{range:?}");
        }
        assert_eq!(wanted(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
        assert_eq!(wanted(None, 0), Wanted::Whole);
    }

    #[test]
    fn a_part_is_read_only_from_a_file_of_the_releases_size() {
        let dir = std::env::temp_dir().join(format!("tern-fw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let path = dir.join("f.bin");
        std::fs::write(&path, b"0123456789").unwrap_or_default();
        assert_eq!(read_part(&path, 10, 2, 5).ok(), Some(b"234".to_vec()));
        assert!(read_part(&path, 11, 0, 1).is_err());
        assert!(read_part(&dir.join("none"), 10, 0, 1).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
