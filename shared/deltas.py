"""A programme change stated as only what changes: a version `based_on` another, or an experiment arm's overrides.

A delta is a mapping of sections laid over the raw (parsed YAML) version below it:
- a mapping merges key by key, recursively (`purchase: {base: {points_per_unit: "2"}}` changes one rate);
- a list of rules merges item by item, matched by the item's id (`rule_id`, `reward_id`, a tier level's `tier`, a
  task's `task_type`): an item whose id is known is merged into it, a new id is appended in order;
- any other value (a list without ids, a number, a string) replaces what was there;
- `remove:` lists what the delta takes away, as dotted paths ending in a section, a key or an item's id
  (`purchase.campaigns.weekend-double`, `rewards.tote-bag`, `referral.bonus`).

Pure: raw mappings in, a new raw mapping out; the caller validates the result with its own model.
"""

from __future__ import annotations

import copy
from typing import Any

ID_KEYS = ("rule_id", "reward_id", "experiment_id", "tier", "task_type")
REMOVE = "remove"


class DeltaError(ValueError):
    """A delta that cannot be laid over its base: the message names the path."""


def id_of(item: Any) -> str | None:
    """The id an item of a list of rules is matched by, or None (the list is then replaced whole)."""
    if isinstance(item, dict):
        for key in ID_KEYS:
            if key in item:
                return f"{item[key]}"
    return None


def merge(base: dict[str, Any], delta: dict[str, Any], *, path: str = "") -> dict[str, Any]:
    """`base` with `delta` laid over it (neither is changed). `remove` is applied last, at the top level only."""
    result = copy.deepcopy(base)
    for key, value in delta.items():
        if key == REMOVE and not path:
            continue
        result[key] = _merge_value(result.get(key), value, f"{path}{key}")
    if not path:
        for target in delta.get(REMOVE) or []:
            _remove(result, str(target))
    return result


def _merge_value(old: Any, new: Any, path: str) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        return merge(old, new, path=f"{path}.")
    if isinstance(old, list) and isinstance(new, list) and _ided(old) and _ided(new):
        merged = [copy.deepcopy(item) for item in old]
        where = {id_of(item): i for i, item in enumerate(merged)}
        for item in new:
            key = id_of(item)
            if key in where:
                merged[where[key]] = merge(merged[where[key]], item, path=f"{path}.{key}.")
            else:
                where[key] = len(merged)
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(new)


def _ided(items: list[Any]) -> bool:
    return bool(items) and all(id_of(item) is not None for item in items)


def _remove(tree: dict[str, Any], target: str) -> None:
    parts = target.split(".")
    node: Any = tree
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, dict):
            if part not in node:
                raise DeltaError(f"remove: {target}: nothing at {'.'.join(parts[:depth + 1])}")
            if last:
                del node[part]
                return
            node = node[part]
        elif isinstance(node, list):
            found = next((i for i, item in enumerate(node) if id_of(item) == part), None)
            if found is None:
                raise DeltaError(f"remove: {target}: no item {part!r} in {'.'.join(parts[:depth])}")
            if last:
                del node[found]
                return
            node = node[found]
        else:
            raise DeltaError(f"remove: {target}: {'.'.join(parts[:depth])} is a value, not a section")


def changes(before: Any, after: Any, path: str = "") -> list[tuple[str, str, Any, Any]]:
    """What differs between two raw versions, as (path, kind, before, after) with kind added, removed or changed;
    lists of rules are compared item by item by id, so a reordering is no change."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in [*before, *(k for k in after if k not in before)]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in after:
                found.append((sub, "removed", before[key], None))
            elif key not in before:
                found.append((sub, "added", None, after[key]))
            else:
                found += changes(before[key], after[key], sub)
        return found
    if isinstance(before, list) and isinstance(after, list) and _ided(before) and _ided(after):
        old = {id_of(i): i for i in before}
        new = {id_of(i): i for i in after}
        return changes(old, new, path)
    return [] if before == after else [(path, "changed", before, after)]
