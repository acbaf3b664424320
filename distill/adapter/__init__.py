"""Everything this package relies on in Ultralytics beyond its documented public API, in one place.

:mod:`~distill.adapter.seams` — the underscored (private) names, and the helpers every call to them goes through;
:mod:`~distill.adapter.assumptions` — the behaviour relied on through public names. ``tests/test_seams.py`` checks both
against the installed Ultralytics, one named test per reliance, so an upgrade past the pin fails where it breaks.
"""
