//! What an access token may be used for: `PATTERN:ACTIONS` scopes, such as
//! `team/**:pull,push`, and `catalog` for the registry-wide listing.
//! A token never grants more than its scopes, whatever its owner's rules.

use globset::{GlobBuilder, GlobMatcher};

use crate::registry::route::Action;

/// The compiled scopes of one token.
#[derive(Debug, Clone)]
pub struct Restriction {
    scopes: Vec<(GlobMatcher, Vec<Action>)>,
    catalog: bool,
    /// The scopes as written (what two restrictions are compared by).
    source: Vec<String>,
}

impl PartialEq for Restriction {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Restriction {}

impl Restriction {
    /// Parses scopes as `token create --scope` and the token file write
    /// them. Repository patterns are globs as in `[[access]]`: `*` within
    /// one path component, `**` across them.
    pub fn parse(scopes: &[String]) -> Result<Restriction, String> {
        let mut r = Restriction {
            scopes: Vec::new(),
            catalog: false,
            source: scopes.to_vec(),
        };
        if scopes.is_empty() {
            return Err("a token needs at least one scope".into());
        }
        for s in scopes {
            if s == "catalog" {
                r.catalog = true;
                continue;
            }
            let (pattern, actions) = s.rsplit_once(':').ok_or_else(|| {
                format!("scope {s:?}: expected PATTERN:ACTIONS (e.g. team/**:pull,push) or catalog")
            })?;
            if pattern.is_empty() {
                return Err(format!("scope {s:?}: empty repository pattern"));
            }
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("scope {s:?}: {e}"))?
                .compile_matcher();
            let mut list = Vec::new();
            for a in actions.split(',') {
                let more: &[Action] = match a.trim() {
                    "pull" => &[Action::Pull],
                    "push" => &[Action::Push],
                    "delete" => &[Action::Delete],
                    "*" => &[Action::Pull, Action::Push, Action::Delete],
                    other => {
                        return Err(format!(
                        "scope {s:?}: unknown action {other:?} (expected pull, push, delete or *)"
                    ))
                    }
                };
                list.extend_from_slice(more);
            }
            r.scopes.push((glob, list));
        }
        Ok(r)
    }

    /// Whether the scopes cover `action` on `repo` (`None`: registry-wide,
    /// the catalog).
    pub fn allows(&self, repo: Option<&str>, action: Action) -> bool {
        match repo {
            None => action == Action::Catalog && self.catalog,
            Some(name) => self
                .scopes
                .iter()
                .any(|(glob, actions)| actions.contains(&action) && glob.is_match(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(scopes: &[&str]) -> Restriction {
        Restriction::parse(&scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn scopes_cover_their_patterns_and_actions_only() {
        let t = r(&["team/**:pull,push", "public/*:pull"]);
        assert!(t.allows(Some("team/a/b"), Action::Push));
        assert!(t.allows(Some("team/app"), Action::Pull));
        assert!(!t.allows(Some("team/app"), Action::Delete));
        assert!(t.allows(Some("public/base"), Action::Pull));
        assert!(
            !t.allows(Some("public/x/y"), Action::Pull),
            "* stays in one component"
        );
        assert!(!t.allows(Some("public/base"), Action::Push));
        assert!(!t.allows(Some("other/app"), Action::Pull));
        assert!(!t.allows(None, Action::Catalog));
        assert!(r(&["catalog"]).allows(None, Action::Catalog));
        assert!(r(&["x:*"]).allows(Some("x"), Action::Delete));
    }

    #[test]
    fn malformed_scopes_say_why() {
        for (bad, why) in [
            ("team/**", "expected PATTERN:ACTIONS"),
            (":pull", "empty repository pattern"),
            ("team/**:write", "unknown action"),
            ("team/[:pull", "team/[:pull"),
        ] {
            let e = Restriction::parse(&[bad.to_string()]).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(Restriction::parse(&[]).is_err());
    }
}
