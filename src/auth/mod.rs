//! Token extraction, verification, keys and the identity forwarded upstream.
//!
//! Nothing here knows pingora: functions take `&http::HeaderMap`, `&str` and
//! plain structs, so the hot path can be tested and benchmarked alone.

pub mod api_key;
pub mod assertion;
pub mod claims;
pub mod conditions;
pub mod error;
pub mod external;
pub mod extract;
pub mod identity;
pub mod issue;
pub mod keys;
pub mod policy;
pub mod verify;

pub use claims::AccessClaims;
pub use error::AuthError;
pub use extract::extract_bearer;
pub use identity::{IdentityHeaders, IdentityName};
pub use keys::{KeyError, Keyring, SigningKey};
pub use policy::Requirement;
pub use verify::{VerifiedToken, Verifier};

/// The clock (`crate::clock`), under the name the integration tests and
/// benchmarks have long used.
pub use crate::clock::unix_now;
