//! Which mappings of a legacy file are agents: the legacy launcher's rule,
//! applied to the spanned tree.
//!
//! The launcher started every mapping that has a `script_path` key and is
//! an *entry* of (a) a value of `agent_groups` or (b) any top-level value.
//! The entries of a list are its items, each named by its `name`; the
//! entries of a mapping are its values, each named by its key. Nothing
//! deeper is looked at, and nothing else makes an agent. This module is
//! the importer's only definition of "an agent"; the rest of the importer
//! maps what it finds.

use crate::yaml::{Node, Span, Value};

/// Whether a node is an agent definition: a mapping with a `script_path`.
pub fn is_agent(node: &Node) -> bool {
    node.as_map()
        .is_some_and(|m| m.iter().any(|(k, _)| k.as_str() == Some("script_path")))
}

/// One entry of a section: a list item (no key) or a mapping entry.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub key: Option<&'a Node>,
    pub value: &'a Node,
}

impl Entry<'_> {
    /// Where the entry is written: its key, or the item itself.
    pub fn span(&self) -> Span {
        self.key.map_or(self.value.span, |k| k.span)
    }
}

/// The entries of a section (none for a scalar or null).
pub fn entries(section: &Node) -> Vec<Entry<'_>> {
    match &section.value {
        Value::Seq(items) => items
            .iter()
            .map(|value| Entry { key: None, value })
            .collect(),
        Value::Map(m) => m
            .iter()
            .map(|(k, value)| Entry {
                key: Some(k),
                value,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether any entry of a section is an agent.
pub fn has_agents(section: &Node) -> bool {
    entries(section).iter().any(|e| is_agent(e.value))
}

/// An agent as the launcher found it.
#[derive(Debug, Clone)]
pub struct Found<'a> {
    /// Its name and where that is written (the key, or the `name` value);
    /// `None` for a list item without a usable `name`.
    pub name: Option<(String, Span)>,
    /// Named by its key (an entry of a mapping), not by a `name` field.
    pub keyed: bool,
    /// Where the definition starts (its key, or the list item).
    pub at: Span,
    pub node: &'a Node,
    /// The agent group or top-level section it is an entry of.
    pub section: String,
}

/// Every agent the launcher found, in the order it read them: top-level
/// sections in file order, each agent group read where `agent_groups` is.
/// (A repeated key keeps the place of its first occurrence.)
pub fn launcher_agents(root: &Node) -> Vec<Found<'_>> {
    let mut out = Vec::new();
    let Some(top) = root.as_map() else {
        return out;
    };
    for (k, v) in top {
        let section = k.as_str().unwrap_or("~");
        collect(section, v, &mut out);
        if section == "agent_groups"
            && let Some(groups) = v.as_map()
        {
            for (gk, gv) in groups {
                collect(gk.as_str().unwrap_or("~"), gv, &mut out);
            }
        }
    }
    out
}

fn collect<'a>(section: &str, value: &'a Node, out: &mut Vec<Found<'a>>) {
    for e in entries(value) {
        if !is_agent(e.value) {
            continue;
        }
        let name = match e.key {
            Some(k) => k.as_str().map(|s| (s.to_string(), k.span)),
            None => e
                .value
                .get("name")
                .and_then(|n| n.as_str().map(|s| (s.to_string(), n.span))),
        };
        out.push(Found {
            name,
            keyed: e.key.is_some(),
            at: e.span(),
            node: e.value,
            section: section.to_string(),
        });
    }
}

/// Names of the agents the launcher would have found in a value that a
/// repeated key replaced: `path` and `key` say where the value stood.
pub fn agents_in_replaced(path: &[String], key: &str, replaced: &Node) -> Vec<String> {
    let mut found = Vec::new();
    let names = |section: &str, v: &Node, found: &mut Vec<String>| {
        let mut f = Vec::new();
        collect(section, v, &mut f);
        found.extend(f.into_iter().filter_map(|a| a.name.map(|(n, _)| n)));
    };
    match path {
        // A whole top-level section.
        [] => {
            names(key, replaced, &mut found);
            if key == "agent_groups" {
                for e in entries(replaced) {
                    let g = e.key.and_then(Node::as_str).unwrap_or("~");
                    names(g, e.value, &mut found);
                }
            }
        }
        // An agent group.
        [top] if top == "agent_groups" => {
            names(key, replaced, &mut found);
            if is_agent(replaced) {
                found.push(key.to_string());
            }
        }
        // One agent written as `Name: {...}` in a section or an agent group.
        [_] if is_agent(replaced) => found.push(key.to_string()),
        [top, _] if top == "agent_groups" && is_agent(replaced) => found.push(key.to_string()),
        _ => {}
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    fn names(text: &str) -> Vec<(String, String)> {
        let root = parse(text).unwrap_or_else(|e| panic!("{e:?}"));
        launcher_agents(&root)
            .into_iter()
            .map(|f| (f.name.map(|n| n.0).unwrap_or_default(), f.section))
            .collect()
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    #[test]
    fn finds_agents_in_agent_groups_and_in_top_level_lists_and_maps() {
        let text = "\
agent_groups:
  core:
    A: {script_path: a.py}
    B: {port: 1}
    C: {script_path: c.py}
list_section:
  - {name: D, script_path: d.py}
  - {name: E}
  - plain
map_section:
  F: {script_path: f.py}
settings: {x: 1}
";
        assert_eq!(
            names(text),
            [
                pair("A", "core"),
                pair("C", "core"),
                pair("D", "list_section"),
                pair("F", "map_section"),
            ]
        );
    }

    #[test]
    fn nothing_deeper_and_nothing_at_the_top_is_an_agent() {
        let text = "\
Top: {script_path: t.py}
nested:
  inner:
    deeper: {script_path: x.py}
agent_groups:
  g:
    h:
      I: {script_path: i.py}
  Direct: {script_path: d.py}
";
        // `Direct` is an entry of the top-level value `agent_groups` (rule b).
        assert_eq!(names(text), [pair("Direct", "agent_groups")]);
    }

    #[test]
    fn a_list_item_without_a_name_is_found_unnamed() {
        assert_eq!(names("s:\n  - {script_path: a.py}\n"), [pair("", "s")]);
    }

    #[test]
    fn replaced_values_name_the_agents_they_held() {
        let v = parse("A: {script_path: a}\nB: {x: 1}\n").unwrap();
        assert_eq!(agents_in_replaced(&[], "emotion", &v), ["A"]);
        let groups = parse("g: {C: {script_path: c}}\n").unwrap();
        assert_eq!(agents_in_replaced(&[], "agent_groups", &groups), ["C"]);
        let agent = parse("script_path: a\n").unwrap();
        assert_eq!(
            agents_in_replaced(&["agent_groups".into(), "g".into()], "Z", &agent),
            ["Z"]
        );
        assert!(agents_in_replaced(&["s".into(), "-".into()], "port", &agent).is_empty());
    }
}
