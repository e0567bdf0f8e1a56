"""Searching keep schedules on search data (DESIGN §1, §3).

- :mod:`~vtr_bench.search.objective`: the search objective, the accuracy of a schedule on a search split, cached
  on disk (one JSON file per evaluation), so killed searches resume and repeated ones cost nothing.
- :mod:`~vtr_bench.search.greedy`: G-Search, the greedy shallow-to-deep binary search (no budget).
- :mod:`~vtr_bench.search.bayes`: Bayesian optimisation (scikit-optimize ``gp_minimize``), used by P-Sigmoid.
- :mod:`~vtr_bench.search.method`: the base class of the search methods (``method=gsearch`` / ``psigmoid``).
- :mod:`~vtr_bench.search.report`: saved schedules (``runs/schedules/*.json``), plots, W&B logging.
- :mod:`~vtr_bench.search.rank`: rank-stability analysis (Kendall tau between layers' token rankings).

Heavy packages (torch, lmms-eval, scikit-optimize, matplotlib) are imported where they are used.
"""
