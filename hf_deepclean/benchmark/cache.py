"""Which cached benchmark results are still valid: each records the settings its method ran with.

A cell or sensitivity point is a JSON file reused on the next run. Its method's settings come from the
registry's defaults, a preset, ``--method_overrides`` and the config classes' own defaults, and any of
them can change between versions of this package; ``benchmark_settings.json`` only guards the
benchmark-wide settings. So every result stores the effective settings of the method config(s) that
produced it, and a rerun recomputes a result whose stored settings differ from today's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from transformers import TrainingArguments

from ..training import NOT_SETTINGS

SETTINGS_KEY = "method_settings"
# Fields that name where or how loudly a run writes, or depend on the machine rather than on the method: two runs
# that differ only there compute the same thing.
RUN_SPECIFIC_FIELDS = NOT_SETTINGS


def method_settings(config) -> dict | None:
    """The settings of a method config as JSON values, without the run-specific fields; ``None`` for no config."""
    if config is None:
        return None
    values = config.to_dict() if isinstance(config, TrainingArguments) else dataclasses.asdict(config)
    values = {k: v for k, v in values.items() if k not in RUN_SPECIFIC_FIELDS}
    return json.loads(json.dumps(values, default=str, sort_keys=True))


def changed_settings(stored: dict | None, current: dict | None) -> list[str]:
    """Settings whose value differs between a stored result and today's config (recursing into dicts, such as the
    two configs of a timed pair). Results written before settings were recorded (``stored`` is None) count as
    unchanged: nothing to compare. A setting known to one side only (a field added or removed by an upgrade) is not a
    change either."""
    if stored is None or current is None:
        return []
    changed = []
    for key in sorted(set(stored) & set(current)):
        old, new = stored[key], current[key]
        if isinstance(old, dict) and isinstance(new, dict):
            changed += [f"{key}.{k}" for k in changed_settings(old, new)]
        elif old != new:
            changed.append(key)
    return changed


def stale_reason(path: Path, current: dict | None) -> str | None:
    """Why the result at ``path`` must be recomputed (missing, or its settings changed), or None to reuse it."""
    if not path.exists():
        return "missing"
    stored = json.loads(path.read_text(encoding="utf-8")).get(SETTINGS_KEY)
    changed = changed_settings(stored, current)
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        return f"its method settings changed ({shown})"
    return None
