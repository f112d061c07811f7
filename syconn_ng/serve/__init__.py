"""`syconn-ng serve`: the review page (Neuroglancer beside a live wiring matrix), its JSON API and review.sqlite.

`ReviewServer(analysis_dir, ...).start()` runs it on a background thread; see docs/api.md and docs/review.md.
"""
