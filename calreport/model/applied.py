"""The applied multipliers (config/applied_multipliers.yaml), the state document, and the
global + bands (+ smile) value every run and event carries."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from calreport.errors import excerpt
from calreport.fmt import mult
from calreport.model._base import (
    BAND_LABEL_RE,
    UNDERLYING_RE,
    ApplySource,
    IsoTime,
    Multiplier,
    SigmaMode,
    StrictName,
    StrictNumber,
    _Lenient,
    _Strict,
)

APPLIED_SCHEMA_VERSION = 3  # 2: entries may carry a smile; 3: and a surface block; older files read as before
SURFACE_MODEL = "pillars-pchip-1"  # the quoting model a surface block names (calibration/surface.py)


class Smile(_Strict):
    """Smile multipliers at nodes of normalised moneyness x = ln(K/F) / (base x m_band x sqrt(T))
    (calibration/smile.py): linear between nodes, flat beyond, 1 at x = 0. A band without its own
    smile takes `global`; an entry without a smile is flat (today's model)."""

    nodes: list[StrictNumber] = Field(description="The node grid x, strictly increasing, including 0 (dimensionless).")
    global_: list[Multiplier] = Field(alias="global", description="Smile multiplier at each node for every band without its own (dimensionless, > 0).")
    bands: dict[StrictName, list[Multiplier]] = Field(
        default_factory=dict, description="DTE band label -> smile multiplier at each node; a band's smile wins over global."
    )

    @field_validator("bands", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @model_validator(mode="after")
    def _shape(self) -> Smile:
        n = self.nodes
        if len(n) < 3 or any(not (b > a) for a, b in zip(n, n[1:])) or 0.0 not in n:
            raise ValueError("smile.nodes must be at least 3 strictly increasing numbers including 0")
        for label, values in [("global", self.global_), *self.bands.items()]:
            if len(values) != len(n):
                raise ValueError(f"smile {label}: {len(values)} values for {len(n)} nodes")
            if abs(values[n.index(0.0)] - 1.0) > 1e-9:
                raise ValueError(f"smile {label}: the value at x=0 must be 1")
        for label in self.bands:
            if not BAND_LABEL_RE.match(label):
                raise ValueError(f"bad band label {excerpt(label, 40)}")
        return self

    def for_band(self, label: str | None) -> list[float]:
        """The smile a band uses: its own, else the global one."""
        return list(self.bands.get(label, self.global_)) if label is not None else list(self.global_)

    def rounded(self, ndigits: int = 4) -> Smile:
        r = lambda vs: [round(float(v), ndigits) for v in vs]  # noqa: E731
        return Smile(nodes=list(self.nodes), global_=r(self.global_), bands={k: r(v) for k, v in self.bands.items()})


class SurfaceSpec(_Strict):
    """How an entry is quoted when it carries this block (schema_version 3; calibration/surface.py): each
    band's level and smile sit as a pillar at `pillars[band]` days of variance time, interpolated linearly
    in ATM total variance, flat level before the first and after the last pillar; PCHIP smile between
    nodes, total-variance-linear wings with |dw/dk| <= wing_slope_cap; time on the variance clock with
    weekend hours weighted `weekend_weight`. Everything the quotes depend on is here, so no config edit
    changes them. An entry without the block is quoted by the step model (a band's constant level)."""

    model: Literal["pillars-pchip-1"] = Field(default="pillars-pchip-1", description="The quoting model's name and version.")
    pillars: dict[StrictName, StrictNumber] = Field(
        description="Band label -> the pillar's maturity in variance days (strictly increasing); its level and smile are the band's."
    )
    weekend_weight: StrictNumber = Field(description="Variance of a weekend hour relative to a weekday hour (0..1; 1 = calendar time).")
    wing_slope_cap: StrictNumber = Field(description="Largest |d total variance / d ln(K/F)| of the wings (Lee's bound is 2).")

    @model_validator(mode="after")
    def _shape(self) -> SurfaceSpec:
        days = list(self.pillars.values())
        if not days or days[0] <= 0 or any(not (b > a) for a, b in zip(days, days[1:])):
            raise ValueError("surface.pillars must be positive and strictly increasing in days")
        for label in self.pillars:
            if not BAND_LABEL_RE.match(label):
                raise ValueError(f"bad band label {excerpt(label, 40)}")
        if not 0.0 <= self.weekend_weight <= 1.0:
            raise ValueError("surface.weekend_weight must be within [0, 1]")
        if not 0.0 < self.wing_slope_cap < 2.0:
            raise ValueError("surface.wing_slope_cap must be within (0, 2) (Lee's moment bound)")
        return self

    def rounded(self, ndigits: int = 4) -> SurfaceSpec:
        return self.model_copy(update={"pillars": {k: round(float(v), ndigits) for k, v in self.pillars.items()}})


def quoted_surface(values: AppliedEntry | Multipliers, smile_enabled: bool) -> SurfaceSpec | None:
    """The surface block that quotes `values` (None: the step model): the values' own block, except with
    smile.enabled false, which quotes the flat step model whatever the file holds."""
    return values.surface if smile_enabled else None


def surface_changes(a: SurfaceSpec | None, b: SurfaceSpec | None) -> list[tuple[str, str, str]]:
    """(what, before, after) as text for every part of the surface block that differs: the block itself when
    one side has none (the same levels are then quoted by another model), else its model, pillars
    (variance days), weekend weight and wing slope cap, to the YAML's 4 decimals."""
    if a is None and b is None:
        return []
    if a is None or b is None:
        def model(s: SurfaceSpec | None) -> str:
            return "none (step model)" if s is None else s.model
        return [("surface", model(a), model(b))]
    out = [] if a.model == b.model else [("surface model", a.model, b.model)]

    def differ(x: float | None, y: float | None) -> bool:
        return x is None or y is None or round(x, 4) != round(y, 4)

    for label in list(dict.fromkeys([*b.pillars, *a.pillars])):
        pa, pb = a.pillars.get(label), b.pillars.get(label)
        if differ(pa, pb):
            out.append((f"surface pillar {label}", mult(pa), mult(pb)))
    for what in ("weekend_weight", "wing_slope_cap"):
        va, vb = getattr(a, what), getattr(b, what)
        if differ(va, vb):
            out.append((f"surface {what}", mult(va), mult(vb)))
    return out


class AppliedEntry(_Strict):
    """The multipliers the engine uses for one underlying."""

    global_: Multiplier = Field(
        alias="global", description="Multiplier of RV_7d for every DTE without a band value (dimensionless, > 0)."
    )
    bands: dict[StrictName, Multiplier] = Field(
        default_factory=dict,
        description="DTE band label (defined in config/calibration.yaml) -> multiplier; a band's value wins over global.",
    )
    updated_at: IsoTime | None = Field(default=None, description="When these values were written (ISO 8601 UTC).")
    source: ApplySource = Field(default="init", description="How they were applied: policy, force, rollback or init.")
    run_id: StrictName | None = Field(default=None, description="The live run the values came from (null for init).")
    reason: StrictName | None = Field(default=None, description="Why they were applied (the policy's or the user's reason).")
    sigma_mode: SigmaMode | None = Field(
        default=None, description="The sigma mode these values were fitted in (rv, atm_iv, mark_iv); absent means rv."
    )
    smile: Smile | None = Field(default=None, description="Smile multipliers per node, global and per band (schema_version 2); absent = flat.")
    surface: SurfaceSpec | None = Field(
        default=None, description="The quoting model (schema_version 3): pillars, variance clock, wing cap; absent = the step model."
    )

    @field_validator("bands", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("bands")
    @classmethod
    def _band_labels(cls, v: dict[str, float]) -> dict[str, float]:
        for label in v:
            if not BAND_LABEL_RE.match(label):
                raise ValueError(f"bad band label {excerpt(label, 40)}")
        return v

    def multipliers(self) -> Multipliers:
        return Multipliers(global_=self.global_, bands=dict(self.bands), smile=self.smile, surface=self.surface)


DEFAULT_MULTIPLIER = 1.0


def default_entry() -> AppliedEntry:
    """What a missing underlying means: multiplier 1.0, never an error."""
    return AppliedEntry(global_=DEFAULT_MULTIPLIER, bands={}, source="init")


class AppliedDocument(_Strict):
    """config/applied_multipliers.yaml: the single source of truth for the engine's multipliers."""

    schema_version: Literal[1, 2, 3] = APPLIED_SCHEMA_VERSION
    underlyings: dict[StrictName, AppliedEntry] = Field(
        default_factory=dict, description="Underlying (BTC, ETH, ...) -> its applied multipliers; missing means 1.0."
    )

    @field_validator("underlyings", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("underlyings")
    @classmethod
    def _underlying_names(cls, v: dict[str, AppliedEntry]) -> dict[str, AppliedEntry]:
        for name in v:
            if not UNDERLYING_RE.match(name):
                raise ValueError(f"bad underlying name {excerpt(name, 40)}")
        return v

    @model_validator(mode="after")
    def _smile_needs_version_2(self) -> AppliedDocument:
        """A version-1 file reads as flat smiles: a smile in one is a hand edit the version cannot hold."""
        if self.schema_version < 2:
            with_smile = [name for name, e in self.underlyings.items() if e.smile is not None]
            if with_smile:
                raise ValueError(f"schema_version 1 has no smile, but {', '.join(with_smile)[:60]} carries one (a smile needs schema_version 2 or later)")
        return self

    def entry(self, underlying: str) -> AppliedEntry:
        return self.underlyings.get(underlying) or default_entry()


class StateDocument(_Strict):
    """The state API: exactly the YAML's entries plus when the document was generated."""

    schema_version: Literal[1, 2, 3] = APPLIED_SCHEMA_VERSION
    underlyings: dict[str, AppliedEntry] = Field(description="The applied YAML's entries, numbers unchanged.")
    generated_at: IsoTime = Field(description="When this document was generated (ISO 8601 UTC).")

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


class Multipliers(_Lenient):
    """A global multiplier plus optional per-DTE-band multipliers ({"global": x, "bands": {...}})."""

    global_: StrictNumber | None = Field(default=None, alias="global", description="Global multiplier (dimensionless).")
    bands: dict[str, StrictNumber] = Field(default_factory=dict, description="Band label -> multiplier.")
    smile: Smile | None = Field(default=None, description="Smile multipliers per node (global and per band); written only when present.")
    surface: SurfaceSpec | None = Field(default=None, description="The quoting model of these values (pillars, clock, wing cap); written only when present.")

    @field_validator("bands", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @model_serializer(mode="wrap")
    def _no_null_smile(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A flat (smile-less), step-model value is written exactly as before the smile and the surface existed."""
        out = handler(self)
        for key in ("smile", "surface"):
            if isinstance(out, dict) and key in out and out[key] is None:
                out.pop(key)
        return out

    def rounded(self, ndigits: int = 4) -> Multipliers:
        g = None if self.global_ is None else round(self.global_, ndigits)
        smile = None if self.smile is None else self.smile.rounded(ndigits)
        surface = None if self.surface is None else self.surface.rounded(ndigits)
        return Multipliers(global_=g, bands={k: round(v, ndigits) for k, v in self.bands.items()}, smile=smile, surface=surface)
