"""`calreport import-legacy FILES...`: the previous system's run records into history, each once.

Decisions (why):
- run_id is `legacy-<sha256 of the file's bytes, 12 hex>`, so importing the same record again is a
  no-op, whatever its file is called.
- live records become `live_run` rows with `source: "legacy"` (the old source is kept as
  `legacy_source`), so `force-apply` (which takes the latest row with source `live`) never picks an
  imported run: an import must not change what would be applied. Harvested records become `auto_run`
  rows, which can never be applied anyway.
- `applied: true` in a record is history, not a command: no apply event, no YAML change. It is kept
  as the row's decision (`apply`/`hold`) with the old `applied_reason`, marked as the old system's.
- The old bands (`weekly` 3-10 DTE, `monthly`, ...) are not our DTE bands: their metrics go to
  `by_band` under their old names, and `recommended`/`smoothed` carry only the global multiplier, so a
  legacy band label can never reach the applied YAML.
- The status is recomputed with assess_calibration_realism from the record's own numbers.
- A malformed record is one line naming the file; the others are still imported; exit 1 at the end.
- Imported rows keep their own (old) time: the dashboard and doctor order history by time, not by
  position in the file, so records appended after newer runs still sit below them.

`import_legacy` returns an ImportResult and prints nothing; `format_import` gives the lines to print.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from calreport.commands.workspace import Workspace
from calreport.errors import CalreportError, excerpt
from calreport.model import (
    UNDERLYING_RE,
    AutoRun,
    CalibrationConfig,
    DataQuality,
    GroupMetrics,
    LiveRun,
    Multipliers,
)
from calreport.realism import assess_calibration_realism
from calreport.store.files import locked
from calreport.store.history import append_row, read_history
from calreport.store.paths import Root
from calreport.store.yamlio import validation_problem
from calreport.timeutil import iso_utc, parse_time

LEGACY_SOURCE = "legacy"
MAX_RECORD_BYTES = 10_000_000


def _finite_or_none(v: Any) -> Any:
    """Numbers must be JSON numbers (not '1.08', not true) and finite; null stays None."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {type(v).__name__} {excerpt(v, 40)}")  # noqa: TRY004 - pydantic wants ValueError
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"non-finite number {excerpt(v, 40)}")
    return v


class _Legacy(BaseModel):
    model_config = ConfigDict(extra="allow")


class LegacyMetrics(_Legacy):
    mae_pct: float | None = None
    bias_pct: float | None = None
    mae_vol_points: float | None = None
    vega_weighted_mae_pct: float | None = None

    @field_validator("mae_pct", "bias_pct", "mae_vol_points", "vega_weighted_mae_pct", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        return _finite_or_none(v)


class LegacyBand(_Legacy):
    name: str
    min_dte: float | None = None
    max_dte: float | None = None
    count: int | None = None
    mae_pct: float | None = None
    bias_pct: float | None = None
    recommended_iv_multiplier: float | None = None

    @field_validator("min_dte", "max_dte", "count", "mae_pct", "bias_pct", "recommended_iv_multiplier", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        return _finite_or_none(v)


class LegacyBandMultiplier(_Legacy):
    name: str
    min_dte: float | None = None
    max_dte: float | None = None
    iv_multiplier: float | None = None

    @field_validator("min_dte", "max_dte", "iv_multiplier", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        return _finite_or_none(v)


class LegacyRecord(_Legacy):
    """One run record of the old system (the shape of ../shared/data/legacy-calibration-runs)."""

    timestamp: str | int | float
    underlying: str
    source: Literal["live", "harvested"]
    config_hash: str | None = None
    global_metrics: LegacyMetrics | None = None
    bands: list[LegacyBand] | None = None
    recommended_iv_multiplier: float | None = None
    recommended_band_multipliers: list[LegacyBandMultiplier] | None = None
    sample_size: int | None = Field(default=None, ge=0)
    vega_sum: float | None = None
    smoothed_global_multiplier: float | None = None
    smoothed_band_multipliers: list[LegacyBandMultiplier] | None = None
    applied: bool | None = None
    applied_reason: str | None = None

    @field_validator("recommended_iv_multiplier", "smoothed_global_multiplier", "vega_sum", "sample_size", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        return _finite_or_none(v)

    @field_validator("timestamp")
    @classmethod
    def _time(cls, v: Any) -> Any:
        try:
            iso_utc(parse_time(v))
        except (OverflowError, OSError) as exc:
            raise ValueError(f"timestamp out of range: {excerpt(v, 40)}") from exc
        return v

    @field_validator("underlying")
    @classmethod
    def _underlying(cls, v: str) -> str:
        name = v.upper()
        if not UNDERLYING_RE.match(name):
            raise ValueError(f"bad underlying name {excerpt(v, 40)}")
        return name


def legacy_run_id(raw: bytes) -> str:
    return "legacy-" + hashlib.sha256(raw).hexdigest()[:12]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def parse_legacy(raw: bytes, path: Path | str) -> LegacyRecord:
    """Bytes of one record -> LegacyRecord; any problem is a one-line CalreportError naming `path`."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise CalreportError(f"malformed legacy record: not UTF-8 (byte {exc.start})", path) from None
    except (ValueError, RecursionError) as exc:
        raise CalreportError(f"malformed legacy record: not JSON ({' '.join(str(exc).split())})", path) from None
    if not isinstance(data, dict):
        raise CalreportError(f"malformed legacy record: expected a JSON object, got {type(data).__name__}", path)
    try:
        return LegacyRecord.model_validate(data)
    except ValidationError as exc:
        raise CalreportError(f"malformed legacy record: {validation_problem(exc)}", path) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise CalreportError(f"malformed legacy record: {' '.join(str(exc).split())}", path) from None


def _provenance(rec: LegacyRecord, path: Path) -> dict[str, Any]:
    return {
        "imported_from": path.name,
        "legacy_source": rec.source,
        "legacy_applied": rec.applied,
        "legacy_applied_reason": rec.applied_reason,
        "legacy": rec.model_dump(mode="json"),
    }


def _by_band(rec: LegacyRecord) -> dict[str, GroupMetrics] | None:
    if not rec.bands:
        return None
    return {
        b.name: GroupMetrics(samples=b.count, mae_pct=b.mae_pct, bias_pct=b.bias_pct, recommended=b.recommended_iv_multiplier)
        for b in rec.bands
    }


def _decision_reason(rec: LegacyRecord) -> str:
    verdict = "applied" if rec.applied else "held"
    why = f": {rec.applied_reason}" if rec.applied_reason else ""
    return f"Legacy system {verdict}{why} (imported; not applied by calreport)"


def to_live_row(rec: LegacyRecord, path: Path, run_id: str, cfg: CalibrationConfig) -> LiveRun:
    m = rec.global_metrics or LegacyMetrics()
    multiplier = rec.recommended_iv_multiplier if rec.recommended_iv_multiplier is not None else rec.smoothed_global_multiplier
    status, reason = assess_calibration_realism(
        multiplier, m.mae_pct, m.vega_weighted_mae_pct, None, thresholds=cfg.realism, kind="live"
    )
    return LiveRun(
        schema_version=1,
        run_id=run_id,
        ts=iso_utc(parse_time(rec.timestamp)),
        underlying=rec.underlying,
        source=LEGACY_SOURCE,
        recommended=Multipliers(global_=rec.recommended_iv_multiplier, bands={}),
        smoothed=Multipliers(global_=rec.smoothed_global_multiplier, bands={}),
        mae_pct=m.mae_pct,
        bias_pct=m.bias_pct,
        mae_vol_points=m.mae_vol_points,
        vega_weighted_mae_pct=m.vega_weighted_mae_pct,
        samples=rec.sample_size,
        vega_sum=rec.vega_sum,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        decision="apply" if rec.applied else "hold",
        decision_reason=_decision_reason(rec),
        by_band=_by_band(rec),
        **_provenance(rec, path),
    )


def to_auto_row(rec: LegacyRecord, path: Path, run_id: str, cfg: CalibrationConfig) -> AutoRun:
    m = rec.global_metrics or LegacyMetrics()
    if not rec.sample_size:
        dq = DataQuality(status="failed", issues=["legacy record has no samples"])
    else:
        dq = DataQuality(status="degraded", issues=["imported legacy record: data quality was not recorded"])
    status, reason = assess_calibration_realism(
        rec.recommended_iv_multiplier if rec.sample_size else None, m.mae_pct, m.vega_weighted_mae_pct, dq.status,
        thresholds=cfg.realism,
    )
    dtes = [(b.min_dte, b.max_dte) for b in (rec.bands or []) if b.min_dte is not None and b.max_dte is not None]
    return AutoRun(
        schema_version=1,
        run_id=run_id,
        ts=iso_utc(parse_time(rec.timestamp)),
        underlying=rec.underlying,
        dte_min=min(d[0] for d in dtes) if dtes else None,
        dte_max=max(d[1] for d in dtes) if dtes else None,
        lookback=None,
        # with no samples the old system wrote its default (1.0) as "recommended": nothing was fitted,
        # so the row has no multiplier, as a failed auto run of calreport's own (never a 1.0000 point)
        multiplier=rec.recommended_iv_multiplier if rec.sample_size else None,
        mae_pct=m.mae_pct,
        vega_weighted_mae_pct=m.vega_weighted_mae_pct,
        samples=rec.sample_size,
        data_quality=dq,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        smoothed_multiplier=rec.smoothed_global_multiplier,
        **_provenance(rec, path),
    )


def _expand(files: list[Path]) -> list[Path]:
    out: list[Path] = []
    for f in files:
        out.extend(sorted(f.glob("*.json")) if f.is_dir() else [f])
    return out


@dataclass
class ImportResult:
    """What an import did: rows appended per history, records already there, per-file errors."""

    live: int = 0
    auto: int = 0
    already: int = 0
    errors: list[CalreportError] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Something was appended (the dashboard needs a re-render)."""
        return bool(self.live or self.auto)

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0


def import_legacy(ws: Workspace, files: list[Path]) -> ImportResult:
    """Import every readable record once into the workspace's history; nothing is printed and nothing re-rendered."""
    root, cfg = ws.root, ws.config
    result = ImportResult()
    errors = result.errors
    parsed: list[tuple[LegacyRecord, Path, str]] = []
    for path in _expand(files):
        try:
            if path.stat().st_size > MAX_RECORD_BYTES:
                raise CalreportError(f"malformed legacy record: larger than {MAX_RECORD_BYTES} bytes", path)
            raw = path.read_bytes()
            rec = parse_legacy(raw, path)
            if rec.underlying not in cfg.underlyings:
                raise CalreportError(
                    f"legacy record for {rec.underlying}, which is not configured ({', '.join(cfg.underlyings)})", path
                )
            parsed.append((rec, path, legacy_run_id(raw)))
        except CalreportError as exc:
            errors.append(exc)
        except OSError as exc:
            errors.append(CalreportError(f"cannot read ({exc.strerror or exc})", path))
    parsed.sort(key=lambda t: parse_time(t[0].timestamp))  # one import appends its records in time order
    for history_path, kind in ((root.live_history, "live"), (root.auto_history, "harvested")):
        batch = [t for t in parsed if t[0].source == kind]
        if not batch:
            continue
        with locked(history_path):  # check-then-append under the lock: concurrent imports stay no-ops
            existing = {r.run_id for r in read_history(history_path).rows if r.run_id}
            for rec, path, run_id in batch:
                if run_id in existing:
                    result.already += 1
                    continue
                try:
                    row = to_live_row(rec, path, run_id, cfg) if kind == "live" else to_auto_row(rec, path, run_id, cfg)
                    append_row(history_path, row, already_locked=True)
                except (ValidationError, ValueError) as exc:
                    errors.append(CalreportError(f"cannot convert legacy record: {' '.join(str(exc).split())[:200]}", path))
                    continue
                except CalreportError as exc:
                    errors.append(CalreportError(exc.problem, path))
                    continue
                existing.add(run_id)
                if kind == "live":
                    result.live += 1
                else:
                    result.auto += 1
    return result


def format_import(result: ImportResult, root: Root) -> tuple[list[str], list[str]]:
    """(stdout lines, stderr lines): one error line per bad file, then the summary."""
    err = [f"calreport: error: {exc.one_line()}" for exc in result.errors]
    summary = (
        f"imported {result.live} live run(s) into {root.live_history.name} and {result.auto} auto run(s) "
        f"into {root.auto_history.name}; {result.already} already imported; {len(result.errors)} failed"
    )
    return [summary], err
