//! Which identities an ACL rule applies to. A name means nothing without the method that proved
//! it: a password user `ops`, a token subject `ops` and a device `ops` of owner `acme` are three
//! identities. So every rule applies to a set of login methods, written in the rule or implied
//! by it, and a device's name counts only together with its owner.

use serde::Deserialize;
use tern_core::{Identity, Method};

/// A login method as rules name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleMethod {
    /// The password file, by password or SCRAM.
    Password,
    /// JWT bearer tokens.
    Jwt,
    /// Verified client certificates (`use_identity_as_username`).
    Certificate,
    /// Device keys.
    Device,
    /// Keys of the HTTP bridge (signed requests).
    Http,
    /// Names nothing verified (a listener that lets everyone in), and anonymous clients.
    Unverified,
}

impl RuleMethod {
    fn bit(self) -> u8 {
        match self {
            Self::Password => 1,
            Self::Jwt => 2,
            Self::Certificate => 4,
            Self::Device => 8,
            Self::Unverified => 16,
            Self::Http => 32,
        }
    }
}

/// `method = "password"` or `method = ["password", "jwt"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RuleMethods {
    /// One method.
    One(RuleMethod),
    /// Several.
    Many(Vec<RuleMethod>),
}

impl RuleMethods {
    fn set(&self) -> MethodSet {
        let list = match self {
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(many) => many.as_slice(),
        };
        MethodSet(list.iter().fold(0, |bits, m| bits | m.bit()))
    }
}

/// A set of methods, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MethodSet(u8);

impl MethodSet {
    const ALL: Self = Self(63);

    fn contains(self, method: RuleMethod) -> bool {
        self.0 & method.bit() != 0
    }

    fn admits(self, method: Method) -> bool {
        let method = match method {
            Method::Unverified => RuleMethod::Unverified,
            Method::Password => RuleMethod::Password,
            Method::Token => RuleMethod::Jwt,
            Method::Certificate => RuleMethod::Certificate,
            Method::DeviceKey => RuleMethod::Device,
            Method::HttpKey => RuleMethod::Http,
            // Fleet identities have their namespaces by rule (`crate::fleet`), directory users
            // their directory's topics (`crate::directory`): nothing else.
            Method::FleetDevice | Method::FleetOwner | Method::Directory => return false,
        };
        self.contains(method)
    }
}

/// Why a rule cannot be used: it would apply to identities it cannot tell apart, or to none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// `anonymous = true` with a name, owner or method.
    #[error("an anonymous rule applies to clients without a name: drop user, owner and method")]
    AnonymousWithName,
    /// `owner` on a rule for methods other than device keys.
    #[error("owner applies to devices only: use method = \"device\" or leave method out")]
    OwnerWithoutDevices,
    /// `%o` in a rule that cannot apply to a device.
    #[error("%o names a device's owner, but the rule's methods do not include \"device\"")]
    OwnerPlaceholderWithoutDevices,
    /// A device named without its owner: device identifiers are unique only within one owner.
    #[error(
        "a device is named only together with its owner: with method \"device\", a rule with \
         user or %u needs owner = \"...\" or %o in its topic"
    )]
    DeviceWithoutOwner,
    /// An empty method list.
    #[error("method lists no method")]
    NoMethod,
    /// A `%` not followed by `u`, `c`, `o` or `%`.
    #[error("unknown placeholder in topic {0:?} (known: %u, %c, %o, %%)")]
    UnknownPlaceholder(String),
}

/// Who a rule applies to, checked once when the rules are loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    methods: MethodSet,
    user: Option<String>,
    owner: Option<String>,
    anonymous: bool,
}

impl Scope {
    /// The scope of a rule with these fields. Without `method`, a rule that names a device's
    /// owner (`owner`, `%o`) is for device keys; one that names a user (`user`, `%u`) is for
    /// the password file; any other rule is for every client.
    pub(crate) fn new(
        topic: &str,
        user: Option<&str>,
        owner: Option<&str>,
        anonymous: bool,
        method: Option<&RuleMethods>,
    ) -> Result<Self, RuleError> {
        let (names_user, names_owner) = placeholders(topic)?;
        let names_user = names_user || user.is_some();
        let methods = match method {
            Some(methods) => methods.set(),
            None if owner.is_some() || names_owner => MethodSet(RuleMethod::Device.bit()),
            None if names_user => MethodSet(RuleMethod::Password.bit()),
            None => MethodSet::ALL,
        };
        if methods.0 == 0 {
            return Err(RuleError::NoMethod);
        }
        if anonymous && (user.is_some() || owner.is_some() || method.is_some()) {
            return Err(RuleError::AnonymousWithName);
        }
        let devices = methods.contains(RuleMethod::Device);
        if owner.is_some() && methods != MethodSet(RuleMethod::Device.bit()) {
            return Err(RuleError::OwnerWithoutDevices);
        }
        if names_owner && !devices {
            return Err(RuleError::OwnerPlaceholderWithoutDevices);
        }
        if devices && names_user && owner.is_none() && !names_owner {
            return Err(RuleError::DeviceWithoutOwner);
        }
        Ok(Self {
            methods,
            user: user.map(str::to_owned),
            owner: owner.map(str::to_owned),
            anonymous,
        })
    }

    /// Whether the rule applies to `identity`.
    pub(crate) fn applies(&self, identity: &Identity) -> bool {
        let name = identity.username.as_deref();
        if self.anonymous {
            return name.is_none();
        }
        if !self.methods.admits(identity.method) {
            return false;
        }
        if self.owner.is_some() && self.owner.as_deref() != identity.owner.as_deref() {
            return false;
        }
        match &self.user {
            Some(user) => name == Some(user.as_str()),
            None => true,
        }
    }
}

/// Which of `%u` and `%o` a topic uses; an unknown placeholder is an error.
fn placeholders(topic: &str) -> Result<(bool, bool), RuleError> {
    let (mut user, mut owner) = (false, false);
    let mut chars = topic.chars();
    while let Some(ch) = chars.next() {
        if ch != '%' {
            continue;
        }
        match chars.next() {
            Some('u') => user = true,
            Some('o') => owner = true,
            Some('c' | '%') => {}
            _ => return Err(RuleError::UnknownPlaceholder(topic.to_owned())),
        }
    }
    Ok((user, owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(method: Method, name: Option<&str>, owner: Option<&str>) -> Identity {
        Identity {
            method,
            username: name.map(str::to_owned),
            owner: owner.map(str::to_owned),
            ..Identity::default()
        }
    }

    /// Every kind of identity a broker can meet, all carrying the name "ops" (but the
    /// anonymous one), two of them devices of different owners.
    fn everyone() -> Vec<(&'static str, Identity)> {
        vec![
            ("password", identity(Method::Password, Some("ops"), None)),
            ("jwt", identity(Method::Token, Some("ops"), None)),
            (
                "certificate",
                identity(Method::Certificate, Some("ops"), None),
            ),
            (
                "device acme",
                identity(Method::DeviceKey, Some("ops"), Some("acme")),
            ),
            (
                "device globex",
                identity(Method::DeviceKey, Some("ops"), Some("globex")),
            ),
            (
                "unverified",
                identity(Method::Unverified, Some("ops"), None),
            ),
            ("http", identity(Method::HttpKey, Some("ops"), None)),
            ("anonymous", identity(Method::Unverified, None, None)),
        ]
    }

    fn who(scope: &Scope) -> Vec<&'static str> {
        everyone()
            .into_iter()
            .filter(|(_, identity)| scope.applies(identity))
            .map(|(label, _)| label)
            .collect()
    }

    fn scope(topic: &str, user: Option<&str>, owner: Option<&str>, method: &str) -> Scope {
        let method = match method {
            "" => None,
            text => {
                Some(toml_method(text).unwrap_or_else(|| panic!("method {text:?} does not parse")))
            }
        };
        Scope::new(topic, user, owner, false, method.as_ref())
            .unwrap_or_else(|e| panic!("{topic} {user:?} {owner:?}: {e}"))
    }

    fn toml_method(text: &str) -> Option<RuleMethods> {
        #[derive(Deserialize)]
        struct Holder {
            method: RuleMethods,
        }
        serde_json::from_str::<Holder>(&format!("{{\"method\": {text}}}"))
            .ok()
            .map(|h| h.method)
    }

    #[test]
    fn a_name_belongs_to_one_method_and_one_owner() {
        // A user rule is for the password file's user, not for the token, certificate, device
        // or unverified client that carries the same name.
        assert_eq!(who(&scope("t/#", Some("ops"), None, "")), ["password"]);
        assert_eq!(who(&scope("users/%u/#", None, None, "")), ["password"]);
        // Each method names its own.
        for (method, label) in [
            ("\"jwt\"", "jwt"),
            ("\"certificate\"", "certificate"),
            ("\"unverified\"", "unverified"),
            ("\"password\"", "password"),
            ("\"http\"", "http"),
        ] {
            assert_eq!(who(&scope("t/#", Some("ops"), None, method)), [label]);
        }
        // A device is named with its owner: rules with %o (or owner =) are for devices, and a
        // device of one owner never gets the rule written for another's.
        assert_eq!(
            who(&scope("%o/%u/#", None, None, "")),
            ["device acme", "device globex"]
        );
        assert_eq!(
            who(&scope("t/#", Some("ops"), Some("acme"), "")),
            ["device acme"]
        );
        // A list names several methods; a rule without names is for everyone.
        assert_eq!(
            who(&scope("users/%u/#", None, None, "[\"password\", \"jwt\"]")),
            ["password", "jwt"]
        );
        assert_eq!(who(&scope("public/#", None, None, "")).len(), 8);
        assert_eq!(who(&scope("clients/%c/#", None, None, "")).len(), 8);
        assert_eq!(
            who(&scope("public/#", None, None, "\"device\"")),
            ["device acme", "device globex"]
        );
    }

    #[test]
    fn rules_that_cannot_tell_identities_apart_are_refused() {
        let method = |text: &str| toml_method(text);
        let cases = [
            ("devices/%u/#", None, None, method("\"device\""), false),
            ("t/#", Some("ops"), None, method("\"device\""), false),
            ("t/#", None, Some("acme"), method("\"password\""), false),
            ("%o/x", None, None, method("\"password\""), false),
            ("t/%x", None, None, None, false),
            ("t/#", Some("ops"), None, None, true),
            ("t/#", None, None, method("[]"), false),
        ];
        for (topic, user, owner, method, anonymous) in cases {
            assert!(
                Scope::new(topic, user, owner, anonymous, method.as_ref()).is_err(),
                "{topic} {user:?} {owner:?} {method:?} {anonymous}"
            );
        }
    }
}
