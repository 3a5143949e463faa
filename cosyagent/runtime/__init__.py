"""The process side: engines built from config and loaded once, and the sessions they serve."""

from cosyagent.runtime.process import Runtime

__all__ = ["Runtime"]
