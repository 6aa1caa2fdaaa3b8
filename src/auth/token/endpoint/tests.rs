use super::*;
use crate::auth::token::scope::parse_scope;

fn scopes(list: &[&str]) -> Vec<Scope> {
    list.iter().map(|s| parse_scope(s).unwrap()).collect()
}

#[test]
fn get_as_docker_sends_it() {
    let r = parse_get(
        "account=alice&client_id=docker&offline_token=true&service=registry.test\
         &scope=repository%3Ateam%2Fapp%3Apull%2Cpush&scope=repository:base:pull",
    )
    .unwrap();
    assert_eq!(r.grant, Grant::Header);
    assert_eq!(r.service.as_deref(), Some("registry.test"));
    assert_eq!(r.client_id.as_deref(), Some("docker"));
    assert_eq!(r.account.as_deref(), Some("alice"));
    assert!(r.offline);
    assert_eq!(
        r.scopes,
        scopes(&["repository:team/app:pull,push", "repository:base:pull"])
    );
}

#[test]
fn get_for_docker_login_has_no_scope() {
    let r = parse_get("account=alice&client_id=docker&offline_token=true&service=registry.test")
        .unwrap();
    assert!(r.scopes.is_empty());
    let r = parse_get("service=registry.test&scope=").unwrap();
    assert!(r.scopes.is_empty(), "an empty scope asks for nothing");
    assert!(!r.offline);
    let r = parse_get("").unwrap();
    assert_eq!(r.service, None);
}

#[test]
fn get_scope_with_port_and_spaces() {
    let r = parse_get("scope=repository:localhost:5000/a:pull+registry:catalog:*").unwrap();
    assert_eq!(
        r.scopes,
        scopes(&["repository:localhost:5000/a:pull", "registry:catalog:*"])
    );
}

#[test]
fn get_refuses_bad_requests() {
    assert_eq!(
        parse_get("service=a&service=b"),
        Err(EndpointError::Duplicate("service"))
    );
    assert_eq!(
        parse_get("offline_token=maybe"),
        Err(EndpointError::Invalid("offline_token"))
    );
    assert!(matches!(
        parse_get("scope=repository:a"),
        Err(EndpointError::Scope {
            reason: ScopeError::MissingPart,
            ..
        })
    ));
    assert!(matches!(
        parse_get("scope=repository:a:PULL"),
        Err(EndpointError::Scope { .. })
    ));
    assert_eq!(parse_get("service=%ff"), Err(EndpointError::Encoding));
    let e = parse_get("scope=repository:a").unwrap_err();
    assert_eq!(e.status(), 400);
    assert_eq!(e.oauth_code(), "invalid_scope");
}

#[test]
fn post_password_grant() {
    let r = parse_post(
        b"grant_type=password&username=alice&password=p%40ss+word%26more&service=registry.test\
          &client_id=dockerengine&access_type=offline\
          &scope=repository%3Ateam%2Fapp%3Apull%2Cpush+repository%3Abase%3Apull",
    )
    .unwrap();
    assert_eq!(
        r.grant,
        Grant::Password {
            username: "alice".into(),
            password: "p@ss word&more".into()
        }
    );
    assert!(r.offline);
    assert_eq!(r.client_id.as_deref(), Some("dockerengine"));
    assert_eq!(
        r.scopes,
        scopes(&["repository:team/app:pull,push", "repository:base:pull"])
    );
    // the password never shows in Debug output
    let dbg = format!("{r:?}");
    assert!(!dbg.contains("p@ss"), "{dbg}");
}

#[test]
fn post_refresh_grant() {
    let r = parse_post(
        b"grant_type=refresh_token&refresh_token=eyJ.x.y&service=registry.test&client_id=docker\
          &scope=repository:team/app:pull",
    )
    .unwrap();
    assert_eq!(r.grant, Grant::RefreshToken("eyJ.x.y".into()));
    assert!(!r.offline);
    assert_eq!(r.scopes, scopes(&["repository:team/app:pull"]));
    assert!(!format!("{r:?}").contains("eyJ"));
}

#[test]
fn post_refuses_bad_requests() {
    use EndpointError as E;
    let cases: [(&[u8], E); 9] = [
        (b"username=a&password=b", E::Missing("grant_type")),
        (b"grant_type=password&password=b", E::Missing("username")),
        (b"grant_type=password&username=a", E::Missing("password")),
        (b"grant_type=refresh_token", E::Missing("refresh_token")),
        (
            b"grant_type=refresh_token&refresh_token=",
            E::Missing("refresh_token"),
        ),
        (b"grant_type=client_credentials", E::UnsupportedGrant),
        (
            b"grant_type=password&username=a&username=b&password=c",
            E::Duplicate("username"),
        ),
        (
            b"grant_type=password&username=a&password=c&access_type=forever",
            E::Invalid("access_type"),
        ),
        (
            b"grant_type=password&username=a&password=%C3%28",
            E::Encoding,
        ),
    ];
    for (body, want) in cases {
        assert_eq!(
            parse_post(body),
            Err(want),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let big = vec![b'a'; MAX_FORM_BODY + 1];
    assert_eq!(parse_post(&big), Err(EndpointError::TooLarge));
    assert_eq!(
        parse_post(b"grant_type=implicit").unwrap_err().oauth_code(),
        "unsupported_grant_type"
    );
}

#[test]
fn error_body_is_oauth_with_docker_details() {
    let e = EndpointError::Missing("grant_type");
    let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
    assert_eq!(v["error"], "invalid_request");
    assert_eq!(v["error_description"], "missing parameter grant_type");
    assert_eq!(v["details"], v["error_description"]);
    // client input in a description is JSON-escaped
    let e = parse_get("scope=repository:\"}x:pull").unwrap_err();
    let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
    assert_eq!(v["error"], "invalid_scope");
}

#[test]
fn response_fields() {
    let issued = Issued {
        token: "secret-token".into(),
        expires_in: 300,
        issued_at: "2024-01-02T03:04:05Z".into(),
        expires_at: 0,
        jti: "j".into(),
    };
    let r = TokenResponse::new(issued.clone(), None);
    assert_eq!(
        r.to_json(),
        r#"{"token":"secret-token","access_token":"secret-token","expires_in":300,"issued_at":"2024-01-02T03:04:05Z"}"#
    );
    let granted: Vec<Access> = vec![
        parse_scope("repository:a:pull").unwrap().into(),
        Access::granted(&parse_scope("repository:b:push").unwrap(), vec![]),
    ];
    let r = TokenResponse::new(issued, Some("ref".into())).with_scope(&granted);
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["refresh_token"], "ref");
    assert_eq!(v["scope"], "repository:a:pull");
    assert!(!format!("{r:?}").contains("secret-token"));
}

#[test]
fn challenges() {
    assert_eq!(
        bearer_challenge("https://r.test/token", "registry.test", None, None),
        r#"Bearer realm="https://r.test/token",service="registry.test""#
    );
    assert_eq!(
        bearer_challenge(
            "https://r.test/token",
            "registry.test",
            Some("repository:a:pull,push"),
            Some("insufficient_scope")
        ),
        r#"Bearer realm="https://r.test/token",service="registry.test",scope="repository:a:pull,push",error="insufficient_scope""#
    );
    assert_eq!(
        bearer_challenge("a\"b", "s\\", None, None),
        r#"Bearer realm="a\"b",service="s\\""#
    );
}
