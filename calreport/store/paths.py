"""Where each file of record lives inside a calibration root (docs/FILES.md describes each one)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Root:
    """A calibration root: all state lives under one directory."""

    path: Path

    @classmethod
    def resolve(cls, arg: str | os.PathLike[str] | None = None) -> "Root":
        """`--root DIR`, else `$CALREPORT_ROOT`, else the current directory."""
        chosen = arg if arg else os.environ.get("CALREPORT_ROOT") or os.getcwd()
        return cls(Path(chosen).expanduser().resolve())

    @property
    def config_dir(self) -> Path:
        return self.path / "config"

    @property
    def applied(self) -> Path:
        return self.config_dir / "applied_multipliers.yaml"

    @property
    def calibration_config(self) -> Path:
        return self.config_dir / "calibration.yaml"

    @property
    def history_dir(self) -> Path:
        return self.path / "history"

    @property
    def live_history(self) -> Path:
        return self.history_dir / "live_calibration.jsonl"

    @property
    def auto_history(self) -> Path:
        return self.history_dir / "auto_calibrate.jsonl"

    @property
    def alert_history(self) -> Path:
        """Alerts raised for runs and their delivery (commands/adapters/alerts.py)."""
        return self.history_dir / "alerts.jsonl"

    @property
    def runs_dir(self) -> Path:
        """Per-run quote-level detail files, kept beside the history, not inside it."""
        return self.history_dir / "runs"

    def run_detail(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    def harvest_dir(self, underlying: str) -> Path:
        return self.path / "data" / "harvest" / underlying

    def snapshots_dir(self, underlying: str) -> Path:
        """Chains fetched by a live `calreport calibrate` (kept so every run can be re-derived)."""
        return self.path / "data" / "snapshots" / underlying

    @property
    def cache_dir(self) -> Path:
        return self.path / "data" / "cache"

    @property
    def backtests_dir(self) -> Path:
        """`calreport backtest` results, one directory per backtest (never read by the engine)."""
        return self.path / "backtests"

    @property
    def site_dir(self) -> Path:
        return self.path / "site"

    @property
    def index_html(self) -> Path:
        return self.site_dir / "index.html"

    @property
    def state_json(self) -> Path:
        return self.site_dir / "api" / "calibration" / "state.json"


def lock_path(path: Path) -> Path:
    """The sibling lock file guarding `path`; it is never deleted."""
    return path.with_name(path.name + ".lock")
