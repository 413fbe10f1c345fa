mod support;
use support::*;
use tern_codec::Packet;
use tern_core::Transmit;

#[test]
fn probe_suback_size() {
    let mut tb = TestBroker::new();
    let mut connect = connect_packet("c", V5, &Opts::new());
    connect.properties.maximum_packet_size = Some(40);
    let (id, packets, closed) = tb.try_connect(connect);
    println!(
        "connack {:?} closed {closed} size {}",
        packets,
        encode(&packets[0], V5).len()
    );
    let names: Vec<String> = (0..60).map(|n| format!("f{n}")).collect();
    let filters: Vec<(&str, tern_codec::QoS)> = names.iter().map(|n| (n.as_str(), Q0)).collect();
    tb.send_to(id, V5, subscribe(1, &filters));
    while let Some(t) = tb.broker.poll_transmit(id) {
        match t {
            Transmit::Packet(p) => println!("{:?} size {}", p.packet_type(), encode(&p, V5).len()),
            Transmit::Close => println!("close"),
        }
    }
    let fl: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    tb.send_to(id, V5, unsubscribe(2, &fl));
    while let Some(t) = tb.broker.poll_transmit(id) {
        match t {
            Transmit::Packet(p) => println!("{:?} size {}", p.packet_type(), encode(&p, V5).len()),
            Transmit::Close => println!("close"),
        }
    }
    let _ = Packet::PingReq;
    let mut connect = connect_packet("d", V5, &Opts::new());
    connect.properties.maximum_packet_size = Some(8);
    let (_id, packets, closed) = tb.try_connect(connect);
    println!(
        "connack {:?} closed {closed} size {}",
        packets,
        encode(&packets[0], V5).len()
    );
}
