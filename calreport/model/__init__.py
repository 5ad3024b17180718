"""The domain model: the schema of every file calreport reads or writes (docs/FILES.md describes
each file; `calreport schema NAME` prints a model's JSON Schema). The bottom layer: it imports no
other calreport layer and does no I/O, so the pure calibration core, the store, the engine and the
report all speak it.

- `applied`: AppliedDocument (config/applied_multipliers.yaml, strict), AppliedEntry, Smile,
  Multipliers (the global + bands [+ smile] value runs and events carry), StateDocument.
- `config`: CalibrationConfig (config/calibration.yaml, strict; the only home of every default).
- `runs`: history rows (LiveRun and AutoRun on one RunMeasures base, ApplyEvent, AlertEvent;
  lenient: older rows load with missing fields as None, unknown fields are kept) and RunDetail.
- `harvest`: HarvestRow, HarvestErrors.  `backtest`: BacktestDecision, BacktestDifference, BacktestSummary.
- `_base`: the typed codes (SigmaMode, RealismStatus, FlagCode, ApplySource, Decision).
"""

from calreport.model._base import (
    BAND_LABEL_RE,
    DEFAULT_SIGMA_MODE,
    REALISM_STATUSES,
    SIGMA_MODES,
    UNDERLYING_RE,
    ApplySource,
    Decision,
    DisplayStatus,
    FlagCode,
    RealismStatus,
    SigmaMode,
    quoted_in_mode,
)
from calreport.model.applied import (
    APPLIED_SCHEMA_VERSION,
    DEFAULT_MULTIPLIER,
    AppliedDocument,
    AppliedEntry,
    Multipliers,
    Smile,
    SurfaceSpec,
    quoted_surface,
    surface_changes,
    SURFACE_MODEL,
    StateDocument,
    default_entry,
)
from calreport.model.backtest import BacktestDecision, BacktestDifference, BacktestScore, BacktestSummary
from calreport.model.config import (
    AlertsConfig,
    AutoConfig,
    Band,
    CalibrationConfig,
    DashboardConfig,
    FilterConfig,
    FitConfig,
    FlagsConfig,
    LimitsConfig,
    PolicyConfig,
    RealismConfig,
    SmileConfig,
    SurfaceConfig,
    SmoothingConfig,
)
from calreport.model.harvest import (
    HarvestErrors,
    HarvestRow,
    RejectedLine,
    RejectedSource,
)
from calreport.model.runs import (
    FrontQuote,
    NOTE_MAX_CHARS,
    ROW_TYPES,
    AlertDelivery,
    AlertEvent,
    ApplyEvent,
    AutoRun,
    AutoRunDetail,
    DataQuality,
    DeltaBucket,
    ExpirySummary,
    GroupMetrics,
    HistoryRow,
    Interval95,
    LiveRun,
    QuoteDetail,
    RunDetail,
    RunFlag,
    RunMeasures,
    SmileFitStats,
    ArbitrageCheck,
    NodeUncertainty,
    UncertaintyEntry,
    UnknownRow,
)

__all__ = [
    "APPLIED_SCHEMA_VERSION", "BAND_LABEL_RE", "DEFAULT_MULTIPLIER", "DEFAULT_SIGMA_MODE",
    "NOTE_MAX_CHARS", "REALISM_STATUSES", "ROW_TYPES", "SIGMA_MODES", "UNDERLYING_RE",
    "AlertDelivery", "AlertEvent", "AlertsConfig", "AppliedDocument", "AppliedEntry", "ApplyEvent", "ApplySource",
    "AutoConfig", "AutoRun", "AutoRunDetail", "BacktestDecision", "BacktestDifference", "BacktestScore", "BacktestSummary", "Band", "CalibrationConfig",
    "DashboardConfig", "DataQuality", "Decision", "DeltaBucket", "DisplayStatus", "ExpirySummary", "FilterConfig",
    "FitConfig", "FlagCode", "FrontQuote", "FlagsConfig", "GroupMetrics", "HarvestErrors", "HarvestRow", "HistoryRow",
    "Interval95", "LimitsConfig", "LiveRun", "Multipliers", "PolicyConfig", "QuoteDetail", "RealismConfig",
    "RealismStatus", "RejectedLine", "RejectedSource", "RunDetail", "RunFlag", "RunMeasures", "SigmaMode", "Smile", "SurfaceSpec", "SURFACE_MODEL", "surface_changes",
    "SmileConfig", "SmileFitStats", "ArbitrageCheck", "SurfaceConfig", "SmoothingConfig", "StateDocument", "NodeUncertainty", "UncertaintyEntry", "UnknownRow",
    "default_entry", "quoted_in_mode", "quoted_surface",
]
