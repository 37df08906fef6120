//! How durations, file modes, signal names, listen addresses and enumerated words are
//! written in the configuration, and what an error says when they are not.

use std::fmt;
use std::time::Duration;

use serde::{Deserializer, Serializer};

pub mod signal_text {
    pub fn serialize<S: serde::Serializer>(
        signal: &Option<nix::sys::signal::Signal>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match signal {
            Some(sig) => s.serialize_str(sig.as_str()),
            None => s.serialize_none(),
        }
    }
}

/// An enumerated configuration value, spelled once: its words give its parsing (with
/// `#[serde(try_from = "String")]`), its serialization and its spelling in messages.
macro_rules! spelled {
    ($ty:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        impl $ty {
            /// Each value as the configuration spells it.
            pub const WORDS: &'static [(&'static str, $ty)] = &[$(($word, $ty::$variant)),+];

            /// The value as the configuration spells it.
            pub fn word(self) -> &'static str {
                match self {
                    $($ty::$variant => $word),+
                }
            }
        }

        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(word: String) -> Result<Self, String> {
                $crate::config::text::one_of(&word, Self::WORDS)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.word())
            }
        }
    };
}
pub(crate) use spelled;

/// The value of `word` among `choices`, or an error that lists them.
pub fn one_of<T: Copy>(word: &str, choices: &[(&str, T)]) -> Result<T, String> {
    match choices.iter().find(|(name, _)| *name == word) {
        Some((_, value)) => Ok(*value),
        None => {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            Err(format!("{word:?} is not one of {}", names.join(", ")))
        }
    }
}

/// `[health] listen`: an IP address and a port; names are not resolved.
pub mod listen_text {
    use std::net::SocketAddr;

    use serde::Deserialize;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is not an IP address and port such as \"127.0.0.1:9464\" or \"[::1]:9464\" (host names are not resolved)"
            ))
        })
    }
}

/// File modes as octal strings (`"0640"`). A TOML integer is refused: TOML reads
/// `0o640` as 416 and `640` as decimal, so no integer says what the user meant.
pub mod mode_text {
    use std::fmt;

    pub fn serialize<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{mode:04o}"))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an octal file mode as a string, such as \"0640\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
                Err(E::custom(format!(
                    "got the integer {v}; write the mode as a string, such as mode = \"0640\" \
                     (TOML reads 0o640 as 416 and 640 as decimal)"
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
                self.visit_i64(v as i64)
            }
        }
        // `deserialize_any`: the config crate turns numbers into strings when asked for one.
        d.deserialize_any(V)
    }
}

/// Durations as humantime strings (`"90s"`, `"1h 30m"`).
pub mod duration_text {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn serialize_some<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// For optional keys.
    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"90s\", \"5m\" or \"1h 30m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v).map_err(|e| {
                    E::custom(format!(
                        "{v:?} is not a duration such as \"90s\" or \"5m\" ({e})"
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}
