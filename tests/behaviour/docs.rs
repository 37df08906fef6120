//! The documentation's configuration blocks are configurations tokend accepts: every
//! ```toml block in README.md and docs/, completed where it shows only part of a
//! credential (its id, a secret), loads as `tokend check` validates it, before `check`
//! looks at the host's files.

use std::path::{Path, PathBuf};

/// Every ```toml block of a Markdown file: its first line number and its text.
fn toml_blocks(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => current = Some((i + 2, String::new())),
            (Some(_), l) if l.starts_with("```") => blocks.extend(current.take()),
            (Some((_, block)), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The block made whole: a credential when it shows none; each credential's id, and a
/// secret where its client authentication needs one and the block shows none.
fn completed(block: &str) -> String {
    let mut table: toml::Table = toml::from_str(block).unwrap_or_else(|e| panic!("{e}"));
    let credentials = table
        .entry("credentials")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap();
    if credentials.is_empty() {
        credentials.insert("doc".into(), toml::Value::Table(toml::Table::new()));
    }
    for (_, credential) in credentials.iter_mut() {
        let c = credential.as_table_mut().unwrap();
        c.entry("client_id")
            .or_insert_with(|| toml::Value::String("doc-client".into()));
        let auth = c
            .get("client_auth")
            .and_then(|v| v.as_str())
            .unwrap_or("basic");
        let uses_secret = ["basic", "basic_unencoded", "post"].contains(&auth);
        if uses_secret && !c.contains_key("client_secret") && !c.contains_key("client_secret_file")
        {
            c.insert(
                "client_secret".into(),
                toml::Value::String("doc-secret-1234".into()),
            );
        }
    }
    toml::to_string(&table).unwrap()
}

fn markdown_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn every_configuration_block_in_the_docs_is_accepted() {
    let mut checked = 0;
    for file in markdown_files() {
        for (line, block) in toml_blocks(&file) {
            let text = completed(&block);
            if let Err(e) = tokend::config::load_from_str(&text, "doc.toml", Vec::new()) {
                panic!("{}:{line}: {e}\n{block}", file.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} blocks found");
}

/// The shipped example files too, and `[coordination]` with every default.
#[test]
fn the_example_configurations_and_every_default_are_accepted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = tokend::config::load_from_str(&text, "x.toml", Vec::new()) {
                panic!("{}: {e}", path.display());
            }
        }
    }
    for backend in [
        "[coordination]\nbackend = \"etcd\"\n[coordination.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n",
        "[coordination]\nbackend = \"kubernetes\"\n",
    ] {
        let text = completed(backend);
        tokend::config::load_from_str(&text, "x.toml", Vec::new())
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
    }
}

/// The names of the keys a configuration struct takes, as serde asks for them.
fn keys_of<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    struct Recorder<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Recorder<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("recorded"))
        }
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Recorder(&mut fields));
    assert!(
        !fields.is_empty(),
        "{} takes no keys",
        std::any::type_name::<T>()
    );
    fields
}

/// config/tokend.toml lists every key of every table, commented out or not.
#[test]
fn the_example_configuration_lists_every_key() {
    use tokend::config::coordination::{RawCoordination, etcd::RawEtcd, kubernetes::RawKubernetes};
    use tokend::config::model::{HealthConfig, HttpConfig, LogConfig, RefreshPolicy, RetryPolicy};
    use tokend::config::raw::{RawConfig, RawCredential, RawHook, RawOutput};
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tokend.toml"))
            .unwrap();
    // Each table's keys as the file has them, its comment signs taken off.
    let mut tables: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim().trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = name.trim_start_matches('[').to_owned();
            tables.entry(table.clone()).or_default();
        } else if let Some((key, _)) = line.split_once('=')
            && !key.trim().is_empty()
            && key
                .trim()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            tables
                .entry(table.clone())
                .or_default()
                .push(key.trim().to_owned());
        }
    }
    let expected: [(&str, &[&str]); 12] = [
        ("", keys_of::<RawConfig>()),
        ("log", keys_of::<LogConfig>()),
        ("health", keys_of::<HealthConfig>()),
        ("credentials.blnk", keys_of::<RawCredential>()),
        ("credentials.blnk.refresh", keys_of::<RefreshPolicy>()),
        ("credentials.blnk.retry", keys_of::<RetryPolicy>()),
        ("credentials.blnk.http", keys_of::<HttpConfig>()),
        ("credentials.blnk.outputs", keys_of::<RawOutput>()),
        ("credentials.blnk.on_rotate", keys_of::<RawHook>()),
        ("coordination", keys_of::<RawCoordination>()),
        ("coordination.etcd", keys_of::<RawEtcd>()),
        ("coordination.kubernetes", keys_of::<RawKubernetes>()),
    ];
    let mut missing = Vec::new();
    for (name, keys) in expected {
        for key in keys {
            let as_table = if name.is_empty() {
                key.to_string()
            } else {
                format!("{name}.{key}")
            };
            let listed = tables.get(name).is_some_and(|t| t.iter().any(|k| k == key))
                || tables.contains_key(&as_table)
                || (name.is_empty()
                    && *key == "credentials"
                    && tables.contains_key("credentials.blnk"));
            if !listed {
                missing.push(as_table);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "config/tokend.toml does not list: {missing:?}"
    );
}

/// ARCHITECTURE.md names every file of `src/`.
#[test]
fn the_architecture_names_every_module_file_and_none_is_long() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut dirs = vec![root.join("src")];
    let (mut missing, mut long) = (Vec::new(), Vec::new());
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                if !map.contains(&rel) {
                    missing.push(rel.clone());
                }
                let lines = std::fs::read_to_string(&path).unwrap().lines().count();
                if lines > MAX_LINES {
                    long.push(format!("{rel}: {lines}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name: {missing:?}"
    );
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines (split by what the parts hold): {long:?}"
    );
}

/// A module file a reader takes in at once.
const MAX_LINES: usize = 550;
