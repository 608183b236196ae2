"""The unlearning report: metrics of the unlearned, gold and original models, as JSON and as the paper's table."""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPORT_JSON = "unlearning_report.json"
REPORT_MARKDOWN = "unlearning_report.md"
METRIC_KEYS = ("retain_accuracy", "forget_accuracy", "test_accuracy", "mia_loss_lr", "mia_efficacy")
CLASS_METRIC_KEYS = ("test_forget_class_accuracy", "test_other_accuracy")
# (label, metric key, show a delta-to-gold row after it)
_TABLE_ROWS = (
    ("Acc_Dr", "retain_accuracy", True),
    ("Acc_Df", "forget_accuracy", True),
    ("Acc_test", "test_accuracy", True),
    ("Acc_test (forgotten classes)", "test_forget_class_accuracy", False),
    ("Acc_test (other classes)", "test_other_accuracy", False),
    ("MIA (loss LR)", "mia_loss_lr", True),
    ("MIA-efficacy", "mia_efficacy", True),
)


def _json_safe(value: Any) -> Any:
    """Plain JSON types only: numpy scalars and arrays become Python values, NaN/Inf become null."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy / torch
        return _json_safe(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def class_list(labels, names=None) -> str:
    """``8 (triangle), 9 (star)``: class ids with the dataset's names where they say more than the id."""
    names = list(names or [])
    shown = []
    for i, label in enumerate(labels):
        name = str(names[i]) if i < len(names) else None
        shown.append(f"{label} ({name})" if name not in (None, "", str(label)) else str(label))
    return ", ".join(shown)


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _pct(value: Any, signed: bool = False) -> str:
    if not _real(value):
        return "—"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _interval_text(interval: Any) -> str:
    if not (isinstance(interval, (list, tuple)) and len(interval) == 2 and all(_real(v) for v in interval)):
        return ""
    return f" [{_pct(interval[0], signed=True)}, {_pct(interval[1], signed=True)}]"


def audit_markdown(audit: dict | None, *, has_gold: bool) -> str:
    """The report's paragraph on the evidence against a population of retrains: the audit's own sentence and
    scores, or, without an audit, what a comparison with one retrained model cannot show."""
    if not audit:
        compared = ("The deltas above compare with one retrained model" if has_gold
                    else "No retrained model was compared here")
        return (f"Evidence against a population of retrains: none. {compared}; how much retraining itself varies "
                "from seed to seed is not measured, so a delta near 0 does not show by itself that the model forgot. "
                "`hf-deepclean audit` measures it (N runs of the method against N retrains, the NeurIPS 2023 "
                "unlearning competition's forget score); pass its folder as --audit_dir to carry it here.")
    text = f"Evidence against a population of retrains (`hf-deepclean audit`): {audit.get('statement', '')}"
    if _real(audit.get("final_score")):
        text += f" Final score F x (RA_U/RA_R) x (TA_U/TA_R) = {audit['final_score']:.3f} (means over models)."
    accuracy = audit.get("accuracy") or {}
    parts = []
    for split in ("retain", "test"):
        u, r = (accuracy.get(pop, {}).get(split) or {} for pop in ("unlearned", "retrained"))
        if all(_real(x.get(k)) for x in (u, r) for k in ("mean", "min", "max")):
            parts.append(f"{split} {_pct(u['mean'])} [{_pct(u['min'])}, {_pct(u['max'])}] unlearned, "
                         f"{_pct(r['mean'])} [{_pct(r['min'])}, {_pct(r['max'])}] retrained")
    if parts:
        text += " Accuracy, mean [min, max] over models in %: " + "; ".join(parts) + "."
    if audit.get("method_overrides"):
        text += f" The audit ran {audit.get('method')} with {json.dumps(audit['method_overrides'])}."
    return text


@dataclass
class UnlearningReport:
    """What was forgotten, how, and the evidence: metrics of each model and their deltas to the gold model.

    Attributes:
        method: Unlearning method (``deepclean``, ``ssd``, ...).
        scenario: ``class``, ``random``, ``samples`` or ``noisy_labels``.
        forget: ``size``, ``labels`` (class ids for class forgetting) and ``label_names`` (their names),
            ``fingerprint``, ``kind``.
        metrics: The unlearned model's ``retain_accuracy``, ``forget_accuracy``, ``test_accuracy``,
            ``mia_loss_lr``, ``mia_efficacy`` (fractions in [0, 1]); for class forgetting also
            ``test_forget_class_accuracy`` and ``test_other_accuracy``.
        gold: The same keys for the model retrained on D_r, plus ``time_s`` (its training seconds).
        original: The same keys for the model before unlearning (the "did nothing" reference).
        deltas: Unlearned minus gold, per metric (closer to 0 is better).
        delta_intervals: ``[low, high]`` per accuracy delta: the 95 % paired bootstrap interval over the
            evaluated samples (:mod:`~hf_deepclean.evaluation.intervals`), how far the delta would move on another
            split of the same size; it does not cover training randomness.
        selection: ``threshold``, ``selected_fraction``, ``num_selected`` of the weight mask.
        time_s: Unlearning seconds: ``fisher``, ``train``, ``total``.
        mia: Per model (``unlearned``, ``gold``, ``original``) the full attack results
            (``loss_lr``, ``efficacy``) with their sample counts and ``noisy`` flags.
        notes: Caveats worth reading next to the numbers (noisy attacks, how non-members were chosen).
        config: How the evaluation ran (seed, batch size, sample counts).
        audit: The summary of an audit of the same original and forget set (``hf-deepclean audit``,
            :func:`hf_deepclean.audit.audit_record`): F against a population of retrains, the retrains' own
            reference, the final score, the accuracies' spread and the audit's sentence; ``None`` without one.
    """

    method: str = "deepclean"
    scenario: str | None = None
    forget: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    gold: dict | None = None
    original: dict | None = None
    deltas: dict = field(default_factory=dict)
    delta_intervals: dict = field(default_factory=dict)
    selection: dict | None = None
    time_s: dict = field(default_factory=dict)
    mia: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    audit: dict | None = None

    def to_dict(self) -> dict:
        """A JSON-safe dict with the keys of DESIGN.md (NaN becomes ``None``)."""
        return _json_safe(asdict(self))

    # Mapping protocol, so that ``dict(report)`` and ``{**report}`` give the JSON-safe dict too.
    def keys(self):
        return self.to_dict().keys()

    def __getitem__(self, key: str):
        return self.to_dict()[key]

    @classmethod
    def from_dict(cls, data: dict) -> UnlearningReport:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)

    def _columns(self) -> list[tuple[str, dict]]:
        columns = []
        if self.original:
            columns.append(("Original", self.original))
        if self.gold:
            columns.append(("Gold (retrained)", self.gold))
        columns.append((f"Unlearned ({self.method})", self.metrics))
        return columns

    def to_markdown(self) -> str:
        """The paper's comparison table (a column per model, accuracies and MIA in %) with the notes."""
        columns = self._columns()
        gold = self.gold or {}
        title = f"## Unlearning report: {self.method}" + (f" ({self.scenario} forgetting)" if self.scenario else "")
        lines = [title, ""]
        forget = self.forget or {}
        what = f"Forget set: {forget.get('size', '?')} samples"
        if forget.get("labels") not in (None, []):
            what += f", classes {class_list(forget['labels'], forget.get('label_names'))}"
        if forget.get("fingerprint"):
            what += f", fingerprint `{forget['fingerprint']}`"
        lines += [what + ".", ""]
        lines.append("| Metric | " + " | ".join(name for name, _ in columns) + " |")
        lines.append("|---|" + "---:|" * len(columns))
        present = {key for _, values in columns for key, v in values.items() if _real(v)}
        for label, key, with_delta in _TABLE_ROWS:
            if key in CLASS_METRIC_KEYS and key not in present:
                continue
            lines.append(f"| {label} | " + " | ".join(_pct(values.get(key)) for _, values in columns) + " |")
            if with_delta and self.gold:
                cells = []
                for _, values in columns:
                    value, ref = values.get(key), gold.get(key)
                    same = values is self.gold
                    cell = "—" if same or not (_real(value) and _real(ref)) else _pct(value - ref, signed=True)
                    if values is self.metrics and cell != "—":
                        cell += _interval_text((self.delta_intervals or {}).get(key))
                    cells.append(cell)
                lines.append(f"| Δ{label} | " + " | ".join(cells) + " |")
        times = []
        for _, values in columns:
            if values is self.metrics:
                times.append((self.time_s or {}).get("total"))
            else:
                times.append(values.get("time_s"))
        lines.append("| time (s) | " + " | ".join(f"{t:.1f}" if _real(t) else "—" for t in times) + " |")
        lines.append("")
        reference = (
            "Δ = model minus gold: the closer to 0, the closer to retraining from scratch."
            if self.gold
            else "No gold (retrained) model was evaluated: there is no reference to compare with."
        )
        if self.gold and self.delta_intervals:
            reference += (" Brackets: the 95 % interval of the unlearned model's Δ under a paired bootstrap over the "
                          "evaluated samples, what the split's size alone can explain (not training randomness).")
        lines.append(
            f"Accuracies and MIA in %. {reference} "
            "MIA (loss LR): accuracy of a loss-based attacker telling the forget set from unseen data "
            "(50 = cannot tell). MIA-efficacy: % of the forget set an SVC attacker calls unseen (higher = more forgotten)."
        )
        selection = self.selection or {}
        if _real(selection.get("selected_fraction")):
            text = f"Weights updated: {selection['selected_fraction']:.4%}"
            if selection.get("num_selected") is not None:
                text += f" ({selection['num_selected']})"
            if _real(selection.get("threshold")):
                text += f" at gamma = {selection['threshold']:.4g}"
            lines += ["", text + "."]
        timing = {k: v for k, v in (self.time_s or {}).items() if _real(v)}
        if timing:
            lines += ["", "Unlearning time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timing.items()) + "."]
        lines += ["", audit_markdown(self.audit, has_gold=bool(self.gold))]
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def save(self, output_dir: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``unlearning_report.json`` and ``unlearning_report.md`` into ``output_dir`` (each atomically)."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, text in ((REPORT_JSON, self.to_json() + "\n"), (REPORT_MARKDOWN, self.to_markdown())):
            path = out / name
            tmp = out / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
            paths.append(path)
        return paths[0], paths[1]

    @classmethod
    def load(cls, path: str | os.PathLike) -> UnlearningReport:
        """Read a report from its JSON file or from the folder that holds ``unlearning_report.json``."""
        path = Path(path)
        if path.is_dir():
            path = path / REPORT_JSON
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"No unlearning report at {path}: run `hf-deepclean evaluate` first.") from exc
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not a valid unlearning report (invalid JSON: {exc}).") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not an unlearning report (expected a JSON object).")
        return cls.from_dict(data)


__all__ = ["CLASS_METRIC_KEYS", "METRIC_KEYS", "REPORT_JSON", "REPORT_MARKDOWN", "UnlearningReport", "audit_markdown"]
