//! [`TestIssuer`]: an identity provider for JWT tests: an ES256 key, its JWKS served over HTTP on
//! `127.0.0.1:0`, and tokens signed with it (JWS compact form, built by hand with `ring` so the
//! test does not share code with the relay's validator).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use std::sync::Arc;

/// A signing key and the JWKS server publishing it.
pub struct TestIssuer {
    key: Arc<EcdsaKeyPair>,
    url: String,
    _server: tokio::task::JoinHandle<()>,
}

const KID: &str = "e2e-key-1";

fn new_key() -> anyhow::Result<EcdsaKeyPair> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("generating an ES256 key failed"))?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("loading the ES256 key failed"))
}

fn sign(key: &EcdsaKeyPair, kid: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": kid});
    let signing_input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let signature = key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .expect("ES256 signing");
    format!("{signing_input}.{}", B64.encode(signature.as_ref()))
}

impl TestIssuer {
    /// Generates a key and serves its JWKS.
    pub async fn start() -> anyhow::Result<TestIssuer> {
        let key = Arc::new(new_key()?);
        // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = key.public_key().as_ref().to_vec();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": KID,
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
        }]});
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(TestIssuer {
            key,
            url,
            _server: server,
        })
    }

    /// The issuer (`iss`) of its tokens.
    pub fn issuer(&self) -> String {
        self.url.clone()
    }

    /// Where its JWKS is served.
    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.url)
    }

    /// A token for `audience` expiring `ttl_secs` from now (negative: already expired).
    pub fn token(&self, audience: &str, ttl_secs: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        sign(
            &self.key,
            KID,
            &serde_json::json!({
                "iss": self.url, "aud": audience, "sub": "e2e-user",
                "iat": now, "exp": now + ttl_secs,
            }),
        )
    }

    /// A well-formed token from `issuer` signed by a key the JWKS does not hold (same `kid`).
    pub fn foreign_token(issuer: &str, audience: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let key = new_key().expect("foreign key");
        sign(
            &key,
            KID,
            &serde_json::json!({"iss": issuer, "aud": audience, "exp": now + 300}),
        )
    }
}
