//! Users kept outside the broker, in a directory asked at CONNECT: the mosquitto-go-auth Redis
//! layout, which the `tern-redis-auth` crate reads. Here is what a directory answers
//! ([`DirectoryUser`]), how its password hashes are checked (bcrypt; PBKDF2 in that plugin's
//! form), the login ([`Method::Directory`]) and the permissions its topic patterns give. The
//! login puts the patterns it found into the client's [`Identity`], so its permissions are
//! compiled from them, without asking again, at CONNECT and at every reload.
//!
//! The layout's access kinds map onto Tern's two checks. A PUBLISH needs a write pattern
//! (`wacls`, `rwacls`) that matches its topic. A SUBSCRIBE needs a read pattern (`racls`,
//! `rwacls`) that covers the whole filter, since Tern checks a subscription once instead of
//! each message it delivers; where subscribe patterns (`sacls`) exist for the user, one of them
//! must cover the filter too. `%u` and `%c` are substituted in every pattern. A superuser may
//! do anything. Configured ACL rules do not apply to directory users.
//!
//! A directory that cannot be reached refuses the login with 0x88 Server unavailable (3.1.1:
//! 3): its users are neither let in unchecked nor told their password is wrong.

use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;
use tern_codec::ReasonCode;
use tern_core::{
    Access, AuthDecision, AuthJob, AuthRequest, DirectoryTopics, Identity, Method, Permissions,
};
use tracing::warn;

use crate::acl::{covers, matches, parse, substitute, Level};
use crate::service::AuthService;

/// A directory of users, asked off the broker thread.
pub trait UserDirectory: Send + Sync + fmt::Debug {
    /// `user`'s record (`None`: no such user), from the directory or a recent answer of it.
    /// Blocks: the broker runs it on its blocking threads.
    fn lookup(&self, user: &str) -> Result<Option<Arc<DirectoryUser>>, DirectoryError>;

    /// How the salts of PBKDF2 hashes are written.
    fn salt_encoding(&self) -> SaltEncoding {
        SaltEncoding::Base64
    }
}

/// Why a directory could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DirectoryError(pub String);

/// How the salt of a `PBKDF2$…` hash is written: base64 (the plugin's default) or as is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SaltEncoding {
    /// Standard base64 of the salt bytes.
    #[default]
    Base64,
    /// The salt's bytes as they are.
    Utf8,
}

/// One user as the directory keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The password hash: bcrypt (`$2a$`, `$2b$`, `$2y$`) or `PBKDF2$sha256|sha512$…`.
    pub hash: String,
    /// Its topic patterns, its own and the common ones; the login hands them to the authorizer
    /// in its [`Identity`].
    pub topics: Arc<DirectoryTopics>,
}

/// Whether `password` is the one `hash` was made from.
pub fn verify_directory_hash(hash: &str, password: &[u8], salt: SaltEncoding) -> bool {
    if ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|prefix| hash.starts_with(prefix))
    {
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    verify_pbkdf2(hash, password, salt).unwrap_or(false)
}

/// `PBKDF2$<sha256|sha512>$<iterations>$<salt>$<base64 key>`; `None` when malformed.
fn verify_pbkdf2(hash: &str, password: &[u8], encoding: SaltEncoding) -> Option<bool> {
    let mut parts = hash.split('$');
    if parts.next() != Some("PBKDF2") {
        return None;
    }
    let (algorithm, iterations, salt, key) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let iterations: u32 = iterations.parse().ok().filter(|&n| n > 0)?;
    let salt = match encoding {
        SaltEncoding::Base64 => B64.decode(salt).ok()?,
        SaltEncoding::Utf8 => salt.as_bytes().to_vec(),
    };
    let key = B64.decode(key).ok().filter(|key| !key.is_empty())?;
    let mut derived = vec![0_u8; key.len()];
    match algorithm {
        "sha256" => pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt, iterations, &mut derived),
        "sha512" => pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations, &mut derived),
        _ => return None,
    }
    Some(bool::from(derived.ct_eq(&key)))
}

/// A bcrypt hash that no password given matches, for unknown users to take as long as known
/// ones.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        bcrypt::hash(
            "decoy password for unknown directory users",
            bcrypt::DEFAULT_COST,
        )
        .unwrap_or_default()
    })
}

/// What a directory user may do, from the topics its login found: `None` for a superuser
/// (anything); nothing without them.
pub(crate) fn permissions(identity: &Identity, client_id: &str) -> Option<Box<dyn Permissions>> {
    let username = identity.username.as_deref().unwrap_or_default();
    let empty = DirectoryTopics::default();
    let topics = identity.directory.as_deref().unwrap_or(&empty);
    if topics.superuser {
        return None;
    }
    // A pattern whose substitution would change its shape (a name with `/`, `+` or `#`) is
    // left out: it never grants anything.
    let compile = |patterns: &[String]| -> Vec<Vec<Level>> {
        patterns
            .iter()
            .filter_map(|p| substitute(p, client_id, Some(username), None))
            .map(|p| parse(&p))
            .collect()
    };
    let subscribe = compile(&topics.subscribe);
    Some(Box::new(DirectoryPermissions {
        read: compile(&topics.read),
        write: compile(&topics.write),
        subscribe: (!topics.subscribe.is_empty()).then_some(subscribe),
    }))
}

/// A directory user's patterns, substituted and parsed.
#[derive(Debug)]
struct DirectoryPermissions {
    read: Vec<Vec<Level>>,
    write: Vec<Vec<Level>>,
    subscribe: Option<Vec<Vec<Level>>>,
}

impl Permissions for DirectoryPermissions {
    fn allows(&self, access: Access, topic: &str) -> bool {
        match access {
            Access::Publish => self.write.iter().any(|p| matches(p, topic)),
            Access::Subscribe => {
                let readable = self.read.iter().any(|p| covers(p, topic));
                let subscribable = self
                    .subscribe
                    .as_ref()
                    .is_none_or(|patterns| patterns.iter().any(|p| covers(p, topic)));
                readable && subscribable
            }
        }
    }
}

impl AuthService {
    /// The login of `user`, who is not in the profile's password file, against `directory`:
    /// checked off the broker thread, since it waits on the directory and on the hash.
    pub(crate) fn directory_login(
        &self,
        request: &AuthRequest<'_>,
        directory: &Arc<dyn UserDirectory>,
        user: &str,
    ) -> AuthDecision {
        let directory = Arc::clone(directory);
        let remembered = Arc::clone(&self.directory_logins);
        let password = request.password.unwrap_or_default().to_vec();
        let user = user.to_owned();
        let connection = request.connection.0;
        AuthDecision::Pending(AuthJob::new(move || {
            let record = match directory.lookup(&user) {
                Ok(record) => record,
                Err(error) => {
                    warn!(
                        conn = connection,
                        user = %user,
                        "authentication failed: the user directory did not answer: {error}"
                    );
                    return AuthDecision::Refuse(ReasonCode::ServerUnavailable);
                }
            };
            let logins = || remembered.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(record) = &record {
                // A fleet reconnecting logs in again with the passwords it used: checked
                // against what the directory holds now, without hashing again.
                if logins().knows(&user, &record.hash, &password) {
                    return accepted(user, record);
                }
            }
            let hash = record
                .as_ref()
                .map_or_else(|| decoy_hash(), |r| r.hash.as_str());
            let right = verify_directory_hash(hash, &password, directory.salt_encoding());
            if let Some(record) = record.as_ref().filter(|_| right) {
                logins().remember(&user, &record.hash, &password);
                return accepted(user, record);
            }
            let why = match record {
                Some(_) => "wrong password",
                None => "unknown user",
            };
            warn!(conn = connection, user = %user, "authentication failed: {why} (directory)");
            AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword)
        }))
    }
}

/// What a right password lets a directory user in as.
fn accepted(user: String, record: &DirectoryUser) -> AuthDecision {
    AuthDecision::AcceptAs {
        data: None,
        identity: Identity {
            method: Method::Directory,
            username: Some(user),
            directory: Some(Arc::clone(&record.topics)),
            ..Identity::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PasswordFile, Profile};

    /// A directory of users in memory, or one that cannot be reached.
    #[derive(Debug)]
    struct Users(Option<Vec<(&'static str, DirectoryUser)>>);

    impl UserDirectory for Users {
        fn lookup(&self, user: &str) -> Result<Option<Arc<DirectoryUser>>, DirectoryError> {
            let users = self.0.as_ref().ok_or(DirectoryError("down".to_owned()))?;
            let found = users.iter().find(|(name, _)| *name == user);
            Ok(found.map(|(_, record)| Arc::new(record.clone())))
        }
    }

    fn service_hits(service: &AuthService) -> u64 {
        let logins = service.directory_logins.lock();
        logins.map_or(0, |logins| logins.hits_and_misses().0)
    }

    fn login(service: &mut AuthService, user: &str, password: &[u8]) -> AuthDecision {
        crate::service::tests::decide_as(service, "c", user, password)
    }

    #[test]
    fn logins_are_checked_against_the_directory() {
        let topics = Arc::new(DirectoryTopics {
            write: vec!["/o/%u/#".to_owned()],
            ..DirectoryTopics::default()
        });
        let dev = DirectoryUser {
            hash: bcrypt::hash("pw", 4).unwrap_or_default(),
            topics: Arc::clone(&topics),
        };
        let mut file = PasswordFile::default();
        file.set_password("alice", "file-pw").unwrap_or_default();
        let alice = DirectoryUser {
            hash: bcrypt::hash("redis-pw", 4).unwrap_or_default(),
            ..DirectoryUser::default()
        };
        let users = Users(Some(vec![("dev", dev), ("alice", alice)]));
        let profile = |directory: Users| Profile {
            passwords: Some(Arc::new(file.clone())),
            directory: Some(Arc::new(directory)),
            ..Profile::default()
        };
        let mut service = AuthService::new(vec![profile(users)]);
        match login(&mut service, "dev", b"pw") {
            AuthDecision::AcceptAs { identity, .. } => {
                assert_eq!(identity.method, Method::Directory);
                assert_eq!(identity.username.as_deref(), Some("dev"));
                assert_eq!(identity.directory, Some(topics));
            }
            other => panic!("let in, not {other:?}"),
        }
        let refused = |decision| match decision {
            AuthDecision::Refuse(code) => Some(code),
            _ => None,
        };
        let wrong = Some(ReasonCode::BadUserNameOrPassword);
        assert_eq!(refused(login(&mut service, "dev", b"pW")), wrong);
        // Let in again without hashing: remembered against the hash the directory holds.
        let before = service_hits(&service);
        assert_eq!(refused(login(&mut service, "dev", b"pw")), None);
        assert_eq!(service_hits(&service), before + 1);
        assert_eq!(refused(login(&mut service, "ghost", b"pw")), wrong);
        // A user of the password file is that file's, whatever the directory holds.
        assert_eq!(refused(login(&mut service, "alice", b"redis-pw")), wrong);
        assert_eq!(refused(login(&mut service, "alice", b"file-pw")), None);
        // A directory that does not answer lets nobody of its own in, and says so.
        let mut down = AuthService::new(vec![profile(Users(None))]);
        let unavailable = Some(ReasonCode::ServerUnavailable);
        assert_eq!(refused(login(&mut down, "dev", b"pw")), unavailable);
        assert_eq!(refused(login(&mut down, "alice", b"file-pw")), None);
    }

    fn pbkdf2_hash(algorithm: &str, salt: &[u8], salt_text: &str, password: &[u8]) -> String {
        let mut key = [0_u8; 32];
        match algorithm {
            "sha256" => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, 1000, &mut key),
            _ => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, 1000, &mut key),
        }
        format!("PBKDF2${algorithm}$1000${salt_text}${}", B64.encode(key))
    }

    #[test]
    fn bcrypt_and_pbkdf2_hashes_check_the_password() {
        let bcrypt = bcrypt::hash("s3cret", 4).unwrap_or_default();
        assert!(verify_directory_hash(
            &bcrypt,
            b"s3cret",
            SaltEncoding::Base64
        ));
        assert!(!verify_directory_hash(
            &bcrypt,
            b"s3creT",
            SaltEncoding::Base64
        ));
        // The plugin's other bcrypt prefix.
        let y = bcrypt.replacen("$2b$", "$2y$", 1);
        assert!(verify_directory_hash(&y, b"s3cret", SaltEncoding::Base64));

        let salt = b"pepper-and-salt";
        for algorithm in ["sha256", "sha512"] {
            let hash = pbkdf2_hash(algorithm, salt, &B64.encode(salt), b"pw");
            assert!(verify_directory_hash(&hash, b"pw", SaltEncoding::Base64));
            assert!(!verify_directory_hash(&hash, b"pX", SaltEncoding::Base64));
            // The same hash read with the salt as written: another salt, another key.
            assert!(!verify_directory_hash(&hash, b"pw", SaltEncoding::Utf8));
        }
        let utf8 = pbkdf2_hash("sha512", salt, "pepper-and-salt", b"pw");
        assert!(verify_directory_hash(&utf8, b"pw", SaltEncoding::Utf8));
        for junk in [
            "",
            "plain",
            "PBKDF2$md5$1000$c2FsdA==$a2V5",
            "PBKDF2$sha256$0$c2FsdA==$a2V5",
        ] {
            assert!(
                !verify_directory_hash(junk, b"", SaltEncoding::Base64),
                "{junk}"
            );
        }
    }

    fn user(name: &str, read: &[&str], write: &[&str], subscribe: &[&str]) -> Identity {
        let own = |patterns: &[&str]| patterns.iter().map(|p| (*p).to_owned()).collect();
        let topics = DirectoryTopics {
            superuser: false,
            read: own(read),
            write: own(write),
            subscribe: own(subscribe),
        };
        Identity {
            method: Method::Directory,
            username: Some(name.to_owned()),
            directory: Some(Arc::new(topics)),
            ..Identity::default()
        }
    }

    fn allowed(identity: &Identity, client_id: &str) -> Box<dyn Permissions> {
        permissions(identity, client_id).unwrap_or_else(|| panic!("not a superuser"))
    }

    #[test]
    fn patterns_grant_by_access_kind_with_names_substituted() {
        let patterns = |name| {
            user(
                name,
                &["/owner/%u/#", "/owner/+/status", "clients/%c"],
                &["/owner/%u/#", "out/%c/+"],
                &[],
            )
        };
        let p = allowed(&patterns("dev1"), "dev1-c");
        assert!(p.allows(Access::Publish, "/owner/dev1/status"));
        assert!(p.allows(Access::Publish, "out/dev1-c/x"));
        assert!(!p.allows(Access::Publish, "out/dev2-c/x"));
        assert!(
            !p.allows(Access::Publish, "/owner/dev2/status"),
            "read only"
        );
        assert!(p.allows(Access::Subscribe, "/owner/dev2/status"));
        assert!(p.allows(Access::Subscribe, "/owner/dev1/#"));
        assert!(p.allows(Access::Subscribe, "clients/dev1-c"));
        // A filter wider than every read pattern could receive what none allows.
        assert!(!p.allows(Access::Subscribe, "/owner/#"));
        assert!(!p.allows(Access::Subscribe, "#"));
        assert!(!p.allows(Access::Subscribe, "out/dev1-c/x"), "write only");
        // A name that would widen a pattern is never substituted.
        let sneaky = allowed(&patterns("#"), "c");
        assert!(!sneaky.allows(Access::Subscribe, "/owner/x/y"));
    }

    #[test]
    fn subscribe_patterns_narrow_and_superusers_may_do_anything() {
        let p = allowed(&user("u", &["a/#"], &[], &["a/b/+"]), "c");
        assert!(p.allows(Access::Subscribe, "a/b/c"));
        assert!(
            !p.allows(Access::Subscribe, "a/x"),
            "readable, not subscribable"
        );
        let p = allowed(&user("u", &[], &[], &["z/#"]), "c");
        assert!(
            !p.allows(Access::Subscribe, "z/1"),
            "subscribable, not readable"
        );
        let root = Identity {
            directory: Some(Arc::new(DirectoryTopics {
                superuser: true,
                ..DirectoryTopics::default()
            })),
            ..user("root", &[], &[], &[])
        };
        assert!(permissions(&root, "c").is_none());
        // An identity without its topics may do nothing.
        let bare = Identity {
            directory: None,
            ..root
        };
        let p = allowed(&bare, "c");
        assert!(!p.allows(Access::Publish, "x") && !p.allows(Access::Subscribe, "x"));
    }
}
