//! A sensor that publishes a reading every second and survives outages: readings made while
//! the broker is unreachable wait in the offline queue (and on disk), and are delivered in order
//! once the link is back.
//!
//! `cargo run -p tern-client --example sensor -- [host:port] [store dir]`

use std::time::Duration;

use tern_client::{Client, ClientOptions, ConnectionState, QoS, QueuePolicy, TcpTransport};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:1883".into());
    let store = args.next().unwrap_or_else(|| "sensor-outbox".into());

    let mut options = ClientOptions::new("example-sensor");
    options.clean_start = false; // resume the session, and the outbox, after a restart
    options.session_expiry_secs = 3600;
    options.keep_alive = Duration::from_secs(10);
    options.quiet_period = Duration::from_secs(2);
    options.store_dir = Some(store.into());
    options.queue_count_max = 10_000;
    options.queue_policy = QueuePolicy::DropOldest; // keep the freshest readings
    let (client, _task) = Client::start(options, TcpTransport::new(address))?;

    // Report link changes; the application itself never has to care.
    let mut state = client.state();
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            match &*state.borrow_and_update() {
                ConnectionState::Connected { session_present } => {
                    eprintln!("connected (session present: {session_present})")
                }
                ConnectionState::Down(reason) => eprintln!("link down: {reason:?}"),
                _ => {}
            }
        }
    });

    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    for n in 0u64.. {
        ticker.tick().await;
        let reading = format!(
            "{{\"n\":{n},\"celsius\":{:.1}}}",
            20.0 + (n % 10) as f64 / 10.0
        );
        let mut message = tern_client::message("example/sensor/temperature", reading)?;
        message.qos = QoS::AtLeastOnce;
        // Hand it over and move on; the acknowledgement is awaited in the background.
        let ack = client.send(message).await?;
        tokio::spawn(async move {
            if let Err(error) = ack.await {
                eprintln!("reading {n} not delivered: {error}");
            }
        });
    }
    Ok(())
}
