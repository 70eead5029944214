//! Prometheus's `file_sd_configs` entry, and its check on `files`.

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::duration::PromDuration;
use crate::gopath;
use crate::yaml;

/// Prometheus's `file_sd_configs` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    /// Glob patterns; after loading, resolved against the config directory
    /// (Prometheus's `JoinDir`).
    #[serde(deserialize_with = "deserialize_files")]
    pub files: Vec<String>,
    /// Full re-read period, a fallback for missed notifications.
    /// Default `5m`, as in Prometheus.
    #[serde(default = "default_file_refresh")]
    pub refresh_interval: PromDuration,
    /// `limits.max_input_size`, set after parsing: a larger file is an
    /// error and keeps its previous groups.
    #[serde(skip, default = "default_max_input_bytes")]
    pub max_input_size: usize,
}

pub(crate) fn default_max_input_bytes() -> usize {
    crate::http_client::DEFAULT_MAX_INPUT
}

fn default_file_refresh() -> PromDuration {
    PromDuration(Duration::from_secs(300))
}

/// Prometheus's check on `files` entries (`patFileSDName`), plus the rule
/// that the directory part is literal (globs only in the file name).
fn deserialize_files<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    /// One checked entry, so an error points at the entry itself.
    struct Checked(String);

    impl<'de> Deserialize<'de> for Checked {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            yaml::parse_str(d, |name| {
                check_file_pattern(name)?;
                Ok(Checked(name.to_string()))
            })
        }
    }

    let files = Vec::<Checked>::deserialize(d)?;
    if files.is_empty() {
        return Err(de::Error::custom(
            "file service discovery config must contain at least one path name",
        ));
    }
    Ok(files.into_iter().map(|c| c.0).collect())
}

/// Validates one `files` entry; the messages quote Prometheus's where it
/// has one.
pub fn check_file_pattern(name: &str) -> Result<(), String> {
    let has_ext = ["json", "yml", "yaml", "JSON", "YML", "YAML"]
        .iter()
        .any(|ext| {
            name.len() > ext.len() && name.ends_with(ext) && {
                name.as_bytes()[name.len() - ext.len() - 1] == b'.'
            }
        });
    let star_ok = match name.find('*') {
        Some(i) => !name[i..].contains('/'),
        None => true,
    };
    if !has_ext || !star_ok {
        return Err(format!(
            "path name {name:?} is not valid for file discovery"
        ));
    }
    let (dir, file) = gopath::split(name);
    if gopath::has_meta(dir) {
        return Err(format!(
            "path name {name:?}: glob characters in directory names are not supported, only in the file name"
        ));
    }
    if gopath::glob_match(file, "").is_err() {
        return Err(format!("path name {name:?}: syntax error in pattern"));
    }
    Ok(())
}
