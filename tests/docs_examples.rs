//! Keeps docs/configuration.md and proxy.toml honest: every TOML block in
//! the docs loads (merged over a minimal valid config), proxy.toml loads,
//! and the documented keys are exactly the keys the code has.

use portcullis::config::Config;
use std::collections::BTreeSet;
use std::path::Path;

/// The smallest valid config, shared with the config module's tests.
const BASE: &str = include_str!("../src/config/minimal.toml");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The ```toml blocks of a markdown file, with the line each starts on.
fn toml_blocks(md: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in md.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```toml" => current = Some((i + 1, String::new())),
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "unclosed ```toml block");
    blocks
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn load_fragment(fragment: &str) -> Result<Config, String> {
    let mut table: toml::Table = BASE.parse().unwrap();
    let over: toml::Table = fragment.parse().map_err(|e| format!("{e}"))?;
    // a fragment with cert/key replaces the base's self_signed
    if over.get("tls").and_then(|t| t.get("cert")).is_some() {
        table.remove("tls");
    }
    merge(&mut table, over);
    compiled(&toml::to_string(&table).unwrap())
}

/// Parsed and compiled (rules, algorithms, log level, LDAP templates):
/// everything the file alone decides, without the files it names.
fn compiled(text: &str) -> Result<Config, String> {
    let cfg = Config::parse(text).map_err(|e| e.to_string())?;
    let problems = |p: Vec<portcullis::config::Problem>| {
        portcullis::config::ConfigError { problems: p }.to_string()
    };
    portcullis::app::compile(&cfg).map_err(problems)?;
    if let Some(ldap) = &cfg.auth.ldap {
        // the templates; secrets and files are not the examples' own
        portcullis::auth::authentication::ldap::Queries::new(ldap)
            .map_err(|e| format!("auth.ldap.{}: {}", e.key, e.reason))?;
    }
    Ok(cfg)
}

fn md_files() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    v.push(root().join("README.md"));
    v.sort();
    v
}

#[test]
fn every_toml_block_in_docs_loads() {
    let mut count = 0;
    for file in md_files() {
        let Ok(md) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (line, block) in toml_blocks(&md) {
            count += 1;
            if let Err(e) = load_fragment(&block) {
                panic!(
                    "{}:{line}: example does not load:\n{e}\n---\n{block}",
                    file.display()
                );
            }
        }
    }
    assert!(
        count >= 5,
        "expected the docs to have TOML examples, found {count}"
    );
}

#[test]
fn proxy_toml_loads() {
    let text = std::fs::read_to_string(root().join("proxy.toml")).unwrap();
    compiled(&text).unwrap_or_else(|e| panic!("proxy.toml: {e}"));
}

/// Tables whose keys are names chosen by the user, not config keys.
const MAPS: [&str; 4] = [
    "auth.groups",
    "auth.token.lifetimes",
    "auth.oidc.issuers.required_claims",
    "auth.oidc.login.required_claims",
];

fn dotted_keys(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            // a secret written as { env = … } is a value, not a section
            toml::Value::Table(t)
                if !t.contains_key("env")
                    && !t.contains_key("file")
                    && !MAPS.contains(&key.as_str()) =>
            {
                dotted_keys(&key, t, out)
            }
            // [[access]] rules: their keys are documented as access.KEY
            toml::Value::Array(items)
                if !items.is_empty() && items.iter().all(toml::Value::is_table) =>
            {
                for t in items.iter().filter_map(toml::Value::as_table) {
                    dotted_keys(&key, t, out);
                }
            }
            _ => {
                out.insert(key);
            }
        }
    }
}

#[test]
fn documented_keys_are_the_code_keys() {
    let md = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    // keys named in `### `a.b`` headings
    let mut documented = BTreeSet::new();
    for line in md.lines().filter(|l| l.starts_with("### ")) {
        for part in line.split('`').skip(1).step_by(2) {
            documented.insert(part.to_owned());
        }
    }
    // the complete example, loaded and serialized again: every field the
    // code has (defaults included) comes out
    let (_, full) = toml_blocks(&md)
        .into_iter()
        .next()
        .expect("docs/configuration.md starts with the complete example");
    let cfg = Config::parse(&full).unwrap_or_else(|e| panic!("complete example: {e}"));
    let serialized: toml::Table = toml::to_string(&cfg).unwrap().parse().unwrap();
    let mut code = BTreeSet::new();
    dotted_keys("", &serialized, &mut code);
    let mut example = BTreeSet::new();
    dotted_keys("", &full.parse().unwrap(), &mut example);

    let undocumented: Vec<_> = code.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "keys without a ### heading in docs/configuration.md: {undocumented:?}"
    );
    let stale: Vec<_> = documented.difference(&code).collect();
    assert!(
        stale.is_empty(),
        "documented keys the code does not have: {stale:?}"
    );
    let missing: Vec<_> = code.difference(&example).collect();
    assert!(
        missing.is_empty(),
        "keys missing from the complete example: {missing:?}"
    );
}
