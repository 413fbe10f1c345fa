#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use super::*;

const NOW: u64 = 1_767_225_600;

fn guard() -> ReplayGuard {
    ReplayGuard::new(ReplayLimits {
        window_secs: 300,
        idempotency_secs: 3600,
        nonces_max: 2,
        counters_max: 2,
        answers_max: 1,
    })
}

fn code(admission: Admission) -> &'static str {
    match admission {
        Admission::Fresh => "fresh",
        Admission::Replay(_) => "replay",
        Admission::Refused(error) => error.code,
    }
}

fn answer() -> Answer {
    Answer {
        status: 200,
        body: bytes::Bytes::from_static(b"{\"matched\":1}"),
        replayed: false,
    }
}

#[test]
fn nonces_parse_strictly() {
    assert_eq!(Nonce::parse("c:1a"), Some(Nonce::Counter(0x1a)));
    assert_eq!(
        Nonce::parse("r:DEADBEEF"),
        Some(Nonce::Random("deadbeef".into()))
    );
    for bad in ["c:", "c:xyz", "c:12345678901234567", "r:abc", "x:12", "12"] {
        assert_eq!(Nonce::parse(bad), None, "{bad}");
    }
}

#[test]
fn counters_only_go_up_per_key_and_client() {
    let mut guard = guard();
    let sig = [1; 32];
    assert_eq!(
        code(guard.admit("d:a", &Nonce::Counter(5), &sig, None, NOW, false)),
        "fresh"
    );
    assert_eq!(
        code(guard.admit("d:a", &Nonce::Counter(5), &sig, None, NOW, false)),
        "nonce_replayed"
    );
    assert_eq!(
        code(guard.admit("d:a", &Nonce::Counter(4), &sig, None, NOW, false)),
        "nonce_replayed"
    );
    assert_eq!(
        code(guard.admit("d:b", &Nonce::Counter(1), &sig, None, NOW, false)),
        "fresh"
    );
    assert_eq!(
        code(guard.admit("d:a", &Nonce::Counter(6), &sig, None, NOW, false)),
        "fresh"
    );
    // A third client has no room: refused, not let through unguarded.
    assert_eq!(
        code(guard.admit("d:c", &Nonce::Counter(1), &sig, None, NOW, false)),
        "rate_limited"
    );
}

#[test]
fn random_nonces_need_a_time_within_the_window_and_are_seen_once() {
    let mut guard = guard();
    let sig = [1; 32];
    let nonce = Nonce::Random("00112233".into());
    assert_eq!(
        code(guard.admit("d:a", &nonce, &sig, Some(NOW - 301), NOW, false)),
        "time_skew"
    );
    assert_eq!(
        code(guard.admit("d:a", &nonce, &sig, Some(NOW + 301), NOW, false)),
        "time_skew"
    );
    assert_eq!(
        code(guard.admit("d:a", &nonce, &sig, None, NOW, false)),
        "bad_request"
    );
    assert_eq!(
        code(guard.admit("d:a", &nonce, &sig, Some(NOW - 10), NOW, false)),
        "fresh"
    );
    assert_eq!(
        code(guard.admit("d:a", &nonce, &sig, Some(NOW - 10), NOW + 5, false)),
        "nonce_replayed"
    );
    // Once its time is out of the window it is forgotten: the time check refuses it then.
    assert_eq!(
        code(guard.admit("d:a", &nonce, &sig, Some(NOW - 10), NOW + 291, false)),
        "time_skew"
    );
}

#[test]
fn an_exactly_once_request_is_answered_again_and_never_applied_twice() {
    let mut guard = guard();
    let (sig, other) = ([1; 32], [2; 32]);
    let nonce = Nonce::Counter(9);
    assert_eq!(
        code(guard.admit("d:a", &nonce, &sig, None, NOW, true)),
        "fresh"
    );
    // Before its effect is durable, a retry waits.
    assert_eq!(
        code(guard.admit("d:a", &nonce, &sig, None, NOW, true)),
        "request_in_progress"
    );
    guard.answered("d:a", &nonce, answer(), NOW);
    match guard.admit("d:a", &nonce, &sig, None, NOW + 3000, true) {
        Admission::Replay(replayed) => {
            assert!(replayed.replayed);
            assert_eq!(replayed.body, answer().body);
        }
        other => panic!("{other:?}"),
    }
    // Another request under the same nonce is not the same request.
    assert_eq!(
        code(guard.admit("d:a", &nonce, &other, None, NOW, true)),
        "nonce_reused"
    );
    // No room for another answer: refused.
    assert_eq!(
        code(guard.admit("d:a", &Nonce::Counter(10), &sig, None, NOW, true)),
        "rate_limited"
    );
    // After the idempotency period the answer is gone, and the counter still refuses it.
    assert_eq!(
        code(guard.admit("d:a", &nonce, &sig, None, NOW + 3601, true)),
        "nonce_replayed"
    );
}
