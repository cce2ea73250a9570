"""Shared test settings."""

import os

from hypothesis import HealthCheck, settings

# Keep the suite within its time budget on a 2-core machine; `make fuzz` runs the long profile.
settings.register_profile(
    "default", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("fuzz", deadline=None, max_examples=20000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
