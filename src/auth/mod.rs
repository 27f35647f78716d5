//! Who is calling, without any HTTP: key material, token verification and
//! its cache, and minting.
//!
//! - [`keys`]: [`KeySource`], what the configuration says the keys are,
//!   loaded when the service state is built.
//! - [`verify`]: [`Verifier`] checks a token against them and yields the
//!   [`Caller`], or an [`AuthError`] (every one a 401 to the HTTP layer).
//! - `cache`: tokens verified before, remembered until they expire.
//! - [`mint`](mod@mint): tokens for `presence token`, and [`DemoKeys`] for
//!   demo mode.
//!
//! The extractors that make a handler require a user or an admin live with
//! the HTTP layer (`http::extract`); this module can be built and tested
//! from plain configuration.

mod cache;
pub mod keys;
pub mod mint;
pub mod verify;

pub use keys::{KeySource, PublicKeyKind, Secret};
pub use mint::{DemoKeys, MintError, mint};
pub use verify::{AuthError, Caller, MAX_TOKEN_BYTES, Scope, Verifier};
