//! The per-PUBLISH authorisation check: a connection's compiled ACL (ten rules, the matching
//! one last) asked about a 3-level topic, and the same for a SUBSCRIBE filter.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tern_auth::{Acl, Action, Rule, RuleAccess};
use tern_core::{Access, Identity, Method, Permissions};

fn rules() -> Vec<Rule> {
    let mut rules: Vec<Rule> = (0..9)
        .map(|i| Rule {
            action: Action::Allow,
            access: RuleAccess::Both,
            topic: format!("other{i}/%o/%u/#"),
            ..Rule::default()
        })
        .collect();
    rules.push(Rule {
        action: Action::Allow,
        access: RuleAccess::Both,
        topic: "%o/%u/#".to_owned(),
        ..Rule::default()
    });
    rules
}

fn bench(c: &mut Criterion) {
    let device = Identity {
        method: Method::DeviceKey,
        username: Some("sensor42".to_owned()),
        owner: Some("site".to_owned()),
        ..Identity::default()
    };
    let Ok(acl) = Acl::new(rules()) else {
        panic!("the rules are valid");
    };
    let acl = acl.compile("client-1", &device);
    let mut group = c.benchmark_group("acl_10_rules");
    group.bench_function("publish_allowed", |b| {
        b.iter(|| acl.allows(Access::Publish, black_box("site/sensor42/temp")))
    });
    group.bench_function("publish_denied", |b| {
        b.iter(|| acl.allows(Access::Publish, black_box("site/sensor43/temp")))
    });
    group.bench_function("subscribe_allowed", |b| {
        b.iter(|| acl.allows(Access::Subscribe, black_box("site/sensor42/+")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
