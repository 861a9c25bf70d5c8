"""Storage tiers behind one small interface (see :mod:`tnfr_fastcache.backends.base`)."""
