"""``hf-deepclean audit``: judge an unlearning method against a population of retrained models.

One unlearned model compared with one retrained model cannot tell good unlearning from retraining's own randomness.
An audit runs the method N times from one original (distinct seeds) and retrains N times on D_r (the original's
recipe, distinct seeds), then asks per forget example whether the two populations of its logit-scaled confidence
can be told apart: the NeurIPS 2023 Machine Unlearning competition's forget score F
(:func:`~hf_deepclean.evaluation.forgetting_quality`), read against the retrains' own F at N/2 vs N/2.

- :func:`run_audit` (:mod:`.runner`): the models, cached per model and resumable, and ``audit.{json,md}`` + plots.
- :func:`summarize` (:mod:`.summary`): the scores of two :class:`Population` objects (arrays, no models).
- :func:`audit_record` (:mod:`.record`): the audit's summary for the report and the model card, checked to match.
- :mod:`.settings`: the cache key; :mod:`.cache`: one file per model; :mod:`.plots`: the two plots.
"""

from .cache import ModelRecord
from .record import audit_record
from .runner import AUDIT_KEYS, DEFAULT_NUM_MODELS, DEFAULT_RETAIN_SAMPLE, model_record, population_of, run_audit
from .settings import AUDIT_JSON, AUDIT_MARKDOWN, SETTINGS_FILE, audit_settings, weights_sha256
from .summary import Population, reference_halves, summarize, summary_markdown

__all__ = [
    "AUDIT_JSON", "AUDIT_KEYS", "AUDIT_MARKDOWN", "DEFAULT_NUM_MODELS", "DEFAULT_RETAIN_SAMPLE", "SETTINGS_FILE",
    "ModelRecord", "Population", "audit_record", "audit_settings", "model_record", "population_of", "reference_halves",
    "run_audit",
    "summarize", "summary_markdown", "weights_sha256",
]
