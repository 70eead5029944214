//! What a config refuses while it is parsed: a Prometheus field sdbridge
//! does not support yet, a scrape setting in a bridge job. A leaf every
//! config module (the top level's, the sources', `web`'s) can use.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A Prometheus field sdbridge recognises but does not support yet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NotSupported;

impl<'de> Deserialize<'de> for NotSupported {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Reject("not supported by sdbridge yet"))
            .map(|()| NotSupported)
    }
}

/// A scrape-level field of Prometheus's that has no meaning for discovery.
#[derive(Debug, Clone)]
pub struct ScrapeSetting;

impl<'de> Deserialize<'de> for ScrapeSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Reject(
            "is a scrape setting: keep it in the Prometheus/vmagent scrape config, sdbridge only serves targets",
        ))
        .map(|()| ScrapeSetting)
    }
}

/// Fails on whatever value it is given, from inside the deserializer so the
/// error carries the field's path and position.
pub struct Reject(pub &'static str);

impl<'de> de::Visitor<'de> for Reject {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(self.0))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(self.0))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(self.0))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(self.0))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(self.0))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(self.0))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(self.0))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(self.0))
    }
}
