"""The one error a bad configuration raises."""


class ConfigError(ValueError):
    pass
