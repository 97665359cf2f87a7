//! Config diagnostics: warnings and errors that point at `file:line` and a key.
//!
//! Owns `ConfigWarning`, `ConfigError`, `ConfigErrors` and the collector the
//! validator writes into. Loading never stops at the first problem: every
//! check records into `Diagnostics` and startup fails once, listing them all.
//! This file must not decide what is valid; it only carries the verdicts.

use std::fmt;
use std::path::{Path, PathBuf};

/// Something sleddog accepted but wants the operator to know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub file: PathBuf,
    /// 1-based; 0 when the warning is about the whole file.
    pub line: usize,
    /// Dotted path such as `general.port`; empty for whole-file warnings.
    pub key: String,
    pub message: String,
}

/// A problem that stops startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error is about the whole file.
    pub line: usize,
    /// Dotted path such as `general.port`; empty for whole-file errors.
    pub key: String,
    pub message: String,
}

/// Every error found in one load, in file then line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn write_located(
    f: &mut fmt::Formatter<'_>,
    file: &Path,
    line: usize,
    key: &str,
    message: &str,
) -> fmt::Result {
    write!(f, "{}:{}: ", file.display(), line)?;
    if !key.is_empty() {
        write!(f, "key `{key}`: ")?;
    }
    f.write_str(message)
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(f, &self.file, self.line, &self.key, &self.message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_located(f, &self.file, self.line, &self.key, &self.message)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
impl std::error::Error for ConfigErrors {}

/// Collects findings while the validator walks both files.
#[derive(Debug, Default)]
pub(crate) struct Diagnostics {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigWarning>,
}

impl Diagnostics {
    pub fn error(&mut self, file: &Path, line: usize, key: &str, message: impl Into<String>) {
        let error = ConfigError {
            file: file.to_path_buf(),
            line,
            key: key.to_string(),
            message: message.into(),
        };
        // The same fact can be reached from two pools (e.g. min > max via a
        // shared [general] value); report it once.
        if !self.errors.contains(&error) {
            self.errors.push(error);
        }
    }

    pub fn warn(&mut self, file: &Path, line: usize, key: &str, message: impl Into<String>) {
        let warning = ConfigWarning {
            file: file.to_path_buf(),
            line,
            key: key.to_string(),
            message: message.into(),
        };
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }

    /// The value and warnings, or every error if there is any.
    pub fn into_result<T>(self, value: T) -> Result<(T, Vec<ConfigWarning>), ConfigErrors> {
        if self.errors.is_empty() {
            Ok((value, self.warnings))
        } else {
            Err(self.into_errors())
        }
    }

    /// Errors sorted the way an operator reads them: per file, by line.
    /// The sort is stable, so findings on one line keep discovery order.
    pub fn into_errors(mut self) -> ConfigErrors {
        self.errors
            .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        ConfigErrors(self.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shape() {
        let error = ConfigError {
            file: "pgdog.toml".into(),
            line: 3,
            key: "general.port".into(),
            message: "must be between 1 and 65535".into(),
        };
        assert_eq!(
            error.to_string(),
            "pgdog.toml:3: key `general.port`: must be between 1 and 65535"
        );
        let errors = ConfigErrors(vec![error.clone(), error]);
        assert_eq!(errors.to_string().lines().count(), 2);
    }

    #[test]
    fn whole_file_warning_has_no_key() {
        let warning = ConfigWarning {
            file: "users.toml".into(),
            line: 0,
            key: String::new(),
            message: "not found".into(),
        };
        assert_eq!(warning.to_string(), "users.toml:0: not found");
    }
}
