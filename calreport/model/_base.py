"""The shared vocabulary of every model: strict field types, the two model bases and the typed codes.

`_Strict` models are files a person edits (misspelt keys are errors); `_Lenient` models are history
rows (rows from older versions load with missing fields as None; unknown fields are kept).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from calreport.errors import excerpt
from calreport.numbers import as_float, is_number
from calreport.timeutil import iso_utc, parse_time

UNDERLYING_RE = re.compile(r"^[A-Z][A-Z0-9]{1,9}$")
BAND_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}$")

ApplySource = Literal["policy", "force", "rollback", "init"]
SigmaMode = Literal["rv", "atm_iv", "mark_iv"]  # what the multiplier multiplies (calibration/sigma.py)
SIGMA_MODES: tuple[SigmaMode, ...] = get_args(SigmaMode)
DEFAULT_SIGMA_MODE: SigmaMode = "rv"


def quoted_in_mode(values_mode: str | None, configured: str) -> bool:
    """Whether applied values fitted in `values_mode` (None: rv) are quoted under the configured mode: values
    fitted in another mode multiply another base, so the engine quotes the base alone until a run in the
    configured mode is applied (EngineView.sigma_in_mode, the dashboard, `calreport status`)."""
    return (values_mode or DEFAULT_SIGMA_MODE) == configured


RealismStatus = Literal["ok", "degraded", "failed"]
REALISM_STATUSES: tuple[RealismStatus, ...] = get_args(RealismStatus)
Decision = Literal["apply", "hold"]
DisplayStatus = Literal["applied", "superseded", "rolled-back", "held", "failed"]  # derived by store.state, never stored
FlagCode = Literal["THIN_RV", "IV_DRIFT", "ATM_RV_RANGE", "ON_FIT_BOUND", "DEGRADED_APPLIED", "WING_GAP", "SHORT_EXPIRY_OUTLIER", "FIT_NOT_CONVERGED"]


def _strict_multiplier(value: Any) -> float:
    """A multiplier is a finite positive number written as a number (not '1e-3', not yes/no)."""
    if not is_number(value):
        raise ValueError(f"multiplier must be a number, got {type(value).__name__} {excerpt(value, 60)}")
    v = as_float(value)
    if v is None or v <= 0:
        raise ValueError(f"multiplier must be finite and > 0, got {excerpt(value, 60)}")
    return v


def _strict_number(value: Any) -> Any:
    """A JSON number as written (a string or a boolean is never a number); null passes to the type."""
    if value is not None and not is_number(value):
        raise ValueError(f"must be a number, got {type(value).__name__} {excerpt(value, 40)}")
    return value


def _strict_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__} {excerpt(value, 60)}")  # noqa: TRY004 - pydantic wants ValueError
    return value


def _iso_string(value: Any) -> str:
    if isinstance(value, datetime):
        return iso_utc(value)
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 time string, got {excerpt(value, 60)}")  # noqa: TRY004 - pydantic wants ValueError
    parse_time(value)
    return value


Multiplier = Annotated[float, BeforeValidator(_strict_multiplier), Field(gt=0)]
StrictNumber = Annotated[float, BeforeValidator(_strict_number)]
StrictName = Annotated[str, BeforeValidator(_strict_str)]
IsoTime = Annotated[str, BeforeValidator(_iso_string)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Lenient(BaseModel):
    """History rows: keep unknown fields (newer writers), default missing ones (older writers)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
