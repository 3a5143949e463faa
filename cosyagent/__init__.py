"""cosyagent: a self-hosted, real-time voice agent speaking the OpenAI Realtime API."""

__version__ = "0.1.0"
