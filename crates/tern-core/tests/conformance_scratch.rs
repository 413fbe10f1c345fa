mod support;
use support::*;
use tern_core::Limits;

#[test]
fn probe_v311_recv_max() {
    let mut tb = TestBroker::with_limits(Limits {
        receive_maximum: 2,
        ..Limits::default()
    });
    let c = tb.connect("c", V311, Opts::new());
    tb.send_all(
        &c,
        [
            publish("t", "1", Q2, 1),
            publish("t", "2", Q2, 2),
            publish("t", "3", Q2, 3),
        ],
    );
    println!("{:?}", tb.expect_closed(&c));
}
