"""Fuzz targets for every parser that takes outside bytes; ``python fuzz/run.py`` runs them for minutes.

One module per target area; each exposes :class:`fuzz.engine.Target` objects whose ``check`` is the
property. The unit and integration smoke tests (``tests/unit/test_fuzz_smoke.py``,
``tests/integration/test_fuzz_intake_smoke.py``) run the same properties for a few seconds.
"""
