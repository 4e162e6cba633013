//! Strict decoding helpers over the spanned tree: typed scalars, and a map
//! reader that reports every key nobody asked for, with the nearest known
//! key as a suggestion.

use orch_core::units::{ByteSize, Duration, Percent};

use crate::diag::{Diagnostics, closest};
use crate::yaml::{Node, Span, Value};

/// Reads one mapping. Keys are taken with [`MapReader::take`]; whatever is
/// left when [`MapReader::finish`] runs is an unknown key.
#[derive(Debug)]
pub struct MapReader<'a> {
    node: &'a Node,
    entries: &'a [(Node, Node)],
    used: Vec<bool>,
    known: Vec<&'static str>,
    /// What this mapping is, for messages (`health check`, `agent FaceRecognitionAgent`).
    what: String,
}

impl<'a> MapReader<'a> {
    /// A reader over `node`, or an error (and `None`) if it is not a mapping.
    /// A null node reads as an empty mapping.
    pub fn new(node: &'a Node, what: impl Into<String>, d: &mut Diagnostics) -> Option<Self> {
        let what = what.into();
        let entries: &[(Node, Node)] = match &node.value {
            Value::Map(m) => m,
            Value::Null => &[],
            _ => {
                d.error(
                    "type",
                    node.span,
                    format!("{what} must be a mapping, found {}", node.kind()),
                );
                return None;
            }
        };
        Some(MapReader {
            node,
            entries,
            used: vec![false; entries.len()],
            known: Vec::new(),
            what,
        })
    }

    pub fn span(&self) -> Span {
        self.node.span
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// The value under `key`, marking it known and used.
    pub fn take(&mut self, key: &'static str) -> Option<&'a Node> {
        self.known.push(key);
        let i = self
            .entries
            .iter()
            .position(|(k, _)| k.as_str() == Some(key))?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    /// Like `take`, also returning the key node (for spans on the key).
    pub fn take_entry(&mut self, key: &'static str) -> Option<(&'a Node, &'a Node)> {
        self.known.push(key);
        let i = self
            .entries
            .iter()
            .position(|(k, _)| k.as_str() == Some(key))?;
        self.used[i] = true;
        Some((&self.entries[i].0, &self.entries[i].1))
    }

    /// Declares a key as known without reading it (a key handled elsewhere).
    pub fn allow(&mut self, key: &'static str) {
        self.known.push(key);
        if let Some(i) = self
            .entries
            .iter()
            .position(|(k, _)| k.as_str() == Some(key))
        {
            self.used[i] = true;
        }
    }

    /// Entries not taken yet (for maps whose keys are names, not fields).
    pub fn rest(&mut self) -> Vec<(&'a Node, &'a Node)> {
        let mut out = Vec::new();
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if !self.used[i] {
                self.used[i] = true;
                out.push((k, v));
            }
        }
        out
    }

    /// Reports every entry not taken as an unknown key.
    pub fn finish(self, d: &mut Diagnostics) {
        for (i, (k, _)) in self.entries.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            let name = k.as_str().unwrap_or("~");
            let msg = format!("unknown key `{name}` in {}", self.what);
            match closest(name, self.known.iter().copied()) {
                Some(s) => d.error_help("unknown-key", k.span, msg, format!("did you mean `{s}`?")),
                None => {
                    let mut known = self.known.clone();
                    known.sort_unstable();
                    known.dedup();
                    d.error_help(
                        "unknown-key",
                        k.span,
                        msg,
                        format!("known keys here: {}", known.join(", ")),
                    )
                }
            }
        }
    }
}

/// The text of a scalar; numbers and booleans read as their text.
pub fn string(node: &Node, what: &str, d: &mut Diagnostics) -> Option<String> {
    match &node.value {
        Value::Scalar { text, .. } => Some(text.clone()),
        _ => {
            d.error(
                "type",
                node.span,
                format!("{what} must be a string, found {}", node.kind()),
            );
            None
        }
    }
}

/// A non-empty string.
pub fn name(node: &Node, what: &str, d: &mut Diagnostics) -> Option<String> {
    let s = string(node, what, d)?;
    if s.trim().is_empty() {
        d.error("empty", node.span, format!("{what} must not be empty"));
        return None;
    }
    Some(s)
}

pub fn boolean(node: &Node, what: &str, d: &mut Diagnostics) -> Option<bool> {
    match &node.value {
        Value::Scalar {
            text,
            quoted: false,
        } => match text.as_str() {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => {
                d.error(
                    "type",
                    node.span,
                    format!("{what} must be true or false, found `{text}`"),
                );
                None
            }
        },
        Value::Scalar { text, quoted: true } => {
            d.error_help(
                "type",
                node.span,
                format!("{what} must be true or false, found the string \"{text}\""),
                "remove the quotes",
            );
            None
        }
        _ => {
            d.error(
                "type",
                node.span,
                format!("{what} must be true or false, found {}", node.kind()),
            );
            None
        }
    }
}

/// An unsigned integer within `min..=max`.
pub fn uint(node: &Node, what: &str, min: u64, max: u64, d: &mut Diagnostics) -> Option<u64> {
    let text = match &node.value {
        Value::Scalar { text, .. } => text,
        _ => {
            d.error(
                "type",
                node.span,
                format!("{what} must be a number, found {}", node.kind()),
            );
            return None;
        }
    };
    match text.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Some(n),
        Ok(n) => {
            d.error(
                "range",
                node.span,
                format!("{what} must be between {min} and {max}, found {n}"),
            );
            None
        }
        Err(_) => {
            d.error(
                "type",
                node.span,
                format!("{what} must be a whole number, found `{text}`"),
            );
            None
        }
    }
}

pub fn float(node: &Node, what: &str, min: f64, max: f64, d: &mut Diagnostics) -> Option<f64> {
    let text = match &node.value {
        Value::Scalar { text, .. } => text,
        _ => {
            d.error(
                "type",
                node.span,
                format!("{what} must be a number, found {}", node.kind()),
            );
            return None;
        }
    };
    match text.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n >= min && n <= max => Some(n),
        Ok(n) => {
            d.error(
                "range",
                node.span,
                format!("{what} must be between {min} and {max}, found {n}"),
            );
            None
        }
        Err(_) => {
            d.error(
                "type",
                node.span,
                format!("{what} must be a number, found `{text}`"),
            );
            None
        }
    }
}

pub fn duration(node: &Node, what: &str, d: &mut Diagnostics) -> Option<Duration> {
    let text = string(node, what, d)?;
    match Duration::parse(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            d.error("duration", node.span, format!("{what}: {e}"));
            None
        }
    }
}

pub fn size(node: &Node, what: &str, d: &mut Diagnostics) -> Option<ByteSize> {
    let text = string(node, what, d)?;
    match ByteSize::parse(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            d.error("size", node.span, format!("{what}: {e}"));
            None
        }
    }
}

pub fn percent(node: &Node, what: &str, d: &mut Diagnostics) -> Option<Percent> {
    let text = string(node, what, d)?;
    match Percent::parse(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            d.error("percent", node.span, format!("{what}: {e}"));
            None
        }
    }
}

/// A list; a null reads as empty. Items are returned for the caller to decode.
pub fn seq<'a>(node: &'a Node, what: &str, d: &mut Diagnostics) -> Option<&'a [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        Value::Null => Some(&[]),
        _ => {
            d.error(
                "type",
                node.span,
                format!("{what} must be a list, found {}", node.kind()),
            );
            None
        }
    }
}

/// A list of strings.
pub fn strings(node: &Node, what: &str, d: &mut Diagnostics) -> Option<Vec<(String, Span)>> {
    let items = seq(node, what, d)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match string(item, &format!("each entry of {what}"), d) {
            Some(s) => out.push((s, item.span)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A mapping of string to scalar (env, labels). Numbers and booleans are
/// kept as written.
pub fn string_map(
    node: &Node,
    what: &str,
    d: &mut Diagnostics,
) -> Option<std::collections::BTreeMap<String, String>> {
    let entries: &[(Node, Node)] = match &node.value {
        Value::Map(m) => m,
        Value::Null => &[],
        _ => {
            d.error(
                "type",
                node.span,
                format!("{what} must be a mapping, found {}", node.kind()),
            );
            return None;
        }
    };
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in entries {
        let key = k.as_str().unwrap_or("~").to_string();
        match &v.value {
            Value::Scalar { text, .. } => {
                out.insert(key, text.clone());
            }
            Value::Null => {
                out.insert(key, String::new());
            }
            _ => d.error(
                "type",
                v.span,
                format!(
                    "{what}: the value of `{key}` must be a scalar, found {}",
                    v.kind()
                ),
            ),
        }
    }
    Some(out)
}

/// Converts a subtree to JSON for free-form values (agent `config`).
/// Plain scalars are typed as YAML 1.2 core types; quoted ones stay strings.
pub fn to_json(node: &Node) -> serde_json::Value {
    match &node.value {
        Value::Null => serde_json::Value::Null,
        Value::Scalar { text, quoted: true } => serde_json::Value::String(text.clone()),
        Value::Scalar {
            text,
            quoted: false,
        } => plain_scalar_json(text),
        Value::Seq(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.as_str().unwrap_or("~").to_string(), to_json(v)))
                .collect(),
        ),
    }
}

pub fn plain_scalar_json(text: &str) -> serde_json::Value {
    match text {
        "true" | "True" | "TRUE" => return serde_json::Value::Bool(true),
        "false" | "False" | "FALSE" => return serde_json::Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return serde_json::Value::from(i);
    }
    if text.contains(['.', 'e', 'E'])
        && let Ok(f) = text.parse::<f64>()
        && f.is_finite()
    {
        return serde_json::Value::from(f);
    }
    serde_json::Value::String(text.to_string())
}

/// A `depends_on` entry that does not read, in words.
pub fn dep_error(e: &orch_core::model::DepError) -> String {
    use orch_core::model::DepError;
    match e {
        DepError::Malformed { entry } => format!("`{entry}` is not HOST/AGENT or HOST/group:NAME"),
        DepError::NoGroup { entry } => format!("`{entry}` names no group after `group:`"),
    }
}

/// A port mapping that does not read, in words.
pub fn port_error(e: &orch_core::model::PortError) -> String {
    use orch_core::model::PortError;
    match e {
        PortError::Protocol { protocol } => {
            format!("unknown protocol `{protocol}`; use `/tcp` or `/udp`")
        }
        PortError::Port { text } => format!("`{text}` is not a port number (1-65535)"),
        PortError::Ip { text } => format!("`{text}` is not an IP address"),
        PortError::Shape { text } => format!(
            "`{text}` is not a port mapping; write `HOST:CONTAINER`, `IP:HOST:CONTAINER`, `START-END:CONTAINER` or `CONTAINER`"
        ),
        PortError::UnclosedBracket { text } => {
            format!("`{text}` has an unclosed `[` around its address")
        }
        PortError::RangeBackwards { text, start, end } => {
            format!("the host port range `{text}` ends before it starts; write `{end}-{start}`")
        }
        PortError::RangeTooLong { text, len } => format!(
            "the host port range `{text}` has {len} ports, more than an agent can use ({}: {} replicas and as many for a rollout's surge)",
            orch_core::model::MAX_HOST_PORT_RANGE,
            orch_core::model::MAX_REPLICAS
        ),
        PortError::ContainerRange { text } => format!(
            "`{text}` is a container port range; publish one container port, with a host port range for the replicas (e.g. `8000-8009:8080`)"
        ),
    }
}

/// A volume that does not read, in words.
pub fn mount_error(e: &orch_core::model::MountError) -> String {
    use orch_core::model::MountError;
    match e {
        MountError::Mode { mode } => format!("unknown mount mode `{mode}`; use `ro` or `rw`"),
        MountError::Shape { text } => {
            format!("`{text}` is not a volume; write `SOURCE:TARGET` or `SOURCE:TARGET:ro`")
        }
        MountError::EmptySource => "the volume source is empty".into(),
        MountError::RelativeTarget { target } => {
            format!("the mount target `{target}` must be an absolute path")
        }
    }
}

/// Text that is not a MIG profile name, in words.
pub fn profile_error(e: &orch_core::gpu::NotAProfile) -> String {
    format!(
        "`{}` is not a MIG profile name; write `<slices>g.<memory>gb`, e.g. `1g.10gb`, `3g.40gb`, `1g.5gb+me`",
        e.text
    )
}
