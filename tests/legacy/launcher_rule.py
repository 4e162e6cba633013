#!/usr/bin/env python3
"""The legacy launcher's rule for finding agents, applied to one file.

The file is read as the launcher read it, with PyYAML's safe_load (a
repeated key keeps its last value). An agent is every mapping with a
`script_path` that is an entry of (a) a value of `agent_groups` or (b) any
top-level value; the entries of a list are its items, named by `name`, and
the entries of a mapping are its values, named by their keys.

Prints one line per agent found: its name, a tab, and the agent group or
top-level section it is an entry of. An agent found twice is printed twice.

Usage: launcher_rule.py FILE
"""
import sys

import yaml


def entries(value):
    if isinstance(value, list):
        return [(None, item) for item in value]
    if isinstance(value, dict):
        return list(value.items())
    return []


def agents_of(section, value):
    found = []
    for key, entry in entries(value):
        if isinstance(entry, dict) and "script_path" in entry:
            name = key if key is not None else entry.get("name")
            found.append((name, section))
    return found


def launcher_agents(config):
    found = []
    if not isinstance(config, dict):
        return found
    for section, value in config.items():
        found += agents_of(section, value)
    groups = config.get("agent_groups")
    if isinstance(groups, dict):
        for group, value in groups.items():
            found += agents_of(group, value)
    return found


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    for name, section in launcher_agents(config):
        print(f"{name}\t{section}")


if __name__ == "__main__":
    main()
