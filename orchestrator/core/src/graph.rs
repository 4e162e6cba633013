//! Dependency graphs over agents and groups: cycle detection that names the
//! cycle, start order in waves, and the closures a `group start` or
//! `group stop` needs.
//!
//! Nodes are names; an edge `a -> b` means "a depends on b" (b first).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Dep, HostConfig};

#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Node -> its dependencies, in insertion order of nodes.
    deps: BTreeMap<String, Vec<String>>,
    order: Vec<String>,
}

impl Graph {
    pub fn new() -> Self {
        Graph::default()
    }

    pub fn add_node(&mut self, name: &str) {
        if !self.deps.contains_key(name) {
            self.deps.insert(name.to_string(), Vec::new());
            self.order.push(name.to_string());
        }
    }

    /// `from` depends on `to`. Both become nodes.
    pub fn add_edge(&mut self, from: &str, to: &str) {
        self.add_node(from);
        self.add_node(to);
        if let Some(d) = self.deps.get_mut(from)
            && !d.iter().any(|x| x == to)
        {
            d.push(to.to_string());
        }
    }

    pub fn nodes(&self) -> &[String] {
        &self.order
    }

    pub fn deps_of(&self, node: &str) -> &[String] {
        self.deps.get(node).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Nodes that depend on `node` directly.
    pub fn dependents_of(&self, node: &str) -> Vec<&str> {
        self.order
            .iter()
            .filter(|n| self.deps_of(n).iter().any(|d| d == node))
            .map(String::as_str)
            .collect()
    }

    /// The first cycle found, as a path that starts and ends on the same
    /// node (`[a, b, c, a]`), searching nodes in insertion order so the
    /// answer is deterministic.
    pub fn find_cycle(&self) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let mut mark: BTreeMap<&str, Mark> =
            self.order.iter().map(|n| (n.as_str(), Mark::New)).collect();
        // Iterative DFS: configs can be adversarial (fuzzed), recursion is not safe.
        for root in &self.order {
            if mark[root.as_str()] != Mark::New {
                continue;
            }
            let mut stack: Vec<(&str, usize)> = vec![(root.as_str(), 0)];
            mark.insert(root, Mark::Active);
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                let deps = self.deps_of(node);
                if *next < deps.len() {
                    let dep = deps[*next].as_str();
                    *next += 1;
                    match mark.get(dep).copied().unwrap_or(Mark::Done) {
                        Mark::New => {
                            mark.insert(dep, Mark::Active);
                            stack.push((dep, 0));
                        }
                        Mark::Active => {
                            let start = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                            let mut cycle: Vec<String> =
                                stack[start..].iter().map(|(n, _)| n.to_string()).collect();
                            cycle.push(dep.to_string());
                            return Some(cycle);
                        }
                        Mark::Done => {}
                    }
                } else {
                    mark.insert(node, Mark::Done);
                    stack.pop();
                }
            }
        }
        None
    }

    /// Start order in waves: every node of a wave depends only on nodes of
    /// earlier waves, so a wave may start in parallel. Within a wave, nodes
    /// keep insertion order. Nodes on a cycle are left out (validation
    /// refuses cyclic configs before this is used).
    pub fn waves(&self) -> Vec<Vec<String>> {
        let mut placed: BTreeSet<&str> = BTreeSet::new();
        let mut waves = Vec::new();
        loop {
            let wave: Vec<&str> = self
                .order
                .iter()
                .map(String::as_str)
                .filter(|n| !placed.contains(n))
                .filter(|n| self.deps_of(n).iter().all(|d| placed.contains(d.as_str())))
                .collect();
            if wave.is_empty() {
                break;
            }
            placed.extend(wave.iter().copied());
            waves.push(wave.into_iter().map(str::to_string).collect());
        }
        waves
    }

    /// `roots` and everything they depend on, transitively.
    pub fn closure(&self, roots: &[&str]) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
        while let Some(n) = todo.pop() {
            if seen.insert(n.clone()) {
                todo.extend(self.deps_of(&n).iter().cloned());
            }
        }
        seen
    }

    /// `roots` and everything that depends on them, transitively.
    pub fn reverse_closure(&self, roots: &[&str]) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
        while let Some(n) = todo.pop() {
            if seen.insert(n.clone()) {
                todo.extend(self.dependents_of(&n).into_iter().map(str::to_string));
            }
        }
        seen
    }
}

/// Agent-level graph of a host: each agent depends on its `depends_on`.
pub fn agent_graph(config: &HostConfig) -> Graph {
    let mut g = Graph::new();
    for agent in config.agents() {
        g.add_node(&agent.name);
    }
    // Another host's agents are not part of this host's order.
    for agent in config.agents() {
        for dep in agent.depends_on.iter().filter_map(|d| Dep::local(d)) {
            g.add_edge(&agent.name, dep);
        }
    }
    g
}

/// Group-level graph: a group depends on the groups it names and on the
/// groups of the agents its agents depend on.
pub fn group_graph(config: &HostConfig) -> Graph {
    let group_of: BTreeMap<&str, &str> = config
        .agents()
        .map(|a| (a.name.as_str(), a.group.as_str()))
        .collect();
    let mut g = Graph::new();
    for group in &config.groups {
        g.add_node(&group.name);
    }
    for group in &config.groups {
        for dep in group.depends_on.iter().filter_map(|d| Dep::local(d)) {
            g.add_edge(&group.name, dep);
        }
        for agent in &group.agents {
            for dep in agent.depends_on.iter().filter_map(|d| Dep::local(d)) {
                if let Some(dg) = group_of.get(dep)
                    && *dg != group.name
                {
                    g.add_edge(&group.name, dg);
                }
            }
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.add_edge(a, b);
        }
        g
    }

    #[test]
    fn finds_and_names_a_cycle() {
        let g = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]);
        assert_eq!(g.find_cycle().unwrap(), ["a", "b", "c", "a"]);
        let g = graph(&[("a", "a")]);
        assert_eq!(g.find_cycle().unwrap(), ["a", "a"]);
        let g = graph(&[("a", "b"), ("b", "c"), ("a", "c")]);
        assert_eq!(g.find_cycle(), None);
    }

    #[test]
    fn waves_respect_dependencies_and_order() {
        let g = graph(&[
            ("web", "api"),
            ("api", "db"),
            ("worker", "db"),
            ("api", "cache"),
        ]);
        assert_eq!(
            g.waves(),
            vec![vec!["db", "cache"], vec!["api", "worker"], vec!["web"]]
        );
    }

    #[test]
    fn closures() {
        let g = graph(&[("web", "api"), ("api", "db"), ("worker", "db")]);
        let up: Vec<_> = g.closure(&["web"]).into_iter().collect();
        assert_eq!(up, ["api", "db", "web"]);
        let down: Vec<_> = g.reverse_closure(&["db"]).into_iter().collect();
        assert_eq!(down, ["api", "db", "web", "worker"]);
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let mut g = Graph::new();
        for i in 0..100_000 {
            g.add_edge(&format!("n{i}"), &format!("n{}", i + 1));
        }
        assert_eq!(g.find_cycle(), None);
        g.add_edge("n100000", "n0");
        assert_eq!(g.find_cycle().unwrap().len(), 100_002);
    }
}
