"""The browser tests use the same in-process server as the e2e tests (real models)."""

from tests.e2e.conftest import live_server

__all__ = ["live_server"]
