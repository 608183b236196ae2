"""The benchmark harness behind ``hf-deepclean benchmark`` (the method comparison, ``--sensitivity`` and
``--population_models``).

Modules, each importing only modules listed before it (and the library):

- ``arguments``: the command's options (:class:`BenchmarkArguments`, :class:`SensitivityArguments`)
- ``cache``: which cached results are still valid (the method settings each records)
- ``common``: what both harnesses share: run set-up, the settings guard, base data, JSON writing, progress lines
- ``summary``, ``sensitivity_summary``: tables, JSON and plots from finished results
- ``models``: one scenario's splits (:class:`Scenario`) and the cache of trained models (:class:`ModelStore`)
- ``context``: :class:`BenchmarkRun` (what the whole run shares) and :class:`GroupContext` (one (model, seed) group)
- ``cells``: one cell of the method comparison, and the gold/original reference every result is judged against
- ``harness``: the method comparison (:func:`benchmark`)
- ``sensitivity_points``: the points of one (model, scenario, seed) of the sensitivity sweep (:class:`SensitivityGroup`)
- ``sensitivity``: the sensitivity sweep (:func:`run_sensitivity`)
- ``population_summary``: the judgement of each method against the retrains, the restated targets, the table
- ``population``: the comparison against a population of retrains (:func:`run_population`, ``--population_models``)

Nothing is imported here: ``import hf_deepclean.benchmark.sensitivity_summary`` stays light.
"""
