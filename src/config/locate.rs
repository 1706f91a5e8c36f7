//! Key paths (`neighbours[1].endpoint`) and the line where a key path sits in the YAML text, so
//! that errors found after parsing (ranges, duplicates, the node's own key) can name their line.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a key path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Where a value sits in the configuration, printed as `routes.max_per_neighbour` or
/// `neighbours[1].endpoint`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Step>);

impl KeyPath {
    /// The top-level key `name`.
    pub(crate) fn top(name: &str) -> KeyPath {
        KeyPath(vec![Step::Key(name.to_owned())])
    }

    /// The key `name` inside this one.
    pub(crate) fn key(&self, name: &str) -> KeyPath {
        let mut steps = self.0.clone();
        steps.push(Step::Key(name.to_owned()));
        KeyPath(steps)
    }

    /// The list element `index` of this one.
    pub(crate) fn index(&self, index: usize) -> KeyPath {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        KeyPath(steps)
    }

    /// The line (1-based) of this path's value in `text`, or of its nearest ancestor present
    /// there (a defaulted key has no line of its own). `None` only if `text` has no mapping at all.
    pub(crate) fn line_in(&self, text: &str) -> Option<usize> {
        let deserializer = yaml_serde::Deserializer::from_str(text);
        // The seek always ends in an error raised at the node it stopped on; yaml_serde marks
        // such an error with that node's position, which is all we want from it.
        match (Seek { steps: &self.0 }).deserialize(deserializer) {
            Ok(()) => None,
            Err(err) => err.location().map(|location| location.line()),
        }
    }
}

impl From<&serde_path_to_error::Path> for KeyPath {
    fn from(path: &serde_path_to_error::Path) -> KeyPath {
        KeyPath(
            path.iter()
                .map(|segment| match segment {
                    serde_path_to_error::Segment::Seq { index } => Step::Index(*index),
                    serde_path_to_error::Segment::Map { key } => Step::Key(key.clone()),
                    serde_path_to_error::Segment::Enum { variant } => Step::Key(variant.clone()),
                    serde_path_to_error::Segment::Unknown => Step::Key("?".to_owned()),
                })
                .collect(),
        )
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (position, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(name) if position == 0 => f.write_str(name)?,
                Step::Key(name) => write!(f, ".{name}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Walks the document along `steps` and fails at the node where the walk ends.
struct Seek<'p> {
    steps: &'p [Step],
}

const STOP: &str = "stop";

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or a list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if let Some((Step::Key(wanted), rest)) = self.steps.split_first() {
            while let Some(key) = map.next_key::<AnyKey>()? {
                if key.0.as_deref() == Some(wanted.as_str()) {
                    return map.next_value_seed(Seek { steps: rest });
                }
                map.next_value::<IgnoredAny>()?;
            }
        }
        Err(de::Error::custom(STOP))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some((Step::Index(wanted), rest)) = self.steps.split_first() {
            let mut index = 0;
            loop {
                if index == *wanted {
                    return match seq.next_element_seed(Seek { steps: rest })? {
                        Some(()) => Ok(()),
                        None => Err(de::Error::custom(STOP)),
                    };
                }
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                index += 1;
            }
        }
        Err(de::Error::custom(STOP))
    }
}

/// A mapping key as text, or `None` for keys that are not scalars.
struct AnyKey(Option<String>);

impl<'de> de::Deserialize<'de> for AnyKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AnyKey, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = AnyKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<AnyKey, E> {
                Ok(AnyKey(Some(text.to_owned())))
            }

            fn visit_u64<E: de::Error>(self, number: u64) -> Result<AnyKey, E> {
                Ok(AnyKey(Some(number.to_string())))
            }

            fn visit_i64<E: de::Error>(self, number: i64) -> Result<AnyKey, E> {
                Ok(AnyKey(Some(number.to_string())))
            }

            fn visit_bool<E: de::Error>(self, value: bool) -> Result<AnyKey, E> {
                Ok(AnyKey(Some(value.to_string())))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<AnyKey, E> {
                Ok(AnyKey(None))
            }

            fn visit_unit<E: de::Error>(self) -> Result<AnyKey, E> {
                Ok(AnyKey(None))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyKey, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyKey(None))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyKey, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(AnyKey(None))
            }
        }

        deserializer.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# a comment
node:
  state_dir: s
neighbours:
  - key: a
    endpoint: 1.2.3.4:5
  - key: b

    endpoint: x
liveness: {probe_interval_ms: 5}
";

    #[test]
    fn paths_print_like_serde_path_to_error() {
        let path = KeyPath::top("neighbours").index(1).key("endpoint");
        assert_eq!(path.to_string(), "neighbours[1].endpoint");
        assert_eq!(KeyPath::default().to_string(), "(top level)");
    }

    #[test]
    fn lines_of_present_keys() {
        assert_eq!(KeyPath::top("node").key("state_dir").line_in(TEXT), Some(3));
        assert_eq!(
            KeyPath::top("neighbours")
                .index(0)
                .key("endpoint")
                .line_in(TEXT),
            Some(6)
        );
        assert_eq!(
            KeyPath::top("neighbours")
                .index(1)
                .key("endpoint")
                .line_in(TEXT),
            Some(9)
        );
        assert_eq!(KeyPath::top("neighbours").index(1).line_in(TEXT), Some(7));
        assert_eq!(
            KeyPath::top("liveness")
                .key("probe_interval_ms")
                .line_in(TEXT),
            Some(10)
        );
    }

    #[test]
    fn absent_keys_fall_back_to_their_nearest_ancestor() {
        assert_eq!(
            KeyPath::top("neighbours")
                .index(1)
                .key("keepalive")
                .line_in(TEXT),
            Some(7)
        );
        assert_eq!(KeyPath::top("neighbours").index(5).line_in(TEXT), Some(5));
        assert!(KeyPath::top("routes").line_in(TEXT).is_some());
    }
}
