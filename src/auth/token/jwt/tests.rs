use super::*;
use crate::auth::token::keys::{KeySettings, KEY_FILE};
use crate::auth::token::scope::parse_scope;
use jsonwebtoken::EncodingKey;
use std::path::Path;

const ISS: &str = "portcullis-test";
const SVC: &str = "registry.test";
const LIFE: Duration = Duration::from_secs(300);

fn keys(dir: &Path, alg: Algorithm) -> KeySet {
    KeySet::load(&KeySettings {
        algorithm: alg,
        ..KeySettings::new(dir)
    })
    .unwrap()
}

fn issuer_in(dir: &Path) -> TokenIssuer {
    TokenIssuer::new(keys(dir, Algorithm::ES256), ISS, SVC, LIFE)
}

fn setup() -> (tempfile::TempDir, TokenIssuer) {
    let dir = tempfile::tempdir().unwrap();
    let t = issuer_in(&dir.path().join("a"));
    (dir, t)
}

/// A token of `t`'s usual claims under `header`, signed with `key`.
fn forge(header: &Header, t: &TokenIssuer, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, &claims(t), key).unwrap()
}

/// Asserts that `t` refuses `token` for its algorithm.
#[track_caller]
fn assert_alg_refused(t: &TokenIssuer, token: &str, case: &str) {
    assert_eq!(t.verify(token), Err(TokenError::Algorithm), "{case}");
}

/// `t`'s verdict on `claims` signed with its own key.
fn verify_signed(t: &TokenIssuer, claims: &Claims) -> Result<Claims, TokenError> {
    t.verify(&t.sign(claims).unwrap())
}

fn access(s: &str) -> Vec<Access> {
    vec![parse_scope(s).unwrap().into()]
}

/// An access token of `t` for `user` with one `scope`.
fn token_for(t: &TokenIssuer, user: &str, scope: &str) -> String {
    t.issue(user, access(scope), LIFE).unwrap().token
}

/// Claims as `issue` would make them, for tests that need odd values.
fn claims(t: &TokenIssuer) -> Claims {
    let now = unix_now_ms() / 1000;
    Claims {
        iss: t.issuer.clone(),
        sub: "alice".into(),
        aud: t.service.clone(),
        exp: now + 300,
        nbf: now,
        iat: now,
        jti: new_jti(),
        access: access("repository:team/app:pull,push"),
        token_use: None,
        groups: Vec::new(),
        cfp: None,
        tid: None,
        iat_ms: None,
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

#[test]
fn issues_tokens_registry2_can_read() {
    let (_d, t) = setup();
    let issued = t
        .issue("alice", access("repository:team/app:pull,push"), LIFE)
        .unwrap();
    assert_eq!(issued.expires_in, 300);
    assert_eq!(issued.issued_at.len(), "2024-01-01T00:00:00Z".len());
    let p = parts(&issued.token);
    let header: serde_json::Value = serde_json::from_slice(&unb64(&p[0])).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], t.keys().signing().kid());
    let x5c = header["x5c"][0].as_str().unwrap();
    let cert = base64::engine::general_purpose::STANDARD
        .decode(x5c)
        .unwrap();
    assert_eq!(cert, t.keys().signing().cert_der());
    // ES256 signatures are raw r||s, 64 bytes, as libtrust checks
    assert_eq!(unb64(&p[2]).len(), 64);
    let body: serde_json::Value = serde_json::from_slice(&unb64(&p[1])).unwrap();
    for claim in ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"] {
        assert!(body.get(claim).is_some(), "claim {claim}");
    }
    assert!(body.get("token_use").is_none());
    assert_eq!(
        body["access"],
        serde_json::json!([{"type":"repository","name":"team/app","actions":["pull","push"]}])
    );
    let c = t.verify(&issued.token).unwrap();
    assert_eq!(
        (c.iss.as_str(), c.aud.as_str(), c.sub.as_str()),
        (ISS, SVC, "alice")
    );
    assert_eq!(c.exp - c.iat, 300);
    assert_eq!(c.jti, issued.jti);
    // without x5c the kid alone identifies the key
    let t = t.with_x5c(false);
    let token = t.issue("alice", vec![], LIFE).unwrap().token;
    let header: serde_json::Value = serde_json::from_slice(&unb64(&parts(&token)[0])).unwrap();
    assert!(header.get("x5c").is_none());
    assert!(t.verify(&token).is_ok());
}

#[test]
fn lifetimes_have_a_floor() {
    let (_d, t) = setup();
    let issued = t.issue("alice", vec![], Duration::ZERO).unwrap();
    let min = MIN_LIFETIME.as_secs();
    assert!(min > 0);
    assert_eq!(issued.expires_in, min);
    let c = t.verify(&issued.token).unwrap();
    assert_eq!(c.exp - c.iat, min);
    assert!(c.access.is_empty(), "docker login: a token without access");
}

#[test]
fn refuses_alg_none() {
    let (_d, t) = setup();
    let body = b64(&serde_json::to_vec(&claims(&t)).unwrap());
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#.to_owned(),
        r#"{"alg":"None","typ":"JWT"}"#.to_owned(),
        format!(r#"{{"alg":"none","kid":"{}"}}"#, t.keys().signing().kid()),
    ] {
        for sig in ["", "AAAA"] {
            let token = format!("{}.{body}.{sig}", b64(header.as_bytes()));
            assert_alg_refused(&t, &token, &format!("{header} {sig:?}"));
        }
    }
}

#[test]
fn refuses_hs256_keyed_with_the_public_key() {
    let (_d, t) = setup();
    let signing = t.keys().signing();
    let cert_pem = std::fs::read(t.keys().cert_path()).unwrap();
    let spki = signing.public().spki_der().to_vec();
    let point = spki[spki.len() - 65..].to_vec();
    let spki_pem = crate::auth::token::files::pem_encode("PUBLIC KEY", &spki);
    let secrets: Vec<Vec<u8>> = vec![
        spki,
        point,
        cert_pem,
        spki_pem.into_bytes(),
        signing.cert_der().to_vec(),
    ];
    for (i, secret) in secrets.iter().enumerate() {
        for alg in [
            jsonwebtoken::Algorithm::HS256,
            jsonwebtoken::Algorithm::HS384,
            jsonwebtoken::Algorithm::HS512,
        ] {
            for kid in [None, Some(signing.kid().to_owned())] {
                let mut h = Header::new(alg);
                h.kid = kid;
                let token = forge(&h, &t, &EncodingKey::from_secret(secret));
                assert_alg_refused(&t, &token, &format!("secret {i} {alg:?}"));
            }
        }
    }
}

#[test]
fn refuses_another_algorithm_for_a_key() {
    // an EdDSA key's token must not be checked against our ES256 key
    let dir = tempfile::tempdir().unwrap();
    let t = issuer_in(&dir.path().join("a"));
    let ed = TokenIssuer::new(
        keys(&dir.path().join("ed"), Algorithm::EdDSA),
        ISS,
        SVC,
        LIFE,
    );
    let mut h = Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = Some(t.keys().signing().kid().to_owned());
    let token = forge(&h, &t, ed.keys().signing().encoding());
    assert_eq!(t.verify(&token), Err(TokenError::Algorithm));
    // and an algorithm we never accept
    let token = format!(
        "{}.{}.AAAA",
        b64(br#"{"alg":"ES512"}"#),
        b64(&serde_json::to_vec(&claims(&t)).unwrap())
    );
    assert_eq!(t.verify(&token), Err(TokenError::Algorithm));
}

#[test]
fn refuses_a_token_of_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let t = issuer_in(&dir.path().join("a"));
    let other = issuer_in(&dir.path().join("b"));
    let token = other.issue("alice", vec![], LIFE).unwrap().token;
    assert_eq!(t.verify(&token), Err(TokenError::UnknownKey));
    // claiming our kid does not help
    let mut h = Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some(t.keys().signing().kid().to_owned());
    let token = forge(&h, &t, other.keys().signing().encoding());
    assert_eq!(t.verify(&token), Err(TokenError::BadSignature));
    // nor does leaving kid out
    let h = Header::new(jsonwebtoken::Algorithm::ES256);
    let token = forge(&h, &t, other.keys().signing().encoding());
    assert_eq!(t.verify(&token), Err(TokenError::BadSignature));
    // but our own key without a kid is found by trying
    let token = forge(&h, &t, t.keys().signing().encoding());
    assert!(t.verify(&token).is_ok());
}

#[test]
fn rotation_keeps_old_tokens_valid() {
    let dir = tempfile::tempdir().unwrap();
    let old = issuer_in(&dir.path().join("old"));
    let old_token = old.issue("alice", vec![], LIFE).unwrap().token;
    let old_refresh = old.issue_refresh("alice", LIFE).unwrap();
    let new_keys = KeySet::load(&KeySettings {
        extra_verification_keys: vec![old.keys().cert_path().to_owned()],
        ..KeySettings::new(dir.path().join("new"))
    })
    .unwrap();
    let new = TokenIssuer::new(new_keys, ISS, SVC, LIFE);
    assert_ne!(new.keys().signing().kid(), old.keys().signing().kid());
    assert!(new.verify(&old_token).is_ok());
    assert_eq!(new.verify_refresh(&old_refresh).unwrap(), "alice");
    // and without the old key they are refused
    std::fs::remove_file(dir.path().join("old").join(KEY_FILE)).unwrap();
    let fresh = issuer_in(&dir.path().join("old"));
    assert_eq!(fresh.verify(&old_token), Err(TokenError::UnknownKey));
}

#[test]
fn refuses_expired_and_not_yet_valid() {
    let (_d, t) = setup();
    let now = unix_now_ms() / 1000;
    let expired = Claims {
        exp: now - 120,
        nbf: now - 500,
        iat: now - 500,
        ..claims(&t)
    };
    assert_eq!(verify_signed(&t, &expired), Err(TokenError::Expired));
    let future = Claims {
        nbf: now + 120,
        iat: now + 120,
        exp: now + 600,
        ..claims(&t)
    };
    assert_eq!(verify_signed(&t, &future), Err(TokenError::NotYetValid));
    // within the leeway both are fine
    let skewed = Claims {
        exp: now - 10,
        nbf: now - 500,
        ..claims(&t)
    };
    assert!(verify_signed(&t, &skewed).is_ok());
    let skewed = Claims {
        nbf: now + 10,
        ..claims(&t)
    };
    assert!(verify_signed(&t, &skewed).is_ok());
}

#[test]
fn refuses_wrong_audience_and_issuer() {
    let (_d, t) = setup();
    let aud = Claims {
        aud: "other-registry".into(),
        ..claims(&t)
    };
    assert_eq!(verify_signed(&t, &aud), Err(TokenError::WrongAudience));
    let iss = Claims {
        iss: "someone-else".into(),
        ..claims(&t)
    };
    assert_eq!(verify_signed(&t, &iss), Err(TokenError::WrongIssuer));
    // an audience list is not what distribution 2.8 writes: refused
    let mut v = serde_json::to_value(claims(&t)).unwrap();
    v["aud"] = serde_json::json!([SVC]);
    let h = Header::new(jsonwebtoken::Algorithm::ES256);
    let token = jsonwebtoken::encode(&h, &v, t.keys().signing().encoding()).unwrap();
    assert_eq!(t.verify(&token), Err(TokenError::Malformed));
    // missing claims
    let mut v = serde_json::to_value(claims(&t)).unwrap();
    v.as_object_mut().unwrap().remove("nbf");
    let token = jsonwebtoken::encode(&h, &v, t.keys().signing().encoding()).unwrap();
    assert!(t.verify(&token).is_err());
}

#[test]
fn refuses_tampered_claims() {
    let (_d, t) = setup();
    let token = token_for(&t, "bob", "repository:bob/app:pull");
    let p = parts(&token);
    // the body changed under the original header and signature
    let tampered = |claim: &str, value: serde_json::Value| {
        let mut body: serde_json::Value = serde_json::from_slice(&unb64(&p[1])).unwrap();
        body[claim] = value;
        let body = b64(&serde_json::to_vec(&body).unwrap());
        format!("{}.{body}.{}", p[0], p[2])
    };
    let push = serde_json::json!([{"type":"repository","name":"team/app","actions":["push"]}]);
    for forged in [tampered("access", push), tampered("sub", "admin".into())] {
        assert_eq!(t.verify(&forged), Err(TokenError::BadSignature));
    }
    // a header swapped (x5c dropped) breaks the signature too
    let header = format!(
        r#"{{"typ":"JWT","alg":"ES256","kid":"{}"}}"#,
        t.keys().signing().kid()
    );
    let forged = format!("{}.{}.{}", b64(header.as_bytes()), p[1], p[2]);
    assert_eq!(t.verify(&forged), Err(TokenError::BadSignature));
    // a flipped signature bit
    let mut sig = unb64(&p[2]);
    sig[10] ^= 1;
    let forged = format!("{}.{}.{}", p[0], p[1], b64(&sig));
    assert_eq!(t.verify(&forged), Err(TokenError::BadSignature));
}

#[test]
fn refuses_garbage() {
    let (_d, t) = setup();
    for g in [
        "",
        "a",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "..",
        "\u{0}.\u{0}.\u{0}",
    ] {
        assert_eq!(t.verify(g), Err(TokenError::Malformed), "{g:?}");
    }
    let token = t.issue("alice", vec![], LIFE).unwrap().token;
    let long = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN));
    assert_eq!(t.verify(&long), Err(TokenError::Malformed));
}

#[test]
fn refresh_and_access_tokens_do_not_mix() {
    let (_d, t) = setup();
    let refresh = t.issue_refresh("alice", Duration::from_secs(3600)).unwrap();
    assert_eq!(t.verify_refresh(&refresh).unwrap(), "alice");
    assert_eq!(t.verify(&refresh), Err(TokenError::RefreshAsAccess));
    let access = token_for(&t, "alice", "repository:team/app:pull");
    assert_eq!(t.verify_refresh(&access), Err(TokenError::AccessAsRefresh));
    // registry:2 checks aud == service: the refresh audience differs
    let body: serde_json::Value = serde_json::from_slice(&unb64(&parts(&refresh)[1])).unwrap();
    assert_eq!(body["aud"], format!("{SVC}#refresh"));
    assert_eq!(body["token_use"], "refresh");
    // a token_use claim alone (with the service audience) is not an access token either
    let odd = Claims {
        token_use: Some("refresh".into()),
        ..claims(&t)
    };
    let odd = t.sign(&odd).unwrap();
    assert_eq!(t.verify(&odd), Err(TokenError::RefreshAsAccess));
    // nor is a refresh audience without token_use a refresh token
    let odd = Claims {
        aud: t.refresh_audience(),
        ..claims(&t)
    };
    let odd = t.sign(&odd).unwrap();
    assert_eq!(t.verify_refresh(&odd), Err(TokenError::AccessAsRefresh));
    assert_eq!(t.verify(&odd), Err(TokenError::RefreshAsAccess));
    // a refresh token of another service
    let other = Claims {
        aud: "other#refresh".into(),
        token_use: Some("refresh".into()),
        ..claims(&t)
    };
    let other = t.sign(&other).unwrap();
    assert_eq!(t.verify_refresh(&other), Err(TokenError::WrongAudience));
    // expired refresh tokens are refused
    let now = unix_now_ms() / 1000;
    let old = Claims {
        aud: t.refresh_audience(),
        token_use: Some("refresh".into()),
        exp: now - 3600,
        nbf: now - 7200,
        ..claims(&t)
    };
    assert_eq!(
        t.verify_refresh(&t.sign(&old).unwrap()),
        Err(TokenError::Expired)
    );
}

#[test]
fn covers_only_what_was_granted() {
    let (_d, t) = setup();
    let token = token_for(&t, "alice", "repository:team/app:pull");
    let c = t.verify(&token).unwrap();
    assert!(covers(&c, "team/app", "pull"));
    assert!(!covers(&c, "team/app", "push"), "another action");
    assert!(!covers(&c, "team/other", "pull"), "another repository");
    assert!(!covers(&c, "team/app/x", "pull"), "no prefix match");
    assert!(!covers(&c, "team", "pull"));
    assert!(!covers_catalog(&c));
    let mut all = access("repository:team/app:*");
    all.extend(access("registry:catalog:*"));
    all.extend(access("repository(plugin):plug:pull"));
    let c = t
        .verify(&t.issue("alice", all, LIFE).unwrap().token)
        .unwrap();
    assert!(covers(&c, "team/app", "delete"));
    assert!(covers_catalog(&c));
    assert!(
        covers(&c, "plug", "pull"),
        "class ignored, as registry:2 does"
    );
    assert!(
        !covers_resource(&c, "registry", "team/app", "pull"),
        "type matters"
    );
    // refresh claims never cover anything
    let refresh = Claims {
        token_use: Some("refresh".into()),
        ..c
    };
    assert!(!covers(&refresh, "team/app", "pull"));
}

#[test]
fn rsa_and_ed25519_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let ed = TokenIssuer::new(
        keys(&dir.path().join("ed"), Algorithm::EdDSA),
        ISS,
        SVC,
        LIFE,
    );
    let token = ed.issue("alice", vec![], LIFE).unwrap().token;
    assert!(ed.verify(&token).is_ok());
    let key = dir.path().join("rsa.pem");
    std::fs::write(&key, include_str!("../testdata/rsa-test-key.pem")).unwrap();
    let rsa_keys = KeySet::load(&KeySettings {
        signing_key: Some(key),
        algorithm: Algorithm::RS256,
        ..KeySettings::new(dir.path().join("rsa"))
    })
    .unwrap();
    let rsa = TokenIssuer::new(rsa_keys, ISS, SVC, LIFE);
    let token = rsa.issue("alice", vec![], LIFE).unwrap().token;
    let header: serde_json::Value = serde_json::from_slice(&unb64(&parts(&token)[0])).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert!(rsa.verify(&token).is_ok());
    assert_eq!(ed.verify(&token), Err(TokenError::Algorithm));
}

#[test]
fn rfc3339_dates() {
    for (t, want) in [
        (0, "1970-01-01T00:00:00Z"),
        (1_415_387_015, "2014-11-07T19:03:35Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (4_102_444_799, "2099-12-31T23:59:59Z"),
        (253_402_300_799, "9999-12-31T23:59:59Z"),
    ] {
        assert_eq!(rfc3339(t), want);
    }
}
