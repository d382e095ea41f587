//! Reading TOML layers, checking their keys and types, and merging them with origins kept.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};

use super::raw::RawConfig;
use super::settings;
use super::{ConfigError, FieldError};

/// A position in a layer: `file:line:column` for files, just the name for API overlays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub source: String,
    /// 1-based; 0 when the layer has no text (an API overlay).
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.source)
        } else {
            write!(f, "{}:{}:{}", self.source, self.line, self.column)
        }
    }
}

/// One source of settings: a file, or an overlay from the admin API.
#[derive(Debug, Clone)]
pub struct Layer {
    name: String,
    base_dir: Option<PathBuf>,
    table: toml::Table,
    locations: BTreeMap<String, Location>,
}

/// Where each key of the merged configuration came from.
#[derive(Debug, Default, Clone)]
pub struct Origins {
    entries: BTreeMap<String, (Location, Option<PathBuf>)>,
}

impl Origins {
    pub fn location(&self, key: &str) -> Option<&Location> {
        self.entries.get(key).map(|(location, _)| location)
    }

    /// Relative paths resolve against the directory of the file that set them.
    pub fn resolve_path(&self, key: &str, value: &str) -> PathBuf {
        let path = Path::new(value);
        match self.entries.get(key) {
            Some((_, Some(base))) if path.is_relative() => normalize(&base.join(path)),
            _ => normalize(path),
        }
    }
}

impl Layer {
    /// Reads and checks one TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path.parent().map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir.to_path_buf()
            }
        });
        Self::from_str(&path.display().to_string(), base_dir, &text)
    }

    /// Parses TOML text, recording the position of every key.
    pub fn from_str(
        name: &str,
        base_dir: Option<PathBuf>,
        text: &str,
    ) -> Result<Self, ConfigError> {
        let document = DeTable::parse(text).map_err(|error| ConfigError::Syntax {
            location: position(name, text, error.span().map_or(0, |span| span.start)),
            message: error.message().trim().to_string(),
        })?;
        let mut locations = BTreeMap::new();
        for (section, value) in document.get_ref() {
            let section_name = section.get_ref().to_string();
            match value.get_ref() {
                DeValue::Table(entries) => {
                    locations.insert(
                        section_name.clone(),
                        position(name, text, section.span().start),
                    );
                    for (key, _) in entries {
                        locations.insert(
                            format!("{section_name}.{}", key.get_ref()),
                            position(name, text, key.span().start),
                        );
                    }
                }
                _ => {
                    locations.insert(section_name, position(name, text, section.span().start));
                }
            }
        }
        let table: toml::Table = toml::from_str(text).map_err(|error| ConfigError::Syntax {
            location: position(name, text, error.span().map_or(0, |span| span.start)),
            message: error.message().trim().to_string(),
        })?;
        Self::checked(name.to_string(), base_dir, table, locations)
    }

    /// An overlay from the admin API: a table of sections, without positions.
    pub fn from_table(name: &str, table: toml::Table) -> Result<Self, ConfigError> {
        let mut locations = BTreeMap::new();
        for (section, value) in &table {
            let location = Location {
                source: name.to_string(),
                line: 0,
                column: 0,
            };
            locations.insert(section.clone(), location.clone());
            if let toml::Value::Table(entries) = value {
                for key in entries.keys() {
                    locations.insert(format!("{section}.{key}"), location.clone());
                }
            }
        }
        Self::checked(name.to_string(), None, table, locations)
    }

    /// Rejects unknown keys and values of the wrong type, naming each.
    pub(super) fn checked(
        name: String,
        base_dir: Option<PathBuf>,
        table: toml::Table,
        locations: BTreeMap<String, Location>,
    ) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        for (section, value) in &table {
            // Unknown keys are errors, so a typo never silently falls back to a default.
            if !settings::file_sections().contains(&section.as_str()) {
                let sections: Vec<_> = settings::file_sections()
                    .iter()
                    .map(|s| format!("[{s}]"))
                    .collect();
                errors.push(FieldError {
                    key: section.clone(),
                    location: locations.get(section).cloned(),
                    problem: "unknown key".into(),
                    fix: format!(
                        "remove it; settings live in the sections {}",
                        sections.join(", ")
                    ),
                });
                continue;
            }
            let toml::Value::Table(entries) = value else {
                errors.push(FieldError {
                    key: section.clone(),
                    location: locations.get(section).cloned(),
                    problem: "must be a table".into(),
                    fix: format!("write it as a [{section}] section"),
                });
                continue;
            };
            for (key, value) in entries {
                let full = format!("{section}.{key}");
                let Some(setting) = settings::get(&full).filter(|s| s.in_files()) else {
                    let valid: Vec<_> = settings::file_keys(section).map(|s| s.name()).collect();
                    errors.push(FieldError {
                        key: full.clone(),
                        location: locations.get(&full).cloned(),
                        problem: "unknown key".into(),
                        fix: format!(
                            "remove it or correct the spelling; valid keys in [{section}] are: {}",
                            valid.join(", ")
                        ),
                    });
                    continue;
                };
                if let Err(problem) = type_check(section, key, value) {
                    errors.push(FieldError {
                        key: full.clone(),
                        location: locations.get(&full).cloned(),
                        problem,
                        fix: format!("write it as {}", setting.kind.toml_phrase()),
                    });
                }
            }
        }
        if errors.is_empty() {
            Ok(Self {
                name,
                base_dir,
                table,
                locations,
            })
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }
}

/// Deserializes a single key on its own, so a type error names exactly that key.
fn type_check(section: &str, key: &str, value: &toml::Value) -> Result<(), String> {
    let mut inner = toml::Table::new();
    inner.insert(key.to_string(), value.clone());
    let mut outer = toml::Table::new();
    outer.insert(section.to_string(), toml::Value::Table(inner));
    RawConfig::deserialize(toml::Value::Table(outer))
        .map(|_| ())
        .map_err(|error| error.message().trim().to_string())
}

/// Reads the main file and the drop-ins beside it (`<stem>.d/*.toml`, in name order).
pub fn load_layers(main: &Path) -> Result<Vec<Layer>, ConfigError> {
    let mut layers = vec![Layer::from_file(main)?];
    let dropin_dir = dropin_dir(main);
    let entries = match std::fs::read_dir(&dropin_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(layers),
        Err(source) => {
            return Err(ConfigError::ReadDropIns {
                path: dropin_dir,
                source,
            });
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::ReadDropIns {
            path: dropin_dir.clone(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            paths.push(path);
        }
    }
    paths.sort();
    for path in paths {
        layers.push(Layer::from_file(&path)?);
    }
    Ok(layers)
}

/// `/etc/pangeod/pangeod.toml` has its drop-ins in `/etc/pangeod/pangeod.d/`.
pub fn dropin_dir(main: &Path) -> PathBuf {
    let stem = main
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pangeod".into());
    main.with_file_name(format!("{stem}.d"))
}

/// Merges the layers in order; a later layer's key replaces an earlier one's.
pub(crate) fn merge(layers: &[Layer]) -> Result<(RawConfig, Origins), ConfigError> {
    let mut merged = toml::Table::new();
    let mut origins = Origins::default();
    for layer in layers {
        for (section, value) in &layer.table {
            let toml::Value::Table(entries) = value else {
                continue;
            };
            let target = merged
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(target) = target {
                for (key, value) in entries {
                    target.insert(key.clone(), value.clone());
                    let full = format!("{section}.{key}");
                    let location =
                        layer
                            .locations
                            .get(&full)
                            .cloned()
                            .unwrap_or_else(|| Location {
                                source: layer.name.clone(),
                                line: 0,
                                column: 0,
                            });
                    origins
                        .entries
                        .insert(full, (location, layer.base_dir.clone()));
                }
            }
        }
    }
    let raw = RawConfig::deserialize(toml::Value::Table(merged)).map_err(|error| {
        ConfigError::Invalid(vec![FieldError {
            key: "(merged configuration)".into(),
            location: None,
            problem: error.message().trim().to_string(),
            fix: "check the drop-ins in the order they are applied".into(),
        }])
    })?;
    Ok((raw, origins))
}

/// Turns a byte offset into a 1-based line and column (in characters).
fn position(source: &str, text: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    Location {
        source: source.to_string(),
        line,
        column,
    }
}

/// Removes `.` and `a/..` lexically, so messages show `target/dev/state`, not
/// `config/../target/dev/state`. Symlinks are not resolved.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}
