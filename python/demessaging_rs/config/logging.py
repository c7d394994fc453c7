"""Logging settings of a backend module (``--log-config``, ``--log-level``, ``--log-file``, ...).

The default configuration (``logging.yaml`` next to this file) uses the handler, formatter and logger
names and the levels of ``demessaging``: handlers ``console`` (stdout) and ``warning_console``
(stderr, WARNING and above), formatters ``simple`` and ``full``. It configures the ``demessaging_rs``
logger tree, under which both our Python modules and the Rust core log (records of the Rust core
reach Python ``logging`` through a bridge), and keeps the reference's ``demessaging`` and
``websocket`` entries so that configurations written for ``demessaging`` still apply.

A configuration written for ``demessaging`` sets up the logger ``demessaging`` (or loggers below it),
under which this package does not log. So that such a file affects our records as well, each
``demessaging[.X]`` entry of a user's configuration file or of ``config_overrides`` is also applied to
``demessaging_rs[.X]``, unless that entry is given explicitly.
"""

from __future__ import annotations

import copy
import logging.config
from pathlib import Path
from typing import Any, Dict, Optional, cast

import yaml
from pydantic import Field, FilePath, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict

from demessaging_rs.utils import append_parameter_docs, merge_config

DEFAULT_CONFIG_FILE = Path(__file__).parent / "logging.yaml"

#: Name of the handler that ``logfile`` adds to every configured logger.
FILE_HANDLER = "file_handler"

#: Formatter of the ``logfile`` handler (same name and format as in the default configuration).
FILE_FORMATTER = "full"
_FULL_FORMAT = "%(asctime)s - %(levelname)s - [%(name)s.%(funcName)s]: %(message)s"


#: The reference's logger tree and ours.
REFERENCE_LOGGER = "demessaging"
OWN_LOGGER = "demessaging_rs"


def _mirror_reference_loggers(config: Dict[Any, Any]) -> Dict[Any, Any]:
    """Copy every ``demessaging[.X]`` logger entry of `config` to ``demessaging_rs[.X]`` if that is missing."""
    loggers = config.get("loggers")
    if isinstance(loggers, dict):
        for name in list(loggers):
            if name == REFERENCE_LOGGER or name.startswith(REFERENCE_LOGGER + "."):
                own = OWN_LOGGER + name[len(REFERENCE_LOGGER) :]
                if own not in loggers:
                    loggers[own] = copy.deepcopy(loggers[name])
    return config


def _read_yaml(path: Path) -> Any:
    with path.open("rt") as f:
        return yaml.safe_load(f)


@append_parameter_docs
class LoggingConfig(BaseSettings):
    """How a backend module logs. Every field can be set by an environment variable ``DE_LOGGING_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="de_logging_")

    config_file: FilePath = Field(
        DEFAULT_CONFIG_FILE,
        description="YAML file with the logging setup, in the dictionary schema of logging.config.dictConfig.",
    )

    level: Optional[PositiveInt] = Field(
        None,
        description=(
            "If given, this level replaces the level of every logger in the logging setup. Smaller "
            "values log more: 10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR, 50 CRITICAL."
        ),
    )

    logfile: Optional[Path] = Field(
        None,
        description=(
            "If given, every logger in the logging setup also writes to this file, through a "
            "RotatingFileHandler (10 MB per file, 5 backups) that records everything from DEBUG on."
        ),
    )

    config_overrides: Optional[Dict[Any, Any]] = Field(
        None,
        description="A dictionary that is merged into the logging setup last, after all other options.",
    )

    merge_config: bool = Field(
        False,
        description=(
            "Merge the given logging setup into the default one (%s) instead of replacing it." % DEFAULT_CONFIG_FILE
        ),
    )

    @property
    def config_dict(self) -> Dict[str, Any]:
        """The dictionary handed to :func:`logging.config.dictConfig`."""
        config: Any = _read_yaml(self.config_file)
        if not config:
            raise ValueError("Config file at %s is empty!" % (self.config_file,))
        if isinstance(config, dict):
            config = _mirror_reference_loggers(config)
        if self.merge_config and not self.config_file.samefile(DEFAULT_CONFIG_FILE):
            config = merge_config(_read_yaml(DEFAULT_CONFIG_FILE), config)

        loggers = config.get("loggers", {})
        if self.level is not None:
            for logger in loggers.values():
                logger["level"] = self.level

        if self.logfile is not None:
            handler = {
                "class": "logging.handlers.RotatingFileHandler",
                "mode": "w",
                "level": "DEBUG",
                "formatter": FILE_FORMATTER,
                "filename": str(self.logfile),
                "maxBytes": 10 * 1024 * 1024,
                "backupCount": 5,
                "encoding": "utf8",
                "delay": True,
            }
            merge_config(
                config,
                {"formatters": {FILE_FORMATTER: {"format": _FULL_FORMAT}}, "handlers": {FILE_HANDLER: handler}},
            )
            for logger in loggers.values():
                logger.setdefault("handlers", []).append(FILE_HANDLER)

        if self.config_overrides:
            config = merge_config(config, _mirror_reference_loggers(copy.deepcopy(self.config_overrides)))
        return cast(Dict[str, Any], config)

    def configure_logging(self) -> None:
        """Apply :attr:`config_dict` with :func:`logging.config.dictConfig`."""
        config = self.config_dict
        logging.config.dictConfig(config)
        # the Rust core passes records at INFO and above to Python unless a configured logger wants more
        from demessaging_rs._core import configure_rust_logging

        levels = [logging.getLogger(name).getEffectiveLevel() for name in ("demessaging_rs", *config.get("loggers", {}))]
        configure_rust_logging(min([*levels, logging.INFO]))
