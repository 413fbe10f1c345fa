//! A TLS reconnect storm for benchmarks: CONCURRENCY clients each connect over TLS, send
//! CONNECT, wait for CONNACK and close, again and again for SECONDS, so the broker completes
//! TLS handshakes as fast as it (and this generator) can. Run `tern bench latency` against a
//! plain listener meanwhile to see what the storm does to routing (BENCHMARKS.md).
//!
//! Usage: `tls_storm HOST:PORT CA.pem SECONDS CONCURRENCY` (the server certificate must name
//! `localhost`). Prints one line: handshakes completed, their rate, failures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tern_codec::{Connect, ConnectProperties, MqttString, Packet, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, ca, seconds, concurrency] = args.as_slice() else {
        return Err("usage: tls_storm HOST:PORT CA.pem SECONDS CONCURRENCY".into());
    };
    let addr: std::net::SocketAddr = addr.parse()?;
    let duration = Duration::from_secs_f64(seconds.parse()?);
    let concurrency: usize = concurrency.parse()?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let deadline = started + duration;
    let (done, failed) = runtime.block_on(async {
        let mut tasks = Vec::new();
        for worker in 0..concurrency {
            let connector = connector.clone();
            tasks.push(tokio::spawn(async move {
                let (mut done, mut failed) = (0_u64, 0_u64);
                while Instant::now() < deadline {
                    let client_id = format!("storm-{worker}-{done}");
                    match one_connection(&connector, addr, &client_id).await {
                        Ok(()) => done += 1,
                        Err(_) => failed += 1,
                    }
                }
                (done, failed)
            }));
        }
        let mut totals = (0, 0);
        for task in tasks {
            if let Ok((done, failed)) = task.await {
                totals.0 += done;
                totals.1 += failed;
            }
        }
        totals
    });
    let elapsed = started.elapsed().as_secs_f64();
    let rate = done as f64 / elapsed;
    println!("tls_storm: {done} handshakes in {elapsed:.1} s ({rate:.0}/s), {failed} failed");
    Ok(())
}

/// TLS handshake, CONNECT, CONNACK, close.
async fn one_connection(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
    client_id: &str,
) -> Result<(), Error> {
    let socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?;
    let mut stream = connector.connect(name, socket).await?;
    let connect = Packet::Connect(Box::new(Connect {
        protocol_version: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 60,
        properties: ConnectProperties::default(),
        client_id: MqttString::new(client_id)?,
        will: None,
        username: None,
        password: None::<Bytes>,
    }));
    let mut out = BytesMut::new();
    connect.encode(ProtocolVersion::V311, &mut out)?;
    stream.write_all(&out).await?;
    stream.flush().await?;
    let mut connack = [0_u8; 4];
    stream.read_exact(&mut connack).await?;
    if connack[0] != 0x20 || connack[3] != 0 {
        return Err(format!("refused: {connack:?}").into());
    }
    stream.shutdown().await?;
    Ok(())
}
