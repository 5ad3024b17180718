"""Bands whose surface pillars do not increase are a one-line config error, not an internal error."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from calreport.model import CalibrationConfig

BANDS = [{"name": "0-7d", "min_dte": 0, "max_dte": 7}, {"name": "wide", "min_dte": 0, "max_dte": 5}]


def test_bands_whose_pillars_fall_are_refused_naming_the_pillars_when_the_surface_is_on() -> None:
    with pytest.raises(ValidationError, match="pillars .* must increase in the listed order; got 0-7d 1.75 d, wide 1.25 d"):
        CalibrationConfig.model_validate({"bands": BANDS})


def test_the_step_model_keeps_accepting_such_bands() -> None:
    assert CalibrationConfig.model_validate({"bands": BANDS, "surface": {"enabled": False}}).bands[1].name == "wide"
