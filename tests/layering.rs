//! The import rule of the README's layout section, checked on the source:
//! each module imports only modules below it, so there is no cycle and
//! `config` stays at the bottom. A `crate::` path in code (not in a
//! comment) counts as an import.

use std::collections::BTreeSet;
use std::path::Path;

/// Bottom first; the README lists them in this order.
const LAYERS: &[&str] = &[
    "config",
    "listeners",
    "watch",
    "upstream",
    "registry",
    "tls",
    "observe",
    "cluster",
    "limits",
    "auth",
    "app",
    "http",
    "proxy",
    "server",
    "cli",
];

fn sources(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            sources(&e.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

/// The crate modules `module`'s code names.
fn imports(module: &str) -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let dir = src.join(module);
    let mut files = Vec::new();
    match dir.is_dir() {
        true => sources(&dir, &mut files),
        false => files.push(src.join(format!("{module}.rs"))),
    }
    let mut found = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    found.insert(name);
                }
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let mut wrong = Vec::new();
    for (level, module) in LAYERS.iter().enumerate() {
        for imported in imports(module) {
            match LAYERS.iter().position(|m| *m == imported) {
                Some(l) if l < level => {}
                Some(_) => wrong.push(format!("{module} imports {imported}, which is above it")),
                None => wrong.push(format!("{module} imports {imported}, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_module_is_in_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for e in std::fs::read_dir(&src).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let module = name.trim_end_matches(".rs");
        if ["lib", "main"].contains(&module) {
            continue;
        }
        assert!(
            LAYERS.contains(&module),
            "src/{name} is in no layer of tests/layering.rs (and the README's layout)"
        );
    }
    // and the rule can fail: config naming auth would be caught
    assert!(
        imports("config").is_empty(),
        "config imports {:?}",
        imports("config")
    );
}
