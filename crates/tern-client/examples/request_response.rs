//! A request/response pair: a responder serving `example/upper` (upper-casing its input, or
//! answering an error for empty input) and a requester calling it with a timeout.
//!
//! `cargo run -p tern-client --example request_response -- [host:port]`

use std::time::Duration;

use tern_client::request::HandlerError;
use tern_client::{Bytes, Client, ClientOptions, TcpTransport};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1883".into());

    let (responder, _task) = Client::start(
        ClientOptions::new("example-responder"),
        TcpTransport::new(address.clone()),
    )?;
    responder
        .serve("example/upper", |request| async move {
            if request.payload.is_empty() {
                return Err(HandlerError::new("empty", "nothing to upper-case"));
            }
            Ok(Bytes::from(
                String::from_utf8_lossy(&request.payload).to_uppercase(),
            ))
        })
        .await?;

    let (requester, _task) = Client::start(
        ClientOptions::new("example-requester"),
        TcpTransport::new(address),
    )?;
    let timeout = Duration::from_secs(5);
    let response = requester.request("example/upper", "hello", timeout).await?;
    println!("response: {}", String::from_utf8_lossy(&response.payload));
    match requester.request("example/upper", "", timeout).await {
        Err(error) => println!("error response: {error}"),
        Ok(response) => println!("unexpected response: {:?}", response.payload),
    }
    requester.disconnect().await;
    responder.disconnect().await;
    Ok(())
}
