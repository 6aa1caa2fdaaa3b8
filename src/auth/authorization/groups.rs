//! Static groups for htpasswd users: `[auth.groups]` in the config and an
//! optional Apache-style group file (`group: user user …`, the format of
//! `AuthGroupFile`), merged.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::config::AuthConfig;

/// Why the group file cannot be used; the previous groups stay on reload.
#[derive(Debug, thiserror::Error)]
pub enum GroupsError {
    /// Missing, unreadable or not UTF-8.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A line that is neither blank, a `#` comment nor `group: members`.
    #[error("{path} line {line}: expected `group: user user …`")]
    Syntax { path: String, line: usize },
}

pub fn parse_group_file(
    text: &str,
    path: &str,
) -> Result<BTreeMap<String, Vec<String>>, GroupsError> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, members) = line
            .split_once(':')
            .filter(|(n, _)| !n.trim().is_empty() && !n.contains(char::is_whitespace))
            .ok_or(GroupsError::Syntax {
                path: path.to_owned(),
                line: i + 1,
            })?;
        groups
            .entry(name.trim().to_owned())
            .or_default()
            .extend(members.split_whitespace().map(str::to_owned));
    }
    Ok(groups)
}

/// group → members, from the config and the group file.
pub fn load(cfg: &AuthConfig) -> Result<HashMap<String, Vec<String>>, GroupsError> {
    let mut all: HashMap<String, Vec<String>> = cfg
        .groups
        .iter()
        .map(|(g, m)| (g.clone(), m.clone()))
        .collect();
    if let Some(path) = &cfg.groups_file {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(Path::new(path)).map_err(|source| GroupsError::Read {
                path: shown.clone(),
                source,
            })?;
        for (g, members) in parse_group_file(&text, &shown)? {
            all.entry(g).or_default().extend(members);
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apache_group_files() {
        let g = parse_group_file(
            "# ci\nci: robot1 robot2\nadmins:alice\nci: robot3\nempty:\n",
            "g",
        )
        .unwrap();
        assert_eq!(g["ci"], ["robot1", "robot2", "robot3"]);
        assert_eq!(g["admins"], ["alice"]);
        assert!(g["empty"].is_empty());
        assert!(matches!(
            parse_group_file("ok: a\nno colon here\n", "g"),
            Err(GroupsError::Syntax { path, line: 2 }) if path == "g"
        ));
    }

    #[test]
    fn merges_config_and_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("groups");
        std::fs::write(&p, "ci: robot2\n").unwrap();
        let mut cfg = AuthConfig::default();
        cfg.groups.insert("ci".into(), vec!["robot1".into()]);
        cfg.groups_file = Some(p);
        let all = load(&cfg).unwrap();
        assert_eq!(all["ci"], ["robot1", "robot2"]);
    }
}
