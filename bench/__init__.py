"""Benchmarks of cut-hf, run as ``python bench/bench.py`` (or ``python -m bench``); figures go to RESULTS.md.

One module per section of the run (:mod:`bench.main` documents what each measures):

- :mod:`bench.common`: the run's :class:`~bench.common.Config` and the timing, memory and FLOP helpers.
- :mod:`bench.roofline`: (a) the roofline convolution every case is compared with.
- :mod:`bench.train_step`: (b) the training step as ``train.py`` builds it (through its own parser), (b') paired
  variants, (g) the GPU check's cases.
- :mod:`bench.paper`: (p) the paper path, the baseline every speed-up is measured against.
- :mod:`bench.translate`: (c) ``translate()`` images/s.
- :mod:`bench.ops`: (e) the single operations behind the fast-path defaults.
- :mod:`bench.runner`: one case in this process or a fresh subprocess (honest peak memory).
- :mod:`bench.sections`: each section's loop over its cases (budget, ``--only``, JSON after each case).
- :mod:`bench.report`: the printed tables.

``profile_step.py``, ``export_bench.py`` and ``translate_bench.py`` are separate scripts that use these modules.
"""
