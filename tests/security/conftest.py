"""The security suite: the API test fixtures (both backends, users of each role, the factory) plus
what the attacks need. Each case here was tried against the platform as a hostile operator would."""
from __future__ import annotations

from tests.api.conftest import make, users  # noqa: F401 - fixtures shared with the API suite
