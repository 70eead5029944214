//! The one place that parses YAML, so the YAML crate can be swapped without
//! touching the rest (`serde_yaml` is archived and `serde_yml` unsound).

use serde::de::DeserializeOwned;

mod depth;

/// A YAML parse or schema error, with the 1-based position it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line, 0 when the parser could not tell.
    pub line: usize,
    /// 1-based column, 0 when the parser could not tell.
    pub column: usize,
    /// The message without the position suffix the parser appends.
    pub message: String,
}

/// Parses the first YAML document of `text` into `T`, as Prometheus's
/// `yaml.v2` does: later documents (after a `---`) are ignored, not an
/// error.
///
/// Plain scalars are handed to string fields as written (`9104` stays
/// `"9104"`), which is what Prometheus's `yaml.v2` does.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    if let Some((line, column)) = depth::too_deep(text) {
        let message = format!("nested more than {} levels deep", depth::MAX_DEPTH);
        return Err(YamlError {
            line,
            column,
            message,
        });
    }
    let mut documents = serde_norway::Deserializer::from_str(text);
    let parsed = match documents.next() {
        Some(first) => T::deserialize(first),
        // An empty stream: what an empty document means for `T`.
        None => serde_norway::from_str(text),
    };
    parsed.map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let full = e.to_string();
        let suffix = format!(" at line {line} column {column}");
        let message = full.strip_suffix(&suffix).unwrap_or(&full);
        // The root of a sequence document is written ".[0]"; "[0]" reads better.
        let message = message.strip_prefix('.').unwrap_or(message).to_string();
        YamlError {
            line,
            column,
            message,
        }
    })
}

/// Deserializes a string through `parse`, failing inside the deserializer
/// so the error carries the position of the string itself (an error
/// returned after `String::deserialize` only gets the enclosing mapping's).
pub fn parse_str<'de, D, T>(d: D, parse: fn(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct ParseVisitor<T>(fn(&str) -> Result<T, String>);

    impl<T> serde::de::Visitor<'_> for ParseVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }

    d.deserialize_str(ParseVisitor(parse))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_is_split_from_message() {
        let err = from_str::<Vec<u32>>("- 1\n- x\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 3));
        assert!(!err.message.contains("line 2"), "{}", err.message);
        assert!(err.message.contains("invalid"), "{}", err.message);
    }

    #[test]
    fn plain_scalars_keep_their_text_in_strings() {
        let v: Vec<String> = from_str("[9104, true, 1.0, 0x10]").unwrap();
        assert_eq!(v, ["9104", "true", "1.0", "0x10"]);
    }

    /// Issue 10: Prometheus's yaml.v2 reads the first document and ignores
    /// the rest; a file_sd file with more than one is accepted.
    #[test]
    fn only_the_first_document_counts() {
        let v: Vec<String> = from_str("- a\n---\n- b\n").unwrap();
        assert_eq!(v, ["a"]);
        let v: Vec<String> = from_str("---\n- a\n...\n---\n[unclosed\n").unwrap();
        assert_eq!(v, ["a"]);
        let v: Option<Vec<String>> = from_str("").unwrap();
        assert_eq!(v, None);
    }
}
