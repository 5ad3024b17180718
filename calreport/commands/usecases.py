"""The use cases behind the CLI. Every action that writes a file of record re-renders the site
from here, so the dashboard is regenerated after every apply and every calibration run."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from calreport.commands import audit as _audit  # noqa: F401 - registers the git-commit hook on every apply
from calreport.store import applied as apply_mod
from calreport.store.config import DEFAULT_CONFIG_TEXT, load_config
from calreport.store.files import atomic_write
from calreport.store.history import ensure_history_files
from calreport.store.models import ApplyEvent, AutoRun, LiveRun
from calreport.store.paths import Root


def rerender(root: Root) -> None:
    """The one place that regenerates site/ after a write."""
    from calreport.report import render_site

    render_site(root)


def init(root: Root) -> list[Path]:
    """Create a root: default config, initial applied YAML (1.0 each), empty history, a site."""
    created: list[Path] = []
    root.config_dir.mkdir(parents=True, exist_ok=True)
    if not root.calibration_config.exists():
        atomic_write(root.calibration_config, DEFAULT_CONFIG_TEXT.encode("utf-8"))
        created.append(root.calibration_config)
    cfg = load_config(root)
    if apply_mod.init_applied(root, cfg):
        created.append(root.applied)
    for p in (root.live_history, root.auto_history):
        if not p.exists():
            created.append(p)
    ensure_history_files(root)
    rerender(root)
    return created


def force_apply(root: Root, underlying: str, *, allow_unrealistic: bool = False) -> ApplyEvent:
    event = apply_mod.force_apply(root, underlying, allow_unrealistic=allow_unrealistic)
    rerender(root)
    return event


def calibrate(
    root: Root,
    underlying: str,
    snapshot: Path,
    *,
    prices: Path | None = None,
    rv: float | None = None,
) -> LiveRun:
    """One live run: history row, policy decision, apply if the policy says so, re-render."""
    from calreport.calibration.live import run_live_calibration

    run = run_live_calibration(root, underlying, snapshot, prices=prices, rv=rv)
    rerender(root)
    return run


def auto_calibrate(
    root: Root,
    underlying: str,
    *,
    dte: str | None = None,
    lookback: str | None = None,
    as_of: datetime | None = None,
) -> AutoRun:
    """One auto-calibrate run over the harvest: history only, never the applied multipliers."""
    from calreport.calibration.auto import run_auto_calibration

    run = run_auto_calibration(root, underlying, dte=dte, lookback=lookback, as_of=as_of)
    rerender(root)
    return run


def rollback(root: Root, underlying: str, *, to: str | None = None) -> ApplyEvent:
    from calreport.commands.audit import rollback as do_rollback

    event = do_rollback(root, underlying, to=to)
    rerender(root)
    return event
