"""Readers of the formats `omni-img data` converts: each cuts its input into work units
and reads one unit as `Example`s and `Skip`s (omni_img/data/conversion.py)."""
