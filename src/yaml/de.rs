//! A serde `Deserializer` over the node tree with yaml.v2's
//! `UnmarshalStrict` semantics: YAML 1.1 scalars, merge keys, duplicate
//! keys refused, aliases followed under yaml.v2's aliasing budget. Every
//! error carries the position and path of the node it was raised on.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};

use super::resolve::{is_null_text, resolve, Resolved};
use super::tree::{Kind, Node, Scalar};
use super::{Step, YamlError};

/// The error while deserializing: a message, and once it has been raised
/// on a node, that node's position and path.
#[derive(Debug)]
pub(crate) struct Error(pub YamlError);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(YamlError {
            line: 0,
            column: 0,
            message: msg.to_string(),
        })
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        de::Error::custom(super::unknown_key(field, expected))
    }
}

/// Where a node sits, for messages: `jobs[0].static_configs[1].labels`.
#[derive(Clone, Copy)]
pub(crate) enum Path<'p> {
    Root,
    Seq(&'p Path<'p>, usize),
    Map(&'p Path<'p>, &'p str),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Seq(parent, i) => write!(f, "{parent}[{i}]"),
            Path::Map(Path::Root, key) => f.write_str(key),
            Path::Map(parent, key) => write!(f, "{parent}.{key}"),
        }
    }
}

/// yaml.v2's defence against alias bombs (`allowedAliasRatio`).
#[derive(Default)]
pub(crate) struct Budget {
    decoded: Cell<usize>,
    aliased: Cell<usize>,
    /// Every mapping read as a yaml.v2 struct reads it (an explicit key
    /// replaces a merged one), not as a map does (an error).
    pub maps_as_structs: bool,
}

impl Budget {
    fn count(&self, in_alias: bool) -> Result<(), Error> {
        let decoded = self.decoded.get() + 1;
        self.decoded.set(decoded);
        let aliased = self.aliased.get() + usize::from(in_alias);
        self.aliased.set(aliased);
        let allowed = match decoded {
            0..=400_000 => 0.99,
            4_000_000.. => 0.10,
            n => 0.99 - 0.89 * ((n - 400_000) as f64 / 3_600_000.0),
        };
        if aliased > 100 && decoded > 1000 && aliased as f64 / decoded as f64 > allowed {
            return Err(de::Error::custom("document contains excessive aliasing"));
        }
        Ok(())
    }
}

/// One node to deserialize, where it sits, and what part of it to read.
pub(crate) struct De<'n, 'p> {
    pub node: &'n Node,
    pub path: Path<'p>,
    pub budget: &'p Budget,
    pub in_alias: bool,
    pub steps: &'p [super::Step],
    /// Mappings decoded into the same field before this one.
    pub earlier: &'p [&'n Node],
}

impl<'n> De<'n, '_> {
    /// Gives an error raised here this node's position and path, unless
    /// a deeper node already did.
    fn locate<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        r.map_err(|mut e| {
            if e.0.line == 0 {
                e.0.line = self.node.mark.line;
                e.0.column = self.node.mark.column;
                let path = self.path.to_string();
                if !path.is_empty() {
                    e.0.message = format!("{path}: {}", e.0.message);
                }
            }
            e
        })
    }

    /// The node, aliases followed.
    fn target(&self) -> (&'n Node, bool) {
        match &self.node.kind {
            Kind::Alias(target) => (target, true),
            _ => (self.node, self.in_alias),
        }
    }

    fn scalar(&self) -> Option<&'n Scalar> {
        match &self.target().0.kind {
            Kind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    fn resolved(&self) -> Result<Option<Resolved<'n>>, Error> {
        match self.scalar() {
            Some(s) => resolve(s).map(Some).map_err(de::Error::custom),
            None => Ok(None),
        }
    }

    fn unexpected(&self) -> Unexpected<'n> {
        match &self.target().0.kind {
            Kind::Seq(_) => Unexpected::Seq,
            Kind::Map(_) => Unexpected::Map,
            Kind::Scalar(s) => match resolve(s) {
                Ok(Resolved::Bool(b)) => Unexpected::Bool(b),
                Ok(Resolved::Int(i)) => Unexpected::Signed(i),
                Ok(Resolved::Uint(u)) => Unexpected::Unsigned(u),
                Ok(Resolved::Float(f)) => Unexpected::Float(f),
                Ok(Resolved::Null) => Unexpected::Unit,
                _ => Unexpected::Str(&s.value),
            },
            Kind::Alias(_) => Unexpected::Other("alias"),
        }
    }

    /// Visits the text a string field gets (yaml.v2: a scalar as written,
    /// null as "", `!!binary` decoded).
    fn visit_text<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        // Untagged (nearly every scalar): no resolution needed but null's.
        if let Some(s @ Scalar { tag: None, .. }) = self.scalar() {
            return match s.plain && is_null_text(&s.value) {
                true => visitor.visit_str(""),
                false => visitor.visit_str(&s.value),
            };
        }
        match self.resolved()? {
            None => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
            Some(Resolved::Null) => visitor.visit_str(""),
            Some(Resolved::Binary(bytes)) => match String::from_utf8(bytes) {
                Ok(s) => visitor.visit_string(s),
                Err(_) => Err(de::Error::custom(
                    "!!binary value is not valid UTF-8, which Prometheus refuses in label values",
                )),
            },
            Some(_) => match self.scalar() {
                Some(s) => visitor.visit_str(&s.value),
                None => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
            },
        }
    }

    fn visit_number<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        match self.resolved()? {
            Some(Resolved::Int(i)) => visitor.visit_i64(i),
            Some(Resolved::Uint(u)) => visitor.visit_u64(u),
            Some(Resolved::Float(f)) => visitor.visit_f64(f),
            Some(Resolved::Null) => visitor.visit_u64(0),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn child<'c>(
        &'c self,
        node: &'n Node,
        path: Path<'c>,
        steps: &'c [Step],
        earlier: &'c [&'n Node],
    ) -> De<'n, 'c> {
        De {
            node,
            path,
            budget: self.budget,
            in_alias: self.target().1,
            steps,
            earlier,
        }
    }

    fn visit_seq_items<'de, V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, Error> {
        let items: Vec<(usize, &'n Node)> = match &self.target().0.kind {
            Kind::Seq(items) => items.iter().map(|n| &**n).enumerate().collect(),
            _ => Vec::new(),
        };
        let (items, rest) = match self.steps.split_first() {
            Some((Step::Item(i), rest)) => {
                (items.into_iter().filter(|(j, _)| j == i).collect(), rest)
            }
            _ => (items, &[][..]),
        };
        visitor.visit_seq(SeqAccess {
            de: self,
            items: items.into_iter(),
            rest,
        })
    }

    fn visit_entries<'de, V: Visitor<'de>>(
        &self,
        visitor: V,
        as_struct: bool,
    ) -> Result<V::Value, Error> {
        let mut sources = self.earlier.to_vec();
        sources.push(self.target().0);
        let all = if as_struct || self.budget.maps_as_structs {
            struct_entries(&sources)
        } else {
            map_entries(&sources)
        }
        .map_err(|e| Error(e.under(&self.path.to_string())))?;
        let (entries, rest) = match self.steps.split_first() {
            Some((Step::Entries { keep, into }, rest)) => {
                let kept = all
                    .into_iter()
                    .filter_map(|mut e| {
                        let text = key_text(e.key)?;
                        e.narrowed = text == into;
                        (e.narrowed || keep.iter().any(|k| k == text)).then_some(e)
                    })
                    .collect();
                (kept, rest)
            }
            _ => (all, &[][..]),
        };
        visitor.visit_map(MapAccess {
            de: self,
            entries: entries.into_iter(),
            value: None,
            rest,
        })
    }
}

/// One mapping entry to hand to a visitor.
pub(crate) struct Entry<'n> {
    pub key: &'n Node,
    pub value: &'n Node,
    /// Mappings assigned to the same field before `value`, which yaml.v2
    /// decodes into the same map or struct.
    earlier: Vec<&'n Node>,
    /// Whether the remaining steps apply to its value.
    narrowed: bool,
}

/// The text of a key, for duplicate checks and paths.
pub(crate) fn key_text(key: &Node) -> Option<&str> {
    match &key.target().kind {
        Kind::Scalar(s) => Some(&s.value),
        _ => None,
    }
}

/// yaml.v2's `isMerge`: a plain or `!!merge`-tagged `<<`.
fn is_merge(key: &Node) -> bool {
    match &key.kind {
        Kind::Scalar(s) => {
            s.value == "<<" && (s.plain || s.tag.as_deref() == Some("tag:yaml.org,2002:merge"))
        }
        _ => false,
    }
}

/// The mappings a `<<` value merges, in the order yaml.v2 applies them
/// (a sequence backwards, so earlier mappings take precedence).
fn merge_sources(value: &Node) -> Result<Vec<&Node>, YamlError> {
    let want_map = || {
        YamlError::at(
            value.mark,
            "map merge requires map or sequence of maps as the value".into(),
        )
    };
    match &value.target().kind {
        Kind::Map(_) => Ok(vec![value.target()]),
        Kind::Seq(items) if !matches!(value.kind, Kind::Alias(_)) => items
            .iter()
            .rev()
            .map(|item| match &item.target().kind {
                Kind::Map(_) => Ok(item.target()),
                _ => Err(want_map()),
            })
            .collect(),
        _ => Err(want_map()),
    }
}

/// A mapping's entries as a yaml.v2 struct sees them: merged mappings
/// applied where `<<` stands, a later assignment replacing an earlier
/// one, a key given twice in the same mapping an error. yaml.v2 decodes a
/// mapping into a field that already holds a map or struct by adding to
/// it, so a mapping assigned after mappings keeps them as `earlier`.
/// `sources` are applied in order (a field assigned mappings before).
pub(crate) fn struct_entries<'n>(sources: &[&'n Node]) -> Result<Vec<Entry<'n>>, YamlError> {
    fn collect<'n>(
        node: &'n Node,
        out: &mut Vec<Entry<'n>>,
        depth: usize,
    ) -> Result<(), YamlError> {
        let Kind::Map(entries) = &node.target().kind else {
            return Ok(());
        };
        if depth > super::tree::MAX_DEPTH {
            return Err(YamlError::at(node.mark, "merges nested too deeply".into()));
        }
        let mut seen = HashSet::new();
        for (k, v) in entries {
            if is_merge(k) {
                for source in merge_sources(v)? {
                    collect(source, out, depth + 1)?;
                }
                continue;
            }
            let text = key_text(k);
            if let Some(text) = text {
                if !seen.insert(text) {
                    return Err(YamlError::at(k.mark, format!("duplicate field `{text}`")));
                }
                if let Some(i) = out.iter().position(|e| key_text(e.key) == Some(text)) {
                    let old = out.remove(i);
                    let is_map = |n: &Node| matches!(n.target().kind, Kind::Map(_));
                    if is_map(v) && is_map(old.value) {
                        let mut earlier = old.earlier;
                        earlier.push(old.value);
                        out.push(Entry {
                            key: k,
                            value: v,
                            earlier,
                            narrowed: false,
                        });
                        continue;
                    }
                }
            }
            out.push(Entry {
                key: k,
                value: v,
                earlier: Vec::new(),
                narrowed: false,
            });
        }
        Ok(())
    }
    let mut out = Vec::new();
    for source in sources {
        collect(source, &mut out, 0)?;
    }
    Ok(out)
}

/// A mapping's entries as a yaml.v2 map sees them: merged entries added,
/// and (strict) any key set twice, merged or not, an error; `sources`
/// all add to the same map.
fn map_entries<'n>(sources: &[&'n Node]) -> Result<Vec<Entry<'n>>, YamlError> {
    fn collect<'n>(
        node: &'n Node,
        out: &mut Vec<Entry<'n>>,
        seen: &mut HashSet<&'n str>,
        depth: usize,
    ) -> Result<(), YamlError> {
        let Kind::Map(entries) = &node.target().kind else {
            return Ok(());
        };
        if depth > super::tree::MAX_DEPTH {
            return Err(YamlError::at(node.mark, "merges nested too deeply".into()));
        }
        for (k, v) in entries {
            if is_merge(k) {
                for source in merge_sources(v)? {
                    collect(source, out, seen, depth + 1)?;
                }
                continue;
            }
            if let Some(text) = key_text(k) {
                if !seen.insert(text) {
                    return Err(YamlError::at(
                        k.mark,
                        format!("key {text:?} already set in map"),
                    ));
                }
            }
            out.push(Entry {
                key: k,
                value: v,
                earlier: Vec::new(),
                narrowed: false,
            });
        }
        Ok(())
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for source in sources {
        collect(source, &mut out, &mut seen, 0)?;
    }
    Ok(out)
}

struct SeqAccess<'a, 'n, 'p> {
    de: &'a De<'n, 'p>,
    items: std::vec::IntoIter<(usize, &'n Node)>,
    rest: &'a [Step],
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, '_, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some((index, node)) = self.items.next() else {
            return Ok(None);
        };
        let path = Path::Seq(&self.de.path, index);
        seed.deserialize(self.de.child(node, path, self.rest, &[]))
            .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'a, 'n, 'p> {
    de: &'a De<'n, 'p>,
    entries: std::vec::IntoIter<Entry<'n>>,
    value: Option<Entry<'n>>,
    rest: &'a [Step],
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, '_, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        // A key's errors (unknown field) name the mapping it is in.
        let key = De {
            node: entry.key,
            path: self.de.path,
            budget: self.de.budget,
            in_alias: self.de.target().1,
            steps: &[],
            earlier: &[],
        };
        self.value = Some(entry);
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some(entry) = self.value.take() else {
            return Err(de::Error::custom("value without a key"));
        };
        let key = key_text(entry.key).unwrap_or("?");
        let path = Path::Map(&self.de.path, key);
        let steps = if entry.narrowed { self.rest } else { &[] };
        seed.deserialize(self.de.child(entry.value, path, steps, &entry.earlier))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

macro_rules! numbers {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.count()?;
            self.locate(self.visit_number(visitor))
        })*
    };
}

impl De<'_, '_> {
    fn count(&self) -> Result<(), Error> {
        self.locate(self.budget.count(self.target().1))
    }
}

impl<'de> de::Deserializer<'de> for De<'_, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.count()?;
        let result = match &self.target().0.kind {
            Kind::Seq(_) => self.visit_seq_items(visitor),
            Kind::Map(_) => self.visit_entries(visitor, false),
            _ => match self.resolved()? {
                Some(Resolved::Null) => visitor.visit_unit(),
                Some(Resolved::Bool(b)) => visitor.visit_bool(b),
                Some(Resolved::Int(i)) => visitor.visit_i64(i),
                Some(Resolved::Uint(u)) => visitor.visit_u64(u),
                Some(Resolved::Float(f)) => visitor.visit_f64(f),
                _ => self.visit_text(visitor),
            },
        };
        self.locate(result)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.count()?;
        let result = match self.resolved() {
            Ok(Some(Resolved::Bool(b))) => visitor.visit_bool(b),
            Ok(Some(Resolved::Null)) => visitor.visit_bool(false),
            Ok(_) => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
            Err(e) => Err(e),
        };
        self.locate(result)
    }

    numbers!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64);

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.count()?;
        self.locate(self.visit_text(visitor))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if let Some(Scalar {
            tag: None,
            plain,
            value,
        }) = self.scalar()
        {
            if !(*plain && is_null_text(value)) {
                return self.locate_some(visitor);
            }
        }
        let result = match self.resolved() {
            Ok(Some(Resolved::Null)) => visitor.visit_none(),
            Ok(_) => return self.locate_some(visitor),
            Err(e) => Err(e),
        };
        self.locate(result)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.count()?;
        let result = match self.resolved() {
            Ok(Some(Resolved::Null)) => visitor.visit_unit(),
            Ok(_) => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
            Err(e) => Err(e),
        };
        self.locate(result)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.count()?;
        let result = match (&self.target().0.kind, self.resolved()) {
            (Kind::Seq(_), _) | (_, Ok(Some(Resolved::Null))) => self.visit_seq_items(visitor),
            (_, Err(e)) => Err(e),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        };
        self.locate(result)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.count()?;
        let result = self.entries_or_null(visitor, false);
        self.locate(result)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.count()?;
        let result = self.entries_or_null(visitor, true);
        self.locate(result)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.count()?;
        let result = match self.scalar() {
            Some(s) => visitor.visit_enum(s.value.as_str().into_deserializer()),
            None => Err(de::Error::invalid_type(self.unexpected(), &"a string")),
        };
        self.locate(result)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

impl De<'_, '_> {
    fn locate_some<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // The inner value locates its own errors; a visitor refusing
        // `Some` itself is located here.
        let mark = self.node.mark;
        let path = self.path.to_string();
        visitor.visit_some(self).map_err(|mut e| {
            if e.0.line == 0 {
                e.0.line = mark.line;
                e.0.column = mark.column;
                if !path.is_empty() {
                    e.0.message = format!("{path}: {}", e.0.message);
                }
            }
            e
        })
    }

    fn entries_or_null<'de, V: Visitor<'de>>(
        &self,
        visitor: V,
        as_struct: bool,
    ) -> Result<V::Value, Error> {
        match (&self.target().0.kind, self.resolved()) {
            (Kind::Map(_), _) | (_, Ok(Some(Resolved::Null))) => {
                self.visit_entries(visitor, as_struct)
            }
            (_, Err(e)) => Err(e),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }
}
