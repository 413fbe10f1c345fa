//! A subscriber that prints sensor readings with their topic, and keeps its subscription across
//! outages (restored by the client when the broker has lost the session).
//!
//! `cargo run -p tern-client --example subscriber -- [host:port]`

use tern_client::{Client, ClientOptions, QoS, TcpTransport};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1883".into());
    let mut options = ClientOptions::new("example-subscriber");
    options.clean_start = false;
    options.session_expiry_secs = 3600;
    let (client, _task) = Client::start(options, TcpTransport::new(address))?;
    let mut messages = client
        .subscribe("example/sensor/#", QoS::AtLeastOnce)
        .await?;
    while let Some(message) = messages.recv().await {
        println!(
            "{} {}",
            message.topic.as_str(),
            String::from_utf8_lossy(&message.payload)
        );
    }
    Ok(())
}
