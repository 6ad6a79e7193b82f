//! Reading one section of the merged configuration, field by field, so that every problem
//! is collected with its key path instead of stopping at the first. Values that came from
//! environment variables arrive as strings, so numbers and booleans are also read from text.

use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// One problem in the configuration, with the key it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.key, self.message)
    }
}

pub struct Section<'a> {
    prefix: String,
    map: Map<String, Value>,
    used: BTreeSet<String>,
    problems: &'a mut Vec<Problem>,
}

impl<'a> Section<'a> {
    pub fn root(value: Value, problems: &'a mut Vec<Problem>) -> Section<'a> {
        let map = match value {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Section {
            prefix: String::new(),
            map,
            used: BTreeSet::new(),
            problems,
        }
    }

    pub fn key_path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        let key = self.key_path(key);
        self.problems.push(Problem {
            key,
            message: message.into(),
        });
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.used.insert(key.to_owned());
        self.map.get(key).cloned().filter(|value| !value.is_null())
    }

    /// A nested table; an absent one reads as empty (all defaults).
    pub fn section<R>(&mut self, key: &str, read: impl FnOnce(&mut Section) -> R) -> R {
        let value = self.take(key).unwrap_or(Value::Object(Map::new()));
        let prefix = self.key_path(key);
        let map = match value {
            Value::Object(map) => map,
            _ => {
                self.problem(key, "must be a table");
                Map::new()
            }
        };
        let mut nested = Section {
            prefix,
            map,
            used: BTreeSet::new(),
            problems: self.problems,
        };
        let result = read(&mut nested);
        nested.finish();
        result
    }

    /// An array of tables, each read by `read`.
    pub fn tables<R>(&mut self, key: &str, mut read: impl FnMut(&mut Section) -> R) -> Vec<R> {
        let items = match self.take(key) {
            None => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(_) => {
                self.problem(key, "must be an array of tables ([[...]])");
                return Vec::new();
            }
        };
        let mut results = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let prefix = format!("{}[{index}]", self.key_path(key));
            let Value::Object(map) = item else {
                self.problems.push(Problem {
                    key: prefix,
                    message: "must be a table".into(),
                });
                continue;
            };
            let mut nested = Section {
                prefix,
                map,
                used: BTreeSet::new(),
                problems: self.problems,
            };
            results.push(read(&mut nested));
            nested.finish();
        }
        results
    }

    pub fn string(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            Value::String(text) => Some(text),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            _ => {
                self.problem(key, "must be a string");
                None
            }
        }
    }

    pub fn bool(&mut self, key: &str) -> Option<bool> {
        match self.take(key)? {
            Value::Bool(flag) => Some(flag),
            Value::String(text) if text.eq_ignore_ascii_case("true") => Some(true),
            Value::String(text) if text.eq_ignore_ascii_case("false") => Some(false),
            _ => {
                self.problem(key, "must be true or false");
                None
            }
        }
    }

    /// A whole number in `min..=max`.
    pub fn integer(&mut self, key: &str, min: u64, max: u64) -> Option<u64> {
        let value = self.take(key)?;
        let number = match &value {
            Value::Number(number) => number.as_u64(),
            Value::String(text) => text.trim().parse::<u64>().ok(),
            _ => None,
        };
        match number {
            Some(number) if (min..=max).contains(&number) => Some(number),
            _ => {
                self.problem(key, format!("must be a whole number from {min} to {max}, not {value}"));
                None
            }
        }
    }

    /// A duration like "2s", "500ms", "1h 30m" (or a number of seconds).
    pub fn duration(&mut self, key: &str) -> Option<Duration> {
        let value = self.take(key)?;
        let parsed = match &value {
            Value::Number(number) => number.as_f64().filter(|s| *s >= 0.0).map(Duration::from_secs_f64),
            Value::String(text) => humantime::parse_duration(text.trim()).ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.problem(
                key,
                format!("must be a duration such as \"2s\" or \"500ms\", not {value}"),
            );
        }
        parsed
    }

    /// A duration, or "forever" (None inside the Some).
    pub fn duration_or_forever(&mut self, key: &str) -> Option<Option<Duration>> {
        let value = self.take(key)?;
        let parsed = match &value {
            Value::String(text) if text.trim().eq_ignore_ascii_case("forever") => Some(None),
            Value::Number(number) => number
                .as_f64()
                .filter(|s| *s >= 0.0)
                .map(|s| Some(Duration::from_secs_f64(s))),
            Value::String(text) => humantime::parse_duration(text.trim()).ok().map(Some),
            _ => None,
        };
        if parsed.is_none() {
            self.problem(
                key,
                format!("must be a duration such as \"90days\" or \"12h\", or \"forever\", not {value}"),
            );
        }
        parsed
    }

    /// A size like "64MiB", "10 MB" (or a number of bytes).
    pub fn bytes(&mut self, key: &str) -> Option<u64> {
        let value = self.take(key)?;
        let parsed = match &value {
            Value::Number(number) => number.as_u64(),
            Value::String(text) => text.trim().parse::<bytesize::ByteSize>().ok().map(|size| size.as_u64()),
            _ => None,
        };
        if parsed.is_none() {
            self.problem(
                key,
                format!("must be a size such as \"64MiB\" or a number of bytes, not {value}"),
            );
        }
        parsed
    }

    /// A list of strings (also a comma-separated string, as environment variables give it).
    pub fn strings(&mut self, key: &str) -> Option<Vec<String>> {
        match self.take(key)? {
            Value::Array(items) => {
                let mut strings = Vec::new();
                for item in items {
                    match item {
                        Value::String(text) => strings.push(text),
                        other => self.problem(key, format!("must hold only strings, not {other}")),
                    }
                }
                Some(strings)
            }
            Value::String(text) => Some(
                text.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
            ),
            _ => {
                self.problem(key, "must be a list of strings");
                None
            }
        }
    }

    /// A required secret: reports "is required" only if neither form was given.
    pub fn required_secret(&mut self, key: &str) -> String {
        let given = self.map.contains_key(key) || self.map.contains_key(&format!("{key}_file"));
        match self.secret(key) {
            Some(value) if !value.is_empty() => value,
            _ => {
                if !given {
                    self.problem(key, format!("is required (or {key}_file)"));
                }
                String::new()
            }
        }
    }

    /// A secret given inline (`key`) or in a file (`key_file`, for Docker secrets).
    pub fn secret(&mut self, key: &str) -> Option<String> {
        let inline = self.string(key);
        let file_key = format!("{key}_file");
        let from_file = self.string(&file_key);
        match (inline, from_file) {
            (Some(_), Some(_)) => {
                self.problem(key, format!("give either {key} or {file_key}, not both"));
                None
            }
            (Some(value), None) => Some(value),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(text) => Some(text.trim_end_matches(['\r', '\n']).to_owned()),
                Err(error) => {
                    self.problem(&file_key, format!("cannot read {path}: {error}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// Report every key that no reader asked for.
    pub fn finish(&mut self) {
        let unknown: Vec<String> = self
            .map
            .keys()
            .filter(|key| !self.used.contains(*key))
            .cloned()
            .collect();
        for key in unknown {
            self.problem(&key, "unknown key");
        }
        self.used.extend(self.map.keys().cloned());
    }
}
