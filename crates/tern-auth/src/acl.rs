//! Access control lists: ordered allow/deny rules over topic filters with `%u` (user name),
//! `%c` (client identifier) and `%o` (device owner) substituted, compiled once per connection
//! into [`CompiledAcl`], which the core asks on every PUBLISH and SUBSCRIBE. Which identities a
//! rule applies to (by login method, name and owner) is [`crate::scope`]'s.
//!
//! Semantics: the first rule that applies decides; if none does, the answer is no. For a
//! PUBLISH a rule applies when its filter matches the topic. For a SUBSCRIBE an allow rule
//! applies when its filter covers the requested one (every topic the subscription could
//! receive is allowed), and a deny rule applies when the two overlap (the subscription could
//! receive a denied topic), so a deny carved out of a wider allow cannot be subscribed around.

use serde::Deserialize;
use tern_core::fleet::FleetTopics;
use tern_core::{Access, Authorizer, Identity, Method, Permissions, Principal};

use crate::scope::{RuleError, RuleMethods, Scope};

/// Whether a rule lets the client in or keeps it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The rule grants access.
    #[default]
    Allow,
    /// The rule refuses access.
    Deny,
}

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuleAccess {
    /// PUBLISH (and the will).
    Publish,
    /// SUBSCRIBE.
    Subscribe,
    /// Both.
    #[default]
    Both,
}

impl RuleAccess {
    fn covers(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Self::Both, _)
                | (Self::Publish, Access::Publish)
                | (Self::Subscribe, Access::Subscribe)
        )
    }
}

/// One ACL rule as written in the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Allow (default) or deny.
    #[serde(default)]
    pub action: Action,
    /// Publish, subscribe or both (default).
    #[serde(default)]
    pub access: RuleAccess,
    /// The topic filter, with `%u`, `%c` and `%o` substituted per client.
    pub topic: String,
    /// Only for this name (of the rule's methods); every client when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Only for clients without a user name (anonymous), when true.
    #[serde(default)]
    pub anonymous: bool,
    /// The login methods the rule applies to; when absent, implied by the rule (see
    /// [`crate::scope`]).
    #[serde(default)]
    pub method: Option<RuleMethods>,
    /// Only for devices of this owner.
    #[serde(default)]
    pub owner: Option<String>,
}

/// A rule that cannot be used, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ACL rule {index} (topic {topic:?}): {reason}")]
pub struct AclError {
    /// 1-based position among all rules.
    pub index: usize,
    /// Its topic.
    pub topic: String,
    /// What is wrong.
    pub reason: RuleError,
}

/// One level of a compiled filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Level {
    Literal(Box<str>),
    /// `+`
    One,
    /// `#`
    Rest,
}

/// A rule with its substitutions done, ready to match.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CompiledRule {
    allow: bool,
    access: RuleAccess,
    levels: Vec<Level>,
}

/// The rules for one connection, plus the topics its credential restricts it to (a JWT claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledAcl {
    rules: Vec<CompiledRule>,
    restriction: Option<Vec<Vec<Level>>>,
    /// Whether the rules are configured ones (or a fleet identity's), which decide about the
    /// device fleet's namespaces; without, only a credential's restriction narrows an open
    /// broker, and the fleet's namespaces stay closed to the client.
    configured: bool,
}

impl CompiledAcl {
    /// Permissions that allow these filters and nothing else.
    pub(crate) fn allowing<'a>(filters: impl Iterator<Item = (RuleAccess, &'a str)>) -> Self {
        let rules = filters
            .map(|(access, filter)| CompiledRule {
                allow: true,
                access,
                levels: parse(filter),
            })
            .collect();
        Self {
            rules,
            restriction: None,
            configured: true,
        }
    }
}

impl Permissions for CompiledAcl {
    fn allows(&self, access: Access, topic: &str) -> bool {
        if let Some(allowed) = &self.restriction {
            let inside = allowed.iter().any(|levels| match access {
                Access::Publish => matches(levels, topic),
                Access::Subscribe => covers(levels, topic),
            });
            if !inside {
                return false;
            }
        }
        // Most rules differ from the topic at the first level: compare that before walking.
        let first = topic.split('/').next().unwrap_or_default();
        let wild_first = first == "+" || first == "#";
        for rule in &self.rules {
            if !rule.access.covers(access) {
                continue;
            }
            if let Some(Level::Literal(literal)) = rule.levels.first() {
                if !wild_first && **literal != *first {
                    continue;
                }
            }
            let applies = match (access, rule.allow) {
                (Access::Publish, _) => matches(&rule.levels, topic),
                (Access::Subscribe, true) => covers(&rule.levels, topic),
                (Access::Subscribe, false) => overlaps(&rule.levels, topic),
            };
            if applies {
                return rule.allow;
            }
        }
        false
    }

    fn opens_fleet(&self) -> bool {
        self.configured
    }
}

/// The configured rules; an [`Authorizer`] that compiles them per connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<(Rule, Scope)>,
    /// Whether rules are in force at all: without any, everything is allowed (unless a
    /// credential restricts its own topics).
    enabled: bool,
    /// Where the device fleet's namespaces are (its identities get them by rule, not by the
    /// rules here).
    fleet: FleetTopics,
}

impl Acl {
    /// Rules in force, in order. An empty list denies everything; use [`Acl::allow_all`] for
    /// no access control. A rule that could not tell apart the identities it names (a device
    /// without its owner, say) or that could never apply is refused.
    pub fn new(rules: Vec<Rule>) -> Result<Self, AclError> {
        let mut scoped = Vec::with_capacity(rules.len());
        for (index, rule) in rules.into_iter().enumerate() {
            let scope = Scope::new(
                &rule.topic,
                rule.user.as_deref(),
                rule.owner.as_deref(),
                rule.anonymous,
                rule.method.as_ref(),
            )
            .map_err(|reason| AclError {
                index: index + 1,
                topic: rule.topic.clone(),
                reason,
            })?;
            scoped.push((rule, scope));
        }
        Ok(Self {
            rules: scoped,
            enabled: true,
            fleet: FleetTopics::default(),
        })
    }

    /// No access control (credentials may still restrict their own topics).
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// The same rules, with the device fleet's topics under `fleet`.
    pub fn with_fleet_topics(mut self, fleet: FleetTopics) -> Self {
        self.fleet = fleet;
        self
    }

    /// The rules that apply to a client, with its names substituted (for a fleet identity, its
    /// namespaces alone).
    pub fn compile(&self, client_id: &str, identity: &Identity) -> CompiledAcl {
        if let Some(fleet) = crate::fleet::permissions(&self.fleet, identity) {
            return fleet;
        }
        let username = identity.username.as_deref();
        let owner = identity.owner.as_deref();
        let mut rules = Vec::new();
        if !self.enabled {
            rules.push(CompiledRule {
                allow: true,
                access: RuleAccess::Both,
                levels: vec![Level::Rest],
            });
        }
        for (rule, scope) in &self.rules {
            if !scope.applies(identity) {
                continue;
            }
            // A rule whose substitution is impossible (no owner) or would change the shape of
            // the filter (a name with `/`, `+` or `#`) is left out: it never grants anything.
            let Some(topic) = substitute(&rule.topic, client_id, username, owner) else {
                continue;
            };
            rules.push(CompiledRule {
                allow: rule.action == Action::Allow,
                access: rule.access,
                levels: parse(&topic),
            });
        }
        let restriction = identity
            .topics
            .as_ref()
            .map(|filters| filters.iter().map(|f| parse(f)).collect());
        CompiledAcl {
            rules,
            restriction,
            configured: self.enabled,
        }
    }
}

impl Authorizer for Acl {
    fn permissions(&mut self, principal: &Principal<'_>) -> Option<Box<dyn Permissions>> {
        let identity = principal.identity;
        if identity.method == Method::Directory {
            let client_id = principal.client_id.as_str();
            return crate::directory::permissions(identity, client_id);
        }
        let fleet = matches!(identity.method, Method::FleetDevice | Method::FleetOwner);
        if !self.enabled && identity.topics.is_none() && !fleet {
            return None;
        }
        Some(Box::new(
            self.compile(principal.client_id.as_str(), identity),
        ))
    }
}

pub(crate) fn substitute(
    topic: &str,
    client_id: &str,
    username: Option<&str>,
    owner: Option<&str>,
) -> Option<String> {
    if !topic.contains('%') {
        return Some(topic.to_owned());
    }
    let safe = |value: &str| !value.is_empty() && !value.contains(['/', '+', '#']);
    let mut out = String::with_capacity(topic.len() + 16);
    let mut chars = topic.chars();
    while let Some(ch) = chars.next() {
        if ch != '%' {
            out.push(ch);
            continue;
        }
        let value = match chars.next() {
            Some('u') => username?,
            Some('c') => client_id,
            Some('o') => owner?,
            Some('%') => "%",
            _ => return None,
        };
        if value != "%" && !safe(value) {
            return None;
        }
        out.push_str(value);
    }
    Some(out)
}

pub(crate) fn parse(filter: &str) -> Vec<Level> {
    filter
        .split('/')
        .map(|level| match level {
            "+" => Level::One,
            "#" => Level::Rest,
            literal => Level::Literal(literal.into()),
        })
        .collect()
}

/// Whether the topic name `topic` matches `filter` (wildcards at the first level do not match
/// `$` topics, as in subscriptions).
pub(crate) fn matches(filter: &[Level], topic: &str) -> bool {
    let mut levels = topic.split('/');
    for (index, want) in filter.iter().enumerate() {
        if index == 0 && topic.starts_with('$') && !matches!(want, Level::Literal(_)) {
            return false;
        }
        match want {
            Level::Rest => return true,
            Level::One => {
                if levels.next().is_none() {
                    return false;
                }
            }
            Level::Literal(literal) => {
                if levels.next() != Some(&**literal) {
                    return false;
                }
            }
        }
    }
    levels.next().is_none()
}

/// Whether every topic that `requested` (a subscription filter) matches is matched by `rule`.
pub(crate) fn covers(rule: &[Level], requested: &str) -> bool {
    let mut levels = requested.split('/');
    for (index, want) in rule.iter().enumerate() {
        let level = levels.next();
        if index == 0
            && requested.starts_with('$')
            && !matches!(want, Level::Literal(_))
            && level != Some("#")
        {
            return false;
        }
        match (want, level) {
            (Level::Rest, _) => return true,
            (_, None) | (_, Some("#")) => return false,
            (Level::One, Some(_)) => {}
            (Level::Literal(_), Some("+")) => return false,
            (Level::Literal(literal), Some(level)) => {
                if level != &**literal {
                    return false;
                }
            }
        }
    }
    levels.next().is_none()
}

/// Whether some topic is matched by both `rule` and `requested`.
fn overlaps(rule: &[Level], requested: &str) -> bool {
    let mut levels = requested.split('/');
    for want in rule {
        match (want, levels.next()) {
            (Level::Rest, _) | (_, Some("#")) => return true,
            (_, None) => return false,
            (Level::One, Some(_)) | (Level::Literal(_), Some("+")) => {}
            (Level::Literal(literal), Some(level)) => {
                if level != &**literal {
                    return false;
                }
            }
        }
    }
    match levels.next() {
        None => true,
        Some("#") => levels.next().is_none(),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_core::Method;

    fn rule(action: Action, access: RuleAccess, topic: &str, user: Option<&str>) -> Rule {
        Rule {
            action,
            access,
            topic: topic.to_owned(),
            user: user.map(str::to_owned),
            ..Rule::default()
        }
    }

    fn acl(rules: Vec<Rule>) -> Acl {
        Acl::new(rules).unwrap_or_else(|e| panic!("{e}"))
    }

    fn user(name: &str) -> Identity {
        Identity {
            method: Method::Password,
            username: Some(name.to_owned()),
            ..Identity::default()
        }
    }

    fn device(name: &str, owner: &str) -> Identity {
        Identity {
            method: Method::DeviceKey,
            owner: Some(owner.to_owned()),
            ..user(name)
        }
    }

    #[test]
    fn matching_covering_and_overlapping() {
        let f = parse("a/+/c");
        assert!(matches(&f, "a/b/c"));
        assert!(!matches(&f, "a/b/c/d"));
        assert!(!matches(&f, "a/b"));
        assert!(matches(&parse("a/#"), "a"));
        assert!(matches(&parse("a/#"), "a/b/c"));
        assert!(!matches(&parse("#"), "$SYS/x"));
        assert!(matches(&parse("$SYS/#"), "$SYS/x"));

        assert!(covers(&parse("a/#"), "a/+/c"));
        assert!(covers(&parse("a/+"), "a/b"));
        assert!(covers(&parse("a/+"), "a/+"));
        assert!(!covers(&parse("a/+"), "a/#"));
        assert!(!covers(&parse("a/b"), "a/+"));
        assert!(!covers(&parse("a/#"), "#"));
        assert!(covers(&parse("#"), "#"));
        assert!(!covers(&parse("#"), "$SYS/#"));

        assert!(overlaps(&parse("a/secret"), "a/#"));
        assert!(overlaps(&parse("a/secret"), "+/secret"));
        assert!(overlaps(&parse("a/+"), "a/b"));
        assert!(!overlaps(&parse("a/secret"), "a/public"));
        assert!(!overlaps(&parse("a/b/c"), "a/b"));
        assert!(overlaps(&parse("a/b"), "a/b/#"));
    }

    #[test]
    fn first_applicable_rule_decides_and_default_is_deny() {
        let acl = acl(vec![
            rule(Action::Deny, RuleAccess::Both, "a/secret", None),
            rule(Action::Allow, RuleAccess::Both, "a/#", None),
        ]);
        let p = acl.compile("c", &user("u"));
        assert!(p.allows(Access::Publish, "a/open"));
        assert!(!p.allows(Access::Publish, "a/secret"));
        assert!(!p.allows(Access::Subscribe, "a/#"));
        assert!(p.allows(Access::Subscribe, "a/+/x"));
        assert!(!p.allows(Access::Publish, "b"));
    }

    #[test]
    fn substitution_and_principal_selection() {
        let acl = acl(vec![
            rule(
                Action::Allow,
                RuleAccess::Publish,
                "devices/%o/%u/%c/#",
                None,
            ),
            rule(Action::Allow, RuleAccess::Subscribe, "%o/shared/#", None),
            rule(Action::Allow, RuleAccess::Both, "admin/#", Some("root")),
            rule(Action::Allow, RuleAccess::Publish, "users/%u/%c/#", None),
        ]);
        let p = acl.compile("cid", &device("dev1", "acme"));
        assert!(p.allows(Access::Publish, "devices/acme/dev1/cid/t"));
        assert!(!p.allows(Access::Publish, "devices/acme/dev2/cid/t"));
        assert!(!p.allows(Access::Subscribe, "devices/acme/dev1/cid/t"));
        assert!(p.allows(Access::Subscribe, "acme/shared/#"));
        assert!(!p.allows(Access::Subscribe, "other/shared/#"));
        assert!(!p.allows(Access::Publish, "admin/x"));
        // A device is not a user of the same name.
        assert!(!p.allows(Access::Publish, "users/dev1/cid/t"));
        // No owner: %o rules are left out. No user name: %u rules too.
        let anon = acl.compile("cid", &Identity::default());
        assert!(!anon.allows(Access::Subscribe, "acme/shared/x"));
        assert!(!anon.allows(Access::Publish, "users//cid/t"));
        // A user name that would widen the filter is never substituted.
        let sneaky = acl.compile("cid", &user("+"));
        assert!(!sneaky.allows(Access::Publish, "users/x/cid/t"));
        assert!(acl
            .compile("c", &user("root"))
            .allows(Access::Subscribe, "admin/#"));
        assert!(acl
            .compile("cid", &user("dev1"))
            .allows(Access::Publish, "users/dev1/cid/t"));
    }

    #[test]
    fn anonymous_rules_apply_only_without_a_user_name() {
        let mut public = rule(Action::Allow, RuleAccess::Subscribe, "public/#", None);
        public.anonymous = true;
        let acl = acl(vec![public]);
        let anon = acl.compile("c", &Identity::default());
        assert!(anon.allows(Access::Subscribe, "public/x"));
        assert!(!anon.allows(Access::Publish, "public/x"));
        let named = acl.compile("c", &user("u"));
        assert!(!named.allows(Access::Subscribe, "public/x"));
        // An empty rule list denies everything.
        assert!(!Acl::new(Vec::new())
            .map(|acl| acl.compile("c", &user("u")).allows(Access::Publish, "x"))
            .unwrap_or(true));
    }

    #[test]
    fn credential_restrictions_narrow_the_rules() {
        let acl = Acl::allow_all();
        let token = Identity {
            topics: Some(vec!["telemetry/#".to_owned()]),
            ..user("u")
        };
        let p = acl.compile("c", &token);
        assert!(p.allows(Access::Publish, "telemetry/x"));
        assert!(!p.allows(Access::Publish, "commands/x"));
        assert!(p.allows(Access::Subscribe, "telemetry/+"));
        assert!(!p.allows(Access::Subscribe, "#"));
        // A restriction narrows an open broker: it opens nothing of the device fleet.
        assert!(!p.opens_fleet());
        let rules = self::acl(vec![rule(Action::Allow, RuleAccess::Both, "#", None)]);
        assert!(rules.compile("c", &token).opens_fleet());
    }
}
