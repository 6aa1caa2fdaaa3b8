//! The browser login's pages: a redirect to the provider, the page that
//! shows a new token once, and an error page. Every one is `no-store`,
//! framed by nobody, runs no script and leaks no referrer.

use crate::auth::login::{LoggedIn, LoginError};

/// A page (or redirect) for a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub cookie: Option<String>,
    pub html: String,
}

/// The headers of every page: nothing may keep it (it may hold a token),
/// frame it, run a script in it or learn its address.
pub const HEADERS: [(&str, &str); 5] = [
    ("cache-control", "no-store"),
    ("pragma", "no-cache"),
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

impl Page {
    /// A `303 See Other` to `location`.
    pub fn redirect(location: String) -> Page {
        Page {
            status: 303,
            location: Some(location),
            cookie: None,
            html: String::new(),
        }
    }

    pub fn with_cookie(mut self, cookie: String) -> Page {
        self.cookie = Some(cookie);
        self
    }
}

/// The new token, shown once, with the command that uses it.
pub fn token(done: &LoggedIn, registry: &str) -> Page {
    let groups = match done.groups.is_empty() {
        true => "none".to_owned(),
        false => done.groups.join(", "),
    };
    let command = format!(
        "echo '{}' | docker login {} --username '{}' --password-stdin",
        done.secret, registry, done.user
    );
    let body = format!(
        "<h1>Logged in as {user}</h1>\n\
         <p>Groups: {groups}</p>\n\
         <p>Your access token <b>{name}</b> is valid until {expires}. It is shown only \
         this once: copy it now. Log in with it as <b>{user}</b>; podman, skopeo and \
         containerd take it as the password too.</p>\n\
         <p><code id=\"token\">{secret}</code></p>\n\
         <p>Docker:</p>\n<pre id=\"login-command\">{command}</pre>\n\
         <p>It stops working when it expires, when you are removed at the identity \
         provider, or when your groups no longer give you access.</p>",
        user = escape(&done.user),
        groups = escape(&groups),
        name = escape(&done.token_name),
        expires = escape(&done.expires),
        secret = escape(&done.secret),
        command = escape(&command),
    );
    Page {
        status: 200,
        location: None,
        cookie: None,
        html: document("Your registry token", &body),
    }
}

/// Why the login failed, and a link to start again.
pub fn error(e: &LoginError, start: &str) -> Page {
    let body = format!(
        "<h1>Login failed</h1>\n<p id=\"error\">{}</p>\n<p><a href=\"{}\">Log in again</a></p>",
        escape(&e.to_string()),
        escape(start)
    );
    Page {
        status: e.status(),
        location: None,
        cookie: None,
        html: document("Login failed", &body),
    }
}

fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>portcullis: {title}</title>\
         <style>body{{font-family:sans-serif;max-width:48em;margin:2em auto;padding:0 1em}}\
         code,pre{{background:#eee;padding:.3em;word-break:break-all;white-space:pre-wrap}}</style>\
         </head><body>\n{body}\n</body></html>\n"
    )
}

/// Text for HTML content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_page_escapes_what_the_provider_said() {
        let done = LoggedIn {
            user: "<script>x</script>".into(),
            groups: vec!["a&b".into()],
            token_name: "login.x.abcdef".into(),
            secret: "pcat_0123456789ab_s3cret".into(),
            expires: "2027-01-01T00:00:00Z".into(),
        };
        let p = token(&done, "registry.example.com");
        assert_eq!(p.status, 200);
        assert!(!p.html.contains("<script>"));
        assert!(p.html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(p.html.contains("a&amp;b"));
        assert!(p
            .html
            .contains("<code id=\"token\">pcat_0123456789ab_s3cret</code>"));
        assert!(p
            .html
            .contains("docker login registry.example.com --username &#39;&lt;script&gt;"));
    }
}
