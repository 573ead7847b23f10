//! Settings shared by the daemons: environment overrides for every config field, and a
//! commented config file written from the config itself (`init`).

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// One field of a config: its name and what it is, for the commented file and the docs.
#[derive(Debug, Clone, Copy)]
pub struct FieldDoc {
    /// The field's name in the file.
    pub name: &'static str,
    /// What it means (one or more lines).
    pub doc: &'static str,
    /// A value to show, commented out, when the field is unset (an optional field).
    pub example: Option<&'static str>,
}

/// Why settings could not be applied or written.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// An environment variable holds a value the field cannot take.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The config does not serialize (a bug).
    #[error("cannot write the config: {0}")]
    Serialize(String),
    /// The config file exists already.
    #[error("{0} exists already; pass --force to overwrite it")]
    Exists(String),
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The environment variable of `field`: `prefix` and the field's name in capitals
/// (`MEDLEY_` + `repair_concurrency` → `MEDLEY_REPAIR_CONCURRENCY`).
pub fn env_var(prefix: &str, field: &str) -> String {
    format!("{prefix}{}", field.to_ascii_uppercase())
}

/// Applies environment overrides to `config`: every field of `fields` takes the value of
/// `env(prefix + NAME)` when it is set. A value is read as TOML (`8`, `true`, `"50 GiB"`,
/// `["a", "b"]`); a bare word that is not TOML is a string, and comma-separated for a list.
pub fn apply_env<T: Serialize + DeserializeOwned>(
    config: T,
    prefix: &str,
    fields: &[FieldDoc],
    env: impl Fn(&str) -> Option<String>,
) -> Result<T, SettingsError> {
    let toml::Value::Table(mut table) =
        toml::Value::try_from(&config).map_err(|e| SettingsError::Serialize(e.to_string()))?
    else {
        return Err(SettingsError::Serialize("not a table".into()));
    };
    let mut changed = false;
    for f in fields {
        let var = env_var(prefix, f.name);
        let Some(raw) = env(&var) else { continue };
        let is_list = matches!(table.get(f.name), Some(toml::Value::Array(_)));
        table.insert(f.name.to_string(), parse_env_value(&raw, is_list));
        // Checked one variable at a time, so an error names the variable at fault.
        toml::Value::Table(table.clone())
            .try_into::<T>()
            .map_err(|e| SettingsError::Env {
                var: var.clone(),
                value: raw.clone(),
                reason: e.message().to_string(),
            })?;
        changed = true;
    }
    if !changed {
        return Ok(config);
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| SettingsError::Serialize(e.to_string()))
}

/// The field names of `docs`, checked against `config`'s serialized fields and its
/// deserializer: a test helper for each daemon's table of fields. Returns what is missing
/// from the table and what the table names that the config does not have.
pub fn check_docs<T: Serialize + DeserializeOwned>(
    full: &T,
    docs: &[FieldDoc],
) -> (Vec<String>, Vec<String>) {
    let keys: Vec<String> = match toml::Value::try_from(full) {
        Ok(toml::Value::Table(t)) => t.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let missing = keys
        .iter()
        .filter(|k| !docs.iter().any(|d| d.name == k.as_str()))
        .cloned()
        .collect();
    let unknown = docs
        .iter()
        .filter(|d| !keys.iter().any(|k| k == d.name))
        .map(|d| d.name.to_string())
        .collect();
    (missing, unknown)
}

fn parse_env_value(raw: &str, is_list: bool) -> toml::Value {
    if let Ok(mut t) = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        && let Some(v) = t.remove("v")
    {
        if is_list && !v.is_array() {
            return toml::Value::Array(vec![v]);
        }
        return v;
    }
    if is_list {
        return toml::Value::Array(
            raw.split(',')
                .map(|s| toml::Value::String(s.trim().to_string()))
                .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
                .collect(),
        );
    }
    toml::Value::String(raw.to_string())
}

/// `config` as a TOML file in which every field of `docs` comes with its documentation and
/// the environment variable that overrides it; fields without a value are written
/// commented out with their example.
pub fn commented_toml<T: Serialize>(
    config: &T,
    title: &str,
    prefix: &str,
    docs: &[FieldDoc],
) -> Result<String, SettingsError> {
    let toml::Value::Table(table) =
        toml::Value::try_from(config).map_err(|e| SettingsError::Serialize(e.to_string()))?
    else {
        return Err(SettingsError::Serialize("not a table".into()));
    };
    let mut out = String::new();
    for line in title.lines() {
        out.push_str(&format!("# {line}\n"));
    }
    for d in docs {
        out.push('\n');
        for line in d.doc.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&format!("# Environment: {}\n", env_var(prefix, d.name)));
        match table.get(d.name) {
            Some(v) => {
                let mut one = toml::map::Map::new();
                one.insert(d.name.to_string(), v.clone());
                let text = toml::to_string(&toml::Value::Table(one))
                    .map_err(|e| SettingsError::Serialize(e.to_string()))?;
                out.push_str(&text);
            }
            None => out.push_str(&format!("# {} = {}\n", d.name, d.example.unwrap_or("\"\""))),
        }
    }
    Ok(out)
}

/// A Markdown table of every field of `docs`: setting, default (from `defaults`),
/// environment variable, meaning. The operator guide holds one per daemon, checked against
/// this by a test, so it cannot drift from the code.
pub fn reference_table<T: Serialize>(
    defaults: &T,
    prefix: &str,
    docs: &[FieldDoc],
) -> Result<String, SettingsError> {
    let toml::Value::Table(table) =
        toml::Value::try_from(defaults).map_err(|e| SettingsError::Serialize(e.to_string()))?
    else {
        return Err(SettingsError::Serialize("not a table".into()));
    };
    let mut out =
        String::from("| setting | default | environment | meaning |\n|---|---|---|---|\n");
    for d in docs {
        let default = match table.get(d.name) {
            Some(v) => format!("`{}`", v.to_string().replace('|', "\\|")),
            None => "unset".to_string(),
        };
        let meaning = d.doc.replace('\n', " ").replace('|', "\\|");
        out.push_str(&format!(
            "| `{}` | {default} | `{}` | {meaning} |\n",
            d.name,
            env_var(prefix, d.name)
        ));
    }
    Ok(out)
}

/// Rewrites the section of the document at `path` between the markers `marker` to
/// `expected`, when the environment variable `MEDLEY_BLESS_DOCS` is set (a test helper: run
/// the doc tests with it after changing a setting's documentation, then review the diff).
/// Returns whether it wrote.
pub fn bless_doc_section(path: &Path, marker: &str, expected: &str) -> bool {
    if std::env::var_os("MEDLEY_BLESS_DOCS").is_none() {
        return false;
    }
    let Ok(doc) = std::fs::read_to_string(path) else {
        return false;
    };
    let start = format!("<!-- {marker}:start -->\n");
    let end = format!("<!-- {marker}:end -->");
    let (Some(a), Some(b)) = (doc.find(&start), doc.find(&end)) else {
        return false;
    };
    let a = a + start.len();
    let text = format!("{}{expected}{}", &doc[..a], &doc[b..]);
    std::fs::write(path, text).is_ok()
}

/// The text of `doc` between the lines `<!-- marker:start -->` and `<!-- marker:end -->`.
pub fn doc_section<'a>(doc: &'a str, marker: &str) -> Option<&'a str> {
    let start = format!("<!-- {marker}:start -->\n");
    let end = format!("<!-- {marker}:end -->");
    let from = doc.find(&start)? + start.len();
    let to = from + doc[from..].find(&end)?;
    Some(&doc[from..to])
}

/// What `<daemon> init` does with the settings: creates `data_dir` and writes `config` as
/// the commented file `path` (default `data_dir/file_name`), refusing to replace one unless
/// `force`. Returns the file's path.
#[allow(clippy::too_many_arguments)]
pub fn init_config_file<T: Serialize>(
    daemon: &str,
    data_dir: &Path,
    path: Option<std::path::PathBuf>,
    file_name: &str,
    config: &T,
    prefix: &str,
    docs: &[FieldDoc],
    force: bool,
) -> Result<std::path::PathBuf, SettingsError> {
    std::fs::create_dir_all(data_dir).map_err(|source| SettingsError::Io {
        path: data_dir.display().to_string(),
        source,
    })?;
    let path = path.unwrap_or_else(|| data_dir.join(file_name));
    let title = format!(
        "{daemon} configuration, written by `{daemon} init`.\n\
         Every setting can also come from the environment (the variable named under it) or a\n\
         flag of `{daemon} run`; flags win over the environment, which wins over this file."
    );
    let text = commented_toml(config, &title, prefix, docs)?;
    write_new_file(&path, &text, force)?;
    Ok(path)
}

/// Prints `config` as TOML on standard output (the `config` commands).
pub fn print_settings<T: Serialize>(config: &T) -> Result<(), SettingsError> {
    print!(
        "{}",
        toml::to_string(config).map_err(|e| SettingsError::Serialize(e.to_string()))?
    );
    Ok(())
}

/// Writes `text` to `path` (mode 0600 on Unix: a config may hold secrets), refusing to
/// replace an existing file unless `force`.
pub fn write_new_file(path: &Path, text: &str, force: bool) -> Result<(), SettingsError> {
    let io = |source| SettingsError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(SettingsError::Exists(path.display().to_string()));
        }
        Err(e) => return Err(io(e)),
    };
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Conf {
        region: String,
        workers: usize,
        listen: Vec<String>,
        tracker: Option<String>,
        fast: bool,
    }

    impl Default for Conf {
        fn default() -> Self {
            Self {
                region: "default".into(),
                workers: 4,
                listen: vec!["a".into()],
                tracker: None,
                fast: false,
            }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    const DOCS: [FieldDoc; 5] = [
        FieldDoc {
            name: "region",
            doc: "Region.",
            example: None,
        },
        FieldDoc {
            name: "workers",
            doc: "Workers.\nTwo lines.",
            example: None,
        },
        FieldDoc {
            name: "listen",
            doc: "Listen.",
            example: None,
        },
        FieldDoc {
            name: "tracker",
            doc: "Tracker.",
            example: Some("\"http://127.0.0.1:4700\""),
        },
        FieldDoc {
            name: "fast",
            doc: "Fast.",
            example: None,
        },
    ];

    #[test]
    fn every_field_including_unset_options_follows_the_environment() {
        let c = apply_env(
            Conf::default(),
            "X_",
            &DOCS,
            env(&[
                ("X_REGION", "eu-west"),
                ("X_WORKERS", "9"),
                ("X_LISTEN", "/ip4/1,/ip4/2"),
                ("X_TRACKER", "http://t:1"),
                ("X_FAST", "true"),
                ("X_OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.region, "eu-west");
        assert_eq!(c.workers, 9);
        assert_eq!(c.listen, vec!["/ip4/1", "/ip4/2"]);
        assert_eq!(c.tracker.as_deref(), Some("http://t:1"));
        assert!(c.fast);
        let list = apply_env(
            Conf::default(),
            "X_",
            &DOCS,
            env(&[("X_LISTEN", r#"["p", "q"]"#)]),
        )
        .unwrap();
        assert_eq!(list.listen, vec!["p", "q"]);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let e = apply_env(Conf::default(), "X_", &DOCS, env(&[("X_WORKERS", "many")])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("X_WORKERS") && text.contains("many"),
            "{text}"
        );
    }

    #[test]
    fn commented_file_documents_every_field_and_reads_back() {
        let c = Conf {
            workers: 7,
            ..Conf::default()
        };
        let text = commented_toml(&c, "A test config.", "X_", &DOCS).unwrap();
        assert!(
            text.contains("# Workers.\n# Two lines.\n# Environment: X_WORKERS\nworkers = 7\n"),
            "{text}"
        );
        assert!(
            text.contains("# tracker = \"http://127.0.0.1:4700\"\n"),
            "{text}"
        );
        let back: Conf = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn the_field_table_is_checked_against_the_struct() {
        let full = Conf {
            tracker: Some("t".into()),
            ..Conf::default()
        };
        assert_eq!(check_docs(&full, &DOCS), (vec![], vec![]));
        let (missing, unknown) = check_docs(&full, &DOCS[1..]);
        assert_eq!((missing, unknown), (vec!["region".to_string()], vec![]));
    }

    #[test]
    fn a_new_file_is_not_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        write_new_file(&p, "a = 1\n", false).unwrap();
        let e = write_new_file(&p, "a = 2\n", false).unwrap_err();
        assert!(matches!(e, SettingsError::Exists(_)), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a = 1\n");
        write_new_file(&p, "a = 3\n", true).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a = 3\n");
    }
}
