"""Logging settings. Records of the Rust core arrive in Python ``logging`` under ``demessaging_rs.*``."""

from __future__ import annotations

import logging.config
from pathlib import Path
from typing import Dict, Optional

import yaml
from pydantic import Field, FilePath, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict

from demessaging_rs.utils import append_parameter_docs, merge_config

DEFAULT_CONFIG_FILE = Path(__file__).parent / "logging.yaml"


@append_parameter_docs
class LoggingConfig(BaseSettings):
    """How demessaging-rs logs (environment prefix ``DE_LOGGING_``)."""

    model_config = SettingsConfigDict(env_prefix="de_logging_")

    config_file: FilePath = Field(DEFAULT_CONFIG_FILE, description="A logging configuration in YAML (dictConfig).")

    level: Optional[PositiveInt] = Field(
        None, description="Level of every configured logger (10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR, 50 CRITICAL)."
    )

    logfile: Optional[Path] = Field(None, description="Also log to this file (rotating).")

    config_overrides: Optional[Dict] = Field(None, description="Merged into the logging configuration.")

    merge_config: bool = Field(False, description="Merge config_file into the default configuration.")

    @property
    def config_dict(self) -> Dict:
        """The resulting dictConfig dictionary."""
        config = yaml.safe_load(self.config_file.read_text())
        if not config:
            raise ValueError(f"Config file at {self.config_file} is empty!")
        if self.merge_config and not self.config_file.samefile(DEFAULT_CONFIG_FILE):
            config = merge_config(yaml.safe_load(DEFAULT_CONFIG_FILE.read_text()), config)
        loggers = config.get("loggers", {})
        if self.level is not None:
            for logger in loggers.values():
                logger["level"] = self.level
        if self.logfile is not None:
            merge_config(
                config,
                {
                    "formatters": {"logfile": {"format": "%(asctime)s %(levelname)s [%(name)s] %(message)s"}},
                    "handlers": {
                        "file_handler": {
                            "class": "logging.handlers.RotatingFileHandler",
                            "level": "DEBUG",
                            "formatter": "logfile",
                            "filename": str(self.logfile),
                            "maxBytes": 10 * 1024 * 1024,
                            "backupCount": 5,
                            "encoding": "utf8",
                            "delay": True,
                        }
                    },
                },
            )
            for logger in loggers.values():
                logger.setdefault("handlers", []).append("file_handler")
        if self.config_overrides:
            config = merge_config(config, self.config_overrides)
        return config

    def configure_logging(self) -> None:
        """Apply the configuration."""
        logging.config.dictConfig(self.config_dict)
