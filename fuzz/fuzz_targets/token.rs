//! Tokens into the real `Verifier`, under two configurations: the app's
//! (`JWT_SECRET`, HS256, with `JWT_ISSUER` and `JWT_AUDIENCE` required) and
//! an RS256 one (`JWT_PUBLIC_KEY_FILE=tests/api/keys/rsa_public.pem`, the RSA
//! family's algorithms, no issuer or audience).
//!
//! The input is structured: either any string as a token, any bytes as the
//! `Authorization` header of a request through the router, or claims that
//! this target signs (with the right key, a wrong one, the RSA public key
//! as an HMAC secret, an EC key, or `alg: none`) and then maybe tampers with.
//! RSA-signed tokens carry one of a few fixed claim sets, signed once: RSA
//! signing would otherwise take most of the time.
//!
//! The oracle: a verifier accepts a token only if this target signed exactly
//! that string with the verifier's own key and an allowed algorithm, and the
//! claims pass the contract's rules (worked out here independently); it then
//! yields the user, admin flag and expiry those claims say. Every signed
//! token that should pass does pass. A header through the router gives 200
//! exactly for `Bearer <such a token>` (the scheme in any case, whitespace
//! around the token aside), else 401.

#![no_main]

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderValue, Request};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use presence::auth::{Caller, KeySource, Verifier};
use presence_fuzz::{App, SECRET, START_MS, clock, serve_config};
use serde_json::{Map, Number, Value, json};

const ISSUER: &str = "presence-fuzz-issuer";
const AUDIENCE: &str = "presence-fuzz-audience";
const LEEWAY_S: i64 = 30;
const NOW_S: i64 = START_MS / 1000;

const RSA_PUBLIC_PEM: &[u8] = include_bytes!("../../tests/api/keys/rsa_public.pem");
const RSA_PRIVATE_PEM: &[u8] = include_bytes!("../../tests/api/keys/rsa_private.pem");
const EC_PRIVATE_PEM: &[u8] = include_bytes!("../../tests/api/keys/ec_private.pem");

/// The app, whose own verifier is the HS256 one.
static APP: LazyLock<App> =
    LazyLock::new(|| App::new(&["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE]));

/// The RS256 verifier, as `JWT_PUBLIC_KEY_FILE` configures it.
static RSA: LazyLock<Verifier> = LazyLock::new(|| {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/api/keys/rsa_public.pem"
    );
    let config = serve_config(&["--jwt-public-key-file", path]);
    let keys = KeySource::load(&config.args.jwt).expect("RSA key");
    let cache_bytes = u64::from(config.args.token_cache_mb) << 20;
    Verifier::new(&keys, &config.args.jwt, clock(), cache_bytes).expect("RSA verifier")
});

static RSA_KEY: LazyLock<EncodingKey> =
    LazyLock::new(|| EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM).expect("RSA private key"));
static EC_KEY: LazyLock<EncodingKey> =
    LazyLock::new(|| EncodingKey::from_ec_pem(EC_PRIVATE_PEM).expect("EC private key"));

/// RSA signing takes milliseconds under coverage instrumentation (it was
/// most of this target's time), so RSA-signed tokens carry one of these
/// claim sets, each signed once per algorithm and process; fuzzed claims go
/// through the HMAC signers, into both verifiers.
static RSA_CLAIMS: LazyLock<Vec<Map<String, Value>>> = LazyLock::new(|| {
    let claims = [
        json!({"sub": "42", "exp": NOW_S + 3600}),
        json!({"sub": "7", "exp": NOW_S + 3600, "role": "admin"}),
        json!({"sub": 42, "exp": NOW_S + 60, "roles": ["user", "admin"]}),
        json!({"sub": null, "userId": "u-1", "exp": NOW_S + 3600, "iss": "x", "aud": ["y"]}),
        json!({"sub": "42", "exp": NOW_S - LEEWAY_S - 1}),
        json!({"sub": "42", "exp": NOW_S - LEEWAY_S}),
        json!({"sub": "42", "exp": NOW_S + 3600, "nbf": NOW_S + LEEWAY_S + 1}),
        json!({"sub": "42"}),
        json!({"sub": "x".repeat(129), "exp": NOW_S + 3600}),
        json!({"sub": "42", "exp": NOW_S as f64 + 100.9}),
    ];
    claims
        .into_iter()
        .map(|c| c.as_object().expect("an object").clone())
        .collect()
});

static RSA_SIGNED: LazyLock<Mutex<HashMap<(u8, usize), String>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Every enum's first variant (what bytes of zeros, or running out of
/// bytes, give) is the usual case, so the fuzzer starts from valid tokens
/// and mutates outwards.
#[derive(Debug, Arbitrary)]
enum Input {
    /// A token signed here, straight into both verifiers.
    Signed(Signed),
    /// A header value `prefix`, then maybe a signed token, then `suffix`,
    /// as the `Authorization` header of `GET /api/stats/modules`.
    Header {
        prefix: Prefix,
        token: TokenPart,
        suffix: Vec<u8>,
    },
    /// Any string as a token.
    Raw(String),
}

#[derive(Debug, Arbitrary)]
enum TokenPart {
    Signed(Signed),
    Nothing,
}

#[derive(Debug, Arbitrary)]
enum Prefix {
    Bearer,
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Signed {
    signer: Signer,
    claims: Claims,
    tamper: Tamper,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Hmac {
    HS256,
    HS384,
    HS512,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Rsa {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
}

#[derive(Debug, Arbitrary)]
enum Signer {
    /// The app's secret.
    Secret(Hmac),
    /// Another HMAC key (the app's secret, should the fuzzer find it, counts
    /// as the app's).
    OtherSecret(Hmac, Vec<u8>),
    /// The private key of the RS verifier's public key, over one of
    /// [`RSA_CLAIMS`] (the fuzzed claims are not used).
    Rsa(Rsa, u8),
    /// Algorithm confusion: the RSA public key's PEM text as an HMAC secret.
    RsaPublicAsSecret(Hmac),
    /// ES256 with a key neither verifier trusts.
    Ec,
    /// `alg: none`, with no signature or with the app-secret HS256 one.
    None { copy_signature: bool },
}

#[derive(Debug, Arbitrary)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    /// `x` repeated, to reach length limits.
    Long(u16),
    /// The value the verifier looks for in this claim: the issuer, the
    /// audience, or the admin role.
    Expected,
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// One claim.
#[derive(Debug, Arbitrary)]
enum Claim {
    /// What a valid token of the product's backend has (for some claims,
    /// nothing).
    Usual,
    Absent,
    Value(Json),
}

/// A time claim.
#[derive(Debug, Arbitrary)]
enum Time {
    /// An hour from now for `exp`, a minute ago for `nbf`.
    Usual,
    Absent,
    /// Seconds from now.
    Relative(i32),
    Value(Json),
}

#[derive(Debug, Arbitrary)]
struct Claims {
    sub: Claim,
    user_id: Claim,
    id: Claim,
    exp: Time,
    nbf: Time,
    iss: Claim,
    aud: Claim,
    role: Claim,
    roles: Claim,
    other: Vec<(String, Json)>,
}

#[derive(Debug, Arbitrary)]
enum Tamper {
    None,
    Flip {
        at: u16,
        mask: u8,
    },
    Truncate(u16),
    Insert {
        at: u16,
        byte: u8,
    },
    Append(Vec<u8>),
    /// Replace segment `which % 3` with these bytes.
    Segment {
        which: u8,
        with: Vec<u8>,
    },
    /// Replace the header with this JSON text, base64url-encoded.
    HeaderJson(String),
}

impl Json {
    fn value(&self, expected: &str) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Int(n) => Value::from(*n),
            Self::UInt(n) => Value::from(*n),
            Self::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Self::Str(s) => Value::String(s.clone()),
            Self::Long(n) => Value::String("x".repeat(usize::from(*n % 300))),
            Self::Expected => Value::String(expected.to_owned()),
            Self::Array(items) => Value::Array(items.iter().map(|j| j.value(expected)).collect()),
            Self::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, j)| (k.clone(), j.value(expected)))
                    .collect(),
            ),
        }
    }
}

impl Claim {
    /// The value, given the usual one and the one the verifier looks for.
    fn value(&self, usual: Option<&str>, expected: &str) -> Option<Value> {
        match self {
            Self::Usual => usual.map(Value::from),
            Self::Absent => None,
            Self::Value(j) => Some(j.value(expected)),
        }
    }
}

impl Time {
    fn value(&self, usual: i64) -> Option<Value> {
        match self {
            Self::Usual => Some(Value::from(NOW_S + usual)),
            Self::Absent => None,
            Self::Relative(s) => Some(Value::from(NOW_S + i64::from(*s))),
            Self::Value(j) => Some(j.value("")),
        }
    }
}

impl Claims {
    fn value(&self) -> Map<String, Value> {
        let mut map: Map<String, Value> = self
            .other
            .iter()
            .map(|(k, j)| (k.clone(), j.value("")))
            .collect();
        let mut set = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                map.insert(name.to_owned(), value);
            }
        };
        set("sub", self.sub.value(Some("42"), ""));
        set("userId", self.user_id.value(None, ""));
        set("id", self.id.value(None, ""));
        set("exp", self.exp.value(3600));
        set("nbf", self.nbf.value(-60));
        set("iss", self.iss.value(Some(ISSUER), ISSUER));
        set("aud", self.aud.value(Some(AUDIENCE), AUDIENCE));
        set("role", self.role.value(None, "admin"));
        set("roles", self.roles.value(None, "admin"));
        map
    }
}

impl Hmac {
    fn algorithm(self) -> Algorithm {
        match self {
            Self::HS256 => Algorithm::HS256,
            Self::HS384 => Algorithm::HS384,
            Self::HS512 => Algorithm::HS512,
        }
    }
}

impl Rsa {
    fn algorithm(self) -> Algorithm {
        match self {
            Self::RS256 => Algorithm::RS256,
            Self::RS384 => Algorithm::RS384,
            Self::RS512 => Algorithm::RS512,
            Self::PS256 => Algorithm::PS256,
            Self::PS384 => Algorithm::PS384,
            Self::PS512 => Algorithm::PS512,
        }
    }
}

/// Which verifier would trust a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// The app's: the secret with HS256.
    App,
    /// The RS verifier's: the RSA key with an RSA-family algorithm.
    Rsa,
    Nobody,
}

fn sign(alg: Algorithm, claims: &Map<String, Value>, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("sign")
}

impl Signer {
    /// The token, and who should trust it.
    fn sign(&self, claims: &Map<String, Value>) -> (String, Trust) {
        let hmac = |alg: Hmac, secret: &[u8]| {
            let key = EncodingKey::from_secret(secret).expect("HMAC key");
            let trust = if secret == SECRET.as_bytes() && matches!(alg, Hmac::HS256) {
                Trust::App
            } else {
                Trust::Nobody
            };
            (sign(alg.algorithm(), claims, &key), trust)
        };
        match self {
            Self::Secret(alg) => hmac(*alg, SECRET.as_bytes()),
            // An empty HMAC key is refused by the signing library.
            Self::OtherSecret(alg, secret) if !secret.is_empty() => hmac(*alg, secret),
            Self::OtherSecret(alg, _) => hmac(*alg, b"another secret"),
            Self::RsaPublicAsSecret(alg) => hmac(*alg, RSA_PUBLIC_PEM),
            Self::Rsa(alg, which) => {
                let which = usize::from(*which) % RSA_CLAIMS.len();
                let mut cache = RSA_SIGNED.lock().expect("cache");
                let token = cache
                    .entry((*alg as u8, which))
                    .or_insert_with(|| sign(alg.algorithm(), &RSA_CLAIMS[which], &RSA_KEY))
                    .clone();
                (token, Trust::Rsa)
            }
            Self::Ec => (sign(Algorithm::ES256, claims, &EC_KEY), Trust::Nobody),
            Self::None { copy_signature } => {
                let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
                let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims"));
                let signature = if *copy_signature {
                    let (token, _) = hmac(Hmac::HS256, SECRET.as_bytes());
                    token.rsplit('.').next().unwrap_or_default().to_owned()
                } else {
                    String::new()
                };
                (format!("{header}.{payload}.{signature}"), Trust::Nobody)
            }
        }
    }
}

impl Tamper {
    fn apply(&self, token: &str) -> String {
        let mut bytes = token.as_bytes().to_vec();
        let at = |i: u16, len: usize| usize::from(i) % (len + 1);
        match self {
            Self::None => {}
            Self::Flip { at: i, mask } => {
                if !bytes.is_empty() {
                    let i = usize::from(*i) % bytes.len();
                    bytes[i] ^= mask;
                }
            }
            Self::Truncate(i) => bytes.truncate(at(*i, bytes.len())),
            Self::Insert { at: i, byte } => bytes.insert(at(*i, bytes.len()), *byte),
            Self::Append(more) => bytes.extend_from_slice(more),
            Self::Segment { which, with } => {
                let mut parts: Vec<Vec<u8>> =
                    token.split('.').map(|p| p.as_bytes().to_vec()).collect();
                let i = usize::from(*which) % parts.len();
                parts[i].clone_from(with);
                bytes = parts.join(&b'.');
            }
            Self::HeaderJson(json) => {
                let rest = token.split_once('.').map_or("", |(_, rest)| rest);
                bytes = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(json)).into_bytes();
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A JWT NumericDate as the contract reads it: whole seconds, fractions
/// dropped, out-of-range values clamped; anything but a number is refused.
fn numeric_date(value: &Value) -> Option<i64> {
    let n = value.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    if n.as_u64().is_some() {
        return Some(i64::MAX);
    }
    let f = n.as_f64()?;
    Some(if f >= 9.223_372_036_854_775_807e18 {
        i64::MAX
    } else if f <= -9.223_372_036_854_775_808e18 {
        i64::MIN
    } else {
        f.trunc() as i64
    })
}

/// `value` is `expected`, or an array of strings holding it.
fn names(value: Option<&Value>, expected: &str) -> bool {
    match value {
        Some(Value::String(s)) => s == expected,
        Some(Value::Array(items)) => {
            items.iter().all(Value::is_string) && items.iter().any(|v| v == expected)
        }
        _ => false,
    }
}

/// The caller the contract makes of `claims` for a verifier that requires
/// (or not) the issuer and audience; `None` when it refuses them.
fn model(claims: &Map<String, Value>, require_iss_aud: bool) -> Option<Caller> {
    if require_iss_aud && !(names(claims.get("iss"), ISSUER) && names(claims.get("aud"), AUDIENCE))
    {
        return None;
    }
    // A claim that is a JSON array or object where a string or number is
    // expected makes the token malformed to the JWT library.
    for name in ["exp", "nbf", "sub"] {
        if claims
            .get(name)
            .is_some_and(|v| v.is_array() || v.is_object())
        {
            return None;
        }
    }
    let exp = numeric_date(claims.get("exp")?)?;
    if NOW_S > exp.saturating_add(LEEWAY_S) {
        return None;
    }
    if let Some(nbf) = claims.get("nbf") {
        if NOW_S < numeric_date(nbf)?.saturating_sub(LEEWAY_S) {
            return None;
        }
    }
    let user = ["sub", "userId", "id"]
        .iter()
        .find_map(|name| claims.get(*name).filter(|v| !v.is_null()))?;
    let user = match user {
        Value::String(s) if (1..=128).contains(&s.len()) => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => return None,
    };
    let admin = claims.get("role").and_then(Value::as_str) == Some("admin")
        || claims
            .get("roles")
            .and_then(Value::as_array)
            .is_some_and(|roles| roles.iter().any(|r| r.as_str() == Some("admin")));
    let profile = presence::domain::Profile::build(
        ["name", "picture"]
            .into_iter()
            .filter_map(|c| claims.get(c).and_then(Value::as_str).map(|v| (c, v))),
    );
    Some(Caller {
        user: presence::domain::UserId::parse(&user)?,
        admin,
        expires_at: Some(exp.saturating_add(LEEWAY_S).saturating_mul(1000)),
        profile,
        hidden: claims.get("presence_hidden") == Some(&Value::Bool(true)),
        scope: presence::auth::Scope::from_claim(claims.get("presence_scope")),
    })
}

/// A signed (maybe tampered) token and what each verifier must make of the
/// token as signed.
struct Case {
    /// As sent.
    token: String,
    /// As signed.
    minted: String,
    app: Option<Caller>,
    rsa: Option<Caller>,
}

impl Case {
    /// What the app's verifier must make of `token`: only the token as
    /// signed can pass.
    fn app(&self, token: &str) -> Option<&Caller> {
        self.app.as_ref().filter(|_| token == self.minted)
    }

    /// What the RS verifier must make of `token`.
    fn rsa(&self, token: &str) -> Option<&Caller> {
        self.rsa.as_ref().filter(|_| token == self.minted)
    }
}

impl Signed {
    fn case(&self) -> Case {
        let claims = match self.signer {
            Signer::Rsa(_, which) => RSA_CLAIMS[usize::from(which) % RSA_CLAIMS.len()].clone(),
            _ => self.claims.value(),
        };
        let (minted, trust) = self.signer.sign(&claims);
        let token = self.tamper.apply(&minted);
        // Judge the claims as the verifier will read them: floats may not
        // survive a JSON round trip bit for bit, and claims nested deeper
        // than the JSON parser's limit are not read at all.
        let claims: Option<Map<String, Value>> =
            serde_json::from_str(&serde_json::to_string(&claims).expect("claims")).ok();
        let judge = |trusted: bool, require_iss_aud: bool| {
            model(claims.as_ref().filter(|_| trusted)?, require_iss_aud)
        };
        Case {
            app: judge(trust == Trust::App, true),
            rsa: judge(trust == Trust::Rsa, false),
            token,
            minted,
        }
    }
}

/// The token of an `Authorization` header value, as the contract reads it:
/// visible ASCII, `<scheme> <token>` with the scheme `Bearer` in any case,
/// whitespace around the token dropped.
fn bearer_token(value: &[u8]) -> Option<&str> {
    if !value.iter().all(|&b| (32..127).contains(&b) || b == b'\t') {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn check(verifier: &Verifier, name: &str, token: &str, expected: Option<&Caller>) {
    match (verifier.verify(token), expected) {
        (Ok(caller), Some(expected)) => {
            assert_eq!(&caller, expected, "{name} verifier read the claims wrong");
        }
        (Ok(caller), None) => {
            panic!("{name} verifier accepted a token it must refuse: {caller:?} from {token:?}")
        }
        (Err(e), Some(expected)) => {
            panic!("{name} verifier refused a valid token ({e}) for {expected:?}: {token:?}")
        }
        (Err(_), None) => {}
    }
}

fuzz_target!(|input: Input| {
    let app = &*APP;
    match input {
        Input::Raw(token) => {
            check(&app.state.verifier, "app", &token, None);
            check(&RSA, "RSA", &token, None);
        }
        Input::Signed(signed) => {
            let case = signed.case();
            check(
                &app.state.verifier,
                "app",
                &case.token,
                case.app(&case.token),
            );
            check(&RSA, "RSA", &case.token, case.rsa(&case.token));
        }
        Input::Header {
            prefix,
            token,
            suffix,
        } => {
            let case = match token {
                TokenPart::Signed(t) => Some(t.case()),
                TokenPart::Nothing => None,
            };
            let mut value = match &prefix {
                Prefix::Bearer => b"Bearer ".to_vec(),
                Prefix::Raw(bytes) => bytes.clone(),
            };
            if let Some(case) = &case {
                value.extend_from_slice(case.token.as_bytes());
            }
            value.extend_from_slice(&suffix);
            let Ok(header) = HeaderValue::from_bytes(&value) else {
                return;
            };
            let request = Request::get("/api/stats/modules")
                .header(AUTHORIZATION, header)
                .body(Body::empty())
                .expect("request");
            let reply = app.send(request);
            let valid = bearer_token(&value)
                .is_some_and(|token| case.as_ref().is_some_and(|c| c.app(token).is_some()));
            if valid {
                assert_eq!(reply.status, 200, "refused {value:?}");
            } else {
                assert_eq!(reply.status, 401, "accepted {value:?}");
            }
        }
    }
});
