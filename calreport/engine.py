"""The synthetic engine's view of the applied multipliers, hot-reloaded from the YAML.

Why it is built this way:
- store/applied.py replaces the YAML atomically (temp file + os.replace), which inotify reports on the
  *directory* as a move/create, not a modification of the watched file; so the observer watches
  config/ and reacts to any event that names the file (as source or destination).
- A half-edited or invalid file is never used: every load goes through store.applied.read_applied (strict
  pydantic validation); on failure the last good values stay in force and the error is reported.
- inotify silently drops events when its queue overflows, and some filesystems have no inotify at
  all; a cheap periodic content check backs the observer up, and a polling observer replaces it
  when inotify cannot be started.
- The bytes are read before and after the parse and must hash equal, so a view always
  corresponds to one complete file, never to a file replaced mid-read.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Self

import numpy as np
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from calreport import fmt
from calreport.calibration.bands import (
    BandLookup,
    band_value,
    multiplier_at,
    multipliers_for_dte,
)
from calreport.calibration.pricing import black76_price, black76_price_total
from calreport.calibration.smile import SmileTable, entry_surface, entry_table, representative_base, surface_sigma, surface_tau
from calreport.calibration.surface import Surface
from calreport.errors import CalreportError
from calreport.model import (
    DEFAULT_MULTIPLIER,
    DEFAULT_SIGMA_MODE,
    AppliedDocument,
    AppliedEntry,
    Band,
    CalibrationConfig,
    default_entry,
    quoted_in_mode,
    quoted_surface,
)
from calreport.store.applied import read_applied
from calreport.store.config import load_config
from calreport.store.paths import Root
from calreport.timeutil import DAYS_PER_YEAR, iso_utc, utc_now

ObserverKind = Literal["auto", "inotify", "polling", "none"]
WATCHED_EVENT_TYPES = frozenset({"created", "modified", "moved", "deleted", "closed"})

DEBOUNCE_S = 0.005
CHECK_INTERVAL_S = 0.01  # stat() both files this often (no inotify events, ~microseconds)
FULL_CHECK_S = 1.0  # and re-read + hash them this often, in case a stat signature repeats
READ_RETRIES = 5
EXPECT_WINDOW_S = 0.25
EXPECT_POLL_S = 0.002
SIGMA_CHUNK = 32_768  # options per block in EngineView.sigma: its ~20 temporaries stay in the CPU cache


@dataclass(frozen=True)
class EngineView:
    """One consistent view: a validated document, the bands it was read with, and its version.

    `document` is a private copy: mutating it cannot change what the engine uses.
    """

    version: int
    document: AppliedDocument
    bands: tuple[Band, ...]
    content_hash: str | None  # sha256 of the file's bytes; None when the file did not exist
    loaded_at: str
    smile_enabled: bool = True  # config smile.enabled: false prices the flat model whatever the YAML holds
    _tables: dict[str, tuple[BandLookup, SmileTable]] = field(default_factory=dict, compare=False, repr=False)
    _surfaces: dict[tuple[str, float], Surface] = field(default_factory=dict, compare=False, repr=False)
    sigma_modes: dict[str, str] = field(default_factory=dict)  # configured sigma mode per underlying (absent: rv)

    @classmethod
    def from_document(
        cls,
        doc: AppliedDocument,
        config: CalibrationConfig,
        *,
        version: int = 0,
        content_hash: str | None = None,
        loaded_at: str = "",
    ) -> EngineView:
        """The one way to build a view: `doc` (copied) under `config`'s bands, smile switch and sigma
        modes (one per underlying the config or the document names), so the watcher and
        `calreport price` price with the same settings."""
        return cls(
            version=version,
            document=doc.model_copy(deep=True),
            bands=tuple(config.bands),
            content_hash=content_hash,
            loaded_at=loaded_at,
            smile_enabled=config.smile.enabled,
            sigma_modes={u: config.sigma_mode_for(u) for u in sorted({*config.underlyings, *doc.underlyings})},
        )

    def copy(self) -> EngineView:
        """An independent copy (document deep-copied, own table cache) for a caller to keep."""
        return replace(self, document=self.document.model_copy(deep=True), sigma_modes=dict(self.sigma_modes), _tables={}, _surfaces={})

    def entry(self, underlying: str) -> AppliedEntry | None:
        return self.document.underlyings.get(underlying)

    def _table(self, underlying: str) -> tuple[BandLookup, SmileTable]:
        """The band lookup and the per-band multiplier + smile table of one underlying, built once per view."""
        got = self._tables.get(underlying)
        if got is None:
            entry = self.entry(underlying) or default_entry()
            got = (BandLookup(self.bands), entry_table(entry, self.bands, use_smile=self.smile_enabled))
            self._tables[underlying] = got
        return got

    def _surface(self, underlying: str, base: np.ndarray) -> Surface | None:
        """The quoted surface of an entry with a surface block (None: the step model), built once per base."""
        entry = self.entry(underlying)
        if entry is None or quoted_surface(entry, self.smile_enabled) is None:
            return None
        key = (underlying, representative_base(base))
        got = self._surfaces.get(key)
        if got is None:
            got = entry_surface(entry, key[1])
            self._surfaces[key] = got  # type: ignore[assignment]
        return got

    def weekend_weight(self, underlying: str) -> float | None:
        """The variance clock's weekend weight of a surface entry (None: the step model, calendar time)."""
        entry = self.entry(underlying)
        spec = None if entry is None else quoted_surface(entry, self.smile_enabled)
        return None if spec is None else spec.weekend_weight

    def sigma(
        self, underlying: str, strikes: np.ndarray, forwards: np.ndarray, T: np.ndarray, base: np.ndarray | float,
        now_ms: float | None = None,
    ) -> np.ndarray:
        """What the engine quotes per option, vectorised. An entry with a surface block: the continuous
        surface (calibration/surface.py) on the variance clock counted from `now_ms` (default: the wall
        clock, the live engine's now). Otherwise the step model: sigma = base x m_band x
        smile_band(ln(K/F) / (base x m_band x sqrt(T))), one band lookup and one gathered interpolation.

        `base` is the sigma mode's base (RV_7d, ...), passed in: the engine needs no market data.
        """
        T = np.asarray(T, dtype=np.float64)
        K = np.asarray(strikes, dtype=np.float64)
        F = np.asarray(forwards, dtype=np.float64)
        b = np.asarray(base, dtype=np.float64)
        surface = self._surface(underlying, b)
        if surface is not None:
            return self._surface_price(underlying, surface, K, F, T, None, b, now_ms)[0]
        lookup, table = self._table(underlying)
        n = T.size
        if n <= SIGMA_CHUNK or T.ndim != 1 or K.shape != T.shape or F.shape != T.shape or b.shape not in ((), T.shape):
            return self._sigma_block(lookup, table, K, F, T, b)
        out = np.empty(n)
        for lo in range(0, n, SIGMA_CHUNK):  # cache-sized blocks of options (not a per-option loop)
            hi = min(lo + SIGMA_CHUNK, n)
            out[lo:hi] = self._sigma_block(lookup, table, K[lo:hi], F[lo:hi], T[lo:hi], b if b.ndim == 0 else b[lo:hi])
        return out

    def _surface_price(
        self, underlying: str, surface: Surface, K: np.ndarray, F: np.ndarray, T: np.ndarray, c: np.ndarray | None, b: np.ndarray,
        now_ms: float | None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(sigma, price or None) on the surface, in cache-sized blocks (not a per-option loop)."""
        ww = self.weekend_weight(underlying)
        now = float(time.time() * 1000.0) if now_ms is None else float(now_ms)
        shape = np.broadcast_shapes(K.shape, F.shape, T.shape)
        K, F, T = (np.broadcast_to(a, shape).reshape(-1) for a in (K, F, T))
        bb = b if b.ndim == 0 else np.broadcast_to(b, shape).reshape(-1)
        n = T.size
        sigma = np.empty(n)
        price = None if c is None else np.empty(n)
        cc = None if c is None else np.broadcast_to(c, shape).reshape(-1)
        scalar_base = bb.ndim == 0
        for lo in range(0, n, SIGMA_CHUNK):  # cache-sized blocks of options (not a per-option loop)
            hi = min(lo + SIGMA_CHUNK, n)
            Tb, Kb, Fb = T[lo:hi], K[lo:hi], F[lo:hi]
            with np.errstate(divide="ignore", invalid="ignore"):
                kk = Kb / Fb
                lk = np.log(kk)
            clean = scalar_base and bool(np.all(Tb > 0)) and bool(np.all(np.isfinite(lk)))
            if not clean:  # expired, unparseable or per-option base: the guarded path
                sigma[lo:hi] = surface_sigma(surface, ww, lk, Tb, bb if scalar_base else bb[lo:hi], now)  # type: ignore[arg-type]
                if price is not None:
                    price[lo:hi] = black76_price(Fb, Kb, Tb, sigma[lo:hi], cc[lo:hi])  # type: ignore[index]
                continue
            sd = np.sqrt(surface.total_variance(lk, surface_tau(Tb, now, ww)))  # type: ignore[arg-type]
            sigma[lo:hi] = sd / np.sqrt(Tb)
            if price is not None:
                black76_price_total(kk, sd, cc[lo:hi], lk, out=price[lo:hi])  # type: ignore[index]
        return sigma.reshape(shape), None if price is None else price.reshape(shape)

    def price(
        self, underlying: str, strikes: np.ndarray, forwards: np.ndarray, T: np.ndarray, is_call: np.ndarray, base: np.ndarray | float,
        now_ms: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(sigma, Black-76 coin price) per option: `sigma` then black76_price, block by block so both
        stay in the CPU cache (the engine's quoting path; same numbers as calling the two in turn)."""
        T = np.asarray(T, dtype=np.float64)
        K = np.asarray(strikes, dtype=np.float64)
        F = np.asarray(forwards, dtype=np.float64)
        c = np.asarray(is_call, dtype=bool)
        b = np.asarray(base, dtype=np.float64)
        surface = self._surface(underlying, b)
        if surface is not None:
            sigma, price = self._surface_price(underlying, surface, K, F, T, c, b, now_ms)
            return sigma, price  # type: ignore[return-value]
        if T.ndim != 1 or K.shape != T.shape or F.shape != T.shape or c.shape != T.shape or b.shape not in ((), T.shape):
            sigma = self.sigma(underlying, K, F, T, b)
            return sigma, black76_price(F, K, T, sigma, c)
        lookup, table = self._table(underlying)
        sigma, price = np.empty(T.size), np.empty(T.size)
        for lo in range(0, T.size, SIGMA_CHUNK):  # cache-sized blocks of options (not a per-option loop)
            hi = min(lo + SIGMA_CHUNK, T.size)
            bb = b if b.ndim == 0 else b[lo:hi]
            sigma[lo:hi] = self._sigma_block(lookup, table, K[lo:hi], F[lo:hi], T[lo:hi], bb)
            price[lo:hi] = black76_price(F[lo:hi], K[lo:hi], T[lo:hi], sigma[lo:hi], c[lo:hi])
        return sigma, price

    @staticmethod
    def _sigma_block(lookup: BandLookup, table: SmileTable, K: np.ndarray, F: np.ndarray, T: np.ndarray, base: np.ndarray) -> np.ndarray:
        slot = lookup.slot(T * DAYS_PER_YEAR)
        if table.flat:
            return base * table.mults[slot]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_k = np.log(K / F)
        return table.sigma(slot, log_k, np.sqrt(np.maximum(T, 0.0)), base)

    # ---- sigma in the configured sigma mode (calibration/sigma.py says what each mode's base is)

    def sigma_mode(self, underlying: str) -> str:
        """The configured sigma mode of `underlying` (rv when not configured)."""
        return self.sigma_modes.get(underlying, DEFAULT_SIGMA_MODE)

    def mode_matches(self, underlying: str) -> bool:
        """The applied values were fitted in the configured mode (never-applied 1.0 matches any)."""
        entry = self.entry(underlying)
        return entry is None or quoted_in_mode(entry.sigma_mode, self.sigma_mode(underlying))

    def sigma_in_mode(
        self, underlying: str, strikes: np.ndarray, forwards: np.ndarray, T: np.ndarray, base: np.ndarray | float,
        now_ms: float | None = None,
    ) -> np.ndarray:
        """`sigma` with `base` in the configured mode. Values fitted in another mode multiply another
        base: they are not used, the base alone is, until a run in the configured mode is applied."""
        if not self.mode_matches(underlying):
            return np.broadcast_to(np.asarray(base, dtype=np.float64), np.shape(T)).astype(np.float64)
        return self.sigma(underlying, strikes, forwards, T, base, now_ms)

    def sigma_for(
        self, underlying: str, dte: float, *, rv: float | None = None, atm_iv: float | None = None, mark_iv: float | None = None,
        strike: float | None = None, forward: float | None = None, now_ms: float | None = None,
    ) -> float:
        """One option's sigma in the configured mode (at the money unless strike and forward are given);
        the mode's input must be given: rv= (RV_7d), atm_iv= (its expiry's ATM IV) or mark_iv=."""
        mode = self.sigma_mode(underlying)
        base = {"rv": rv, "atm_iv": atm_iv, "mark_iv": mark_iv}.get(mode)
        if base is None:
            raise CalreportError(f"{underlying}: sigma_mode {mode} needs {mode}= (the base sigma of the option)")
        k, f = (strike, forward) if strike is not None and forward is not None else (1.0, 1.0)
        T = np.array([dte / DAYS_PER_YEAR])
        return float(self.sigma_in_mode(underlying, np.array([k]), np.array([f]), T, float(base), now_ms)[0])


    def multiplier_for(self, underlying: str, dte: float, now_ms: float | None = None) -> float:
        """multipliers_for at one DTE."""
        entry = self.entry(underlying)
        if entry is None:
            return DEFAULT_MULTIPLIER
        if self._surface(underlying, np.asarray(1.0)) is None:
            return multiplier_at(dte, entry, self.bands)
        return float(self.multipliers_for(underlying, np.array([dte], dtype=np.float64), now_ms)[0])

    def multipliers_for(self, underlying: str, dtes: np.ndarray, now_ms: float | None = None) -> np.ndarray:
        """The at-the-money multiplier the engine quotes at each DTE: sigma(K = F) / base. The step model:
        the band rule (calibration.bands; 1.0 if never applied), the pricing hot path. An entry with a
        surface block: the surface's ATM level at that expiry on the variance clock from `now_ms` (default:
        the wall clock, as `sigma`), which runs between the pillars instead of stepping at band edges (NaN
        at DTE <= 0, where there is no quote). Like `sigma`, in the values' own sigma mode."""
        entry = self.entry(underlying)
        if entry is None:
            return np.full(np.shape(dtes), DEFAULT_MULTIPLIER)
        if self._surface(underlying, np.asarray(1.0)) is None:
            return multipliers_for_dte(dtes, entry, self.bands)
        T = np.asarray(dtes, dtype=np.float64) / DAYS_PER_YEAR
        ones = np.ones_like(T)
        return self.sigma(underlying, ones, ones, T, 1.0, now_ms)  # base 1: the surface's ATM ratio is the same for any base

    def describe(self, underlyings: list[str]) -> list[str]:
        """One line per underlying with the effective multiplier of every configured band."""
        names = list(dict.fromkeys([*underlyings, *sorted(self.document.underlyings)]))
        lines = []
        for name in names:
            entry = self.entry(name)
            if entry is None:
                lines.append(f"{name}: global {fmt.mult(DEFAULT_MULTIPLIER)} everywhere (default: never applied)")
                continue
            surface = quoted_surface(entry, self.smile_enabled)
            # a surface quotes its own pillars' levels (the config's bands may have been edited since)
            labels = list(surface.pillars) if surface is not None else [b.name for b in self.bands]
            per_band = ", ".join(
                f"{label} {fmt.mult(band_value(entry, label))}" + ("" if label in entry.bands else " (global)") for label in labels
            )
            model = "" if surface is None else (
                f"; surface {surface.model}: pillars "
                + ", ".join(f"{k} {v:g}d" for k, v in surface.pillars.items())
                + f", weekend weight {surface.weekend_weight:g}"
            )
            smile = "flat" if entry.smile is None or not self.smile_enabled else (
                f"{len(entry.smile.nodes)} nodes, global x={entry.smile.nodes[0]:g} {fmt.mult(entry.smile.global_[0])} .. "
                f"x={entry.smile.nodes[-1]:g} {fmt.mult(entry.smile.global_[-1])}, {len(entry.smile.bands)} band smile(s)"
            )
            if not self.mode_matches(name):
                per_band += (
                    f"; NOT USED: fitted in sigma_mode {entry.sigma_mode or DEFAULT_SIGMA_MODE}, "
                    f"configured {self.sigma_mode(name)} (sigma = base alone)"
                )
            lines.append(
                f"{name}: global {fmt.mult(entry.global_)}; {per_band or 'no bands'}; smile {smile}{model}; "
                f"run {fmt.text(entry.run_id)} by {entry.source} ({fmt.text(entry.reason)}), updated {fmt.text(entry.updated_at)}"
            )
        return lines


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CalreportError(f"cannot read ({exc.strerror or exc})", path) from None


def _digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


ChangeCallback = Callable[[EngineView], None]
ErrorCallback = Callable[[CalreportError], None]


@dataclass
class _Loaded:
    """What was last read from disk (good or bad), so an unchanged file is not re-parsed."""

    applied_hash: str | None = None
    config_hash: str | None = None
    config: CalibrationConfig = field(default_factory=CalibrationConfig)
    bad_config_hash: str | None = None  # a calibration.yaml already reported as unusable: said once, not per check


class AppliedMultipliersWatcher:
    """Keeps the engine's multipliers equal to the last valid config/applied_multipliers.yaml.

    Use as a context manager (or start()/stop()). `multiplier_for` and `snapshot` are safe to call
    from any thread; callbacks run on the watcher's thread, in version order.
    """

    def __init__(
        self,
        root: Root,
        *,
        on_change: ChangeCallback | None = None,
        on_error: ErrorCallback | None = None,
        observer: ObserverKind = "auto",
        debounce_s: float = DEBOUNCE_S,
        check_interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self.root = root
        self.debounce_s = debounce_s
        self.check_interval_s = check_interval_s
        self.requested_observer: ObserverKind = observer
        self.observer_kind: ObserverKind = "none"  # what actually runs, set by start()
        self._change_callbacks: list[ChangeCallback] = [on_change] if on_change else []
        self._error_callbacks: list[ErrorCallback] = [on_error] if on_error else []
        self._view: EngineView | None = None
        self._loaded = _Loaded()
        self._lock = threading.RLock()  # serialises reloads; callbacks run under it, in order
        self._version_cond = threading.Condition()
        self._dirty = threading.Event()
        self._complete = threading.Event()
        self._expect = threading.Event()
        self._stop = threading.Event()
        self._last_signature: tuple[tuple[int, int, int, int] | None, ...] = ()
        self._next_full_check = 0.0
        self._thread: threading.Thread | None = None
        self._observer = None
        self.last_error: CalreportError | None = None
        self.error_count = 0
        self.reload_count = 0
        self.event_count = 0
        self.callback_errors: list[BaseException] = []

    # ------------------------------------------------------------------ public API

    @property
    def version(self) -> int:
        return self._view.version if self._view else 0

    def snapshot(self) -> EngineView:
        """An immutable copy of the current view (document deep-copied)."""
        return self._require_view().copy()

    def multiplier_for(self, underlying: str, dte: float, now_ms: float | None = None) -> float:
        """EngineView.multiplier_for on the current view."""
        return self._require_view().multiplier_for(underlying, dte, now_ms)

    def multipliers_for(self, underlying: str, dtes: np.ndarray, now_ms: float | None = None) -> np.ndarray:
        """EngineView.multipliers_for on the current view."""
        return self._require_view().multipliers_for(underlying, dtes, now_ms)

    def sigma(
        self, underlying: str, strikes: np.ndarray, forwards: np.ndarray, T: np.ndarray, base: np.ndarray | float,
        now_ms: float | None = None,
    ) -> np.ndarray:
        """EngineView.sigma on the current view (hot-reloaded: the next call after an apply sees it)."""
        return self._require_view().sigma(underlying, strikes, forwards, T, base, now_ms)

    def configured_underlyings(self) -> list[str]:
        return list(self._loaded.config.underlyings)

    def refresh(self) -> bool:
        """Re-read now (thread-safe). True when the view changed."""
        return self._reload()

    def wait_for_version(self, version: int, timeout: float) -> bool:
        """Block until the view's version is at least `version` (tests, `calreport watch`)."""
        deadline = time.monotonic() + timeout
        with self._version_cond:
            while self.version < version:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._version_cond.wait(left)
        return True

    def start(self) -> AppliedMultipliersWatcher:
        """Load the file (a broken file at start is an error: there are no good values yet) and watch."""
        if self._thread is not None:
            return self
        if not self.root.config_dir.is_dir():
            raise CalreportError("no config directory; run `calreport init` first", self.root.config_dir)
        self._reload(initial=True)
        if self._view is None:
            raise self.last_error or CalreportError("could not load the applied multipliers", self.root.applied)
        self._stop.clear()
        self._start_observer()
        self._thread = threading.Thread(target=self._run, name="calreport-engine-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=5)
            except Exception:  # noqa: BLE001, S110 - stopping must not raise
                pass
            self._observer = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ observer

    def _start_observer(self) -> None:
        kind = self.requested_observer
        if kind == "none":
            self.observer_kind = "none"
            return
        names = {self.root.applied.name, self.root.calibration_config.name}
        temp_prefix = f".{self.root.applied.name}."  # store.files.atomic_write's temp files
        watcher = self

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in WATCHED_EVENT_TYPES or event.is_directory:
                    return
                paths = (event.src_path, getattr(event, "dest_path", "") or "")
                named = [Path(p if isinstance(p, str) else p.decode()).name for p in paths if p]
                if any(n.startswith(temp_prefix) for n in named) and not any(n in names for n in named):
                    watcher._expect.set()
                    watcher._dirty.set()
                elif any(n in names for n in named):
                    watcher.event_count += 1
                    if event.event_type == "moved" and named[-1] in names:
                        watcher._complete.set()  # an atomic replace: the new file is whole, no debounce
                    watcher._dirty.set()

        handler = _Handler()
        if kind in ("auto", "inotify"):
            try:
                obs = Observer()
                obs.schedule(handler, str(self.root.config_dir), recursive=False)
                obs.start()
                self._observer, self.observer_kind = obs, "inotify"
                return
            except (OSError, RuntimeError) as exc:  # inotify limits reached, unsupported filesystem
                if kind == "inotify":
                    raise CalreportError(f"cannot watch with inotify ({exc})", self.root.config_dir) from None
        obs = PollingObserver(timeout=max(self.check_interval_s, 0.05))
        obs.schedule(handler, str(self.root.config_dir), recursive=False)
        obs.start()
        self._observer, self.observer_kind = obs, "polling"

    def _run(self) -> None:
        """React to observer events; between events, check the file's content periodically."""
        while not self._stop.is_set():
            triggered = self._dirty.wait(self.check_interval_s)
            if self._stop.is_set():
                return
            self._dirty.clear()
            if triggered and self._complete.is_set():
                self._complete.clear()
                self._expect.clear()
            elif triggered and self._expect.is_set():
                # store/applied.py is writing its temp file; the replace follows within milliseconds. inotify
                # may hold the move event back (pairing MOVED_FROM/MOVED_TO), so poll the content.
                self._expect.clear()
                deadline = time.monotonic() + EXPECT_WINDOW_S
                while not self._stop.is_set() and time.monotonic() < deadline:
                    if self._safe_reload() or self._complete.is_set():
                        break
                    time.sleep(EXPECT_POLL_S)
                self._complete.clear()
            elif not triggered:
                # the backup for dropped or delayed events (inotify overflow; watchdog holds a move
                # event back while it waits to pair MOVED_FROM with MOVED_TO): a cheap stat signature
                # each tick, a full content hash now and then
                sig = self._signature()
                if sig == self._last_signature and time.monotonic() < self._next_full_check:
                    continue
                self._last_signature = sig
                self._next_full_check = time.monotonic() + FULL_CHECK_S
            else:
                deadline = time.monotonic() + 10 * self.debounce_s
                while True:  # a non-atomic writer (editor): coalesce its burst of events
                    time.sleep(self.debounce_s)
                    if not self._dirty.is_set() or time.monotonic() > deadline or self._stop.is_set():
                        break
                    self._dirty.clear()
            self._safe_reload()

    def _signature(self) -> tuple[tuple[int, int, int, int] | None, ...]:
        out = []
        for p in (self.root.applied, self.root.calibration_config):
            try:
                st = p.stat()
                out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def _safe_reload(self) -> bool:
        try:
            return self._reload()
        except Exception as exc:  # noqa: BLE001 - the watcher thread must survive anything
            self._report_error(CalreportError(f"engine reload failed: {type(exc).__name__}: {exc}", self.root.applied))
            return False

    # ------------------------------------------------------------------ loading

    def _require_view(self) -> EngineView:
        view = self._view
        if view is None:
            raise CalreportError("engine not started (use it as a context manager or call start())")
        return view

    def _load_config(self) -> tuple[CalibrationConfig, str | None, bool]:
        """The config to validate with; a broken calibration.yaml keeps the last good one."""
        data = _read_bytes(self.root.calibration_config)
        h = _digest(data)
        if h == self._loaded.config_hash and self._view is not None:
            self._loaded.bad_config_hash = None
            return self._loaded.config, h, False
        if h == self._loaded.bad_config_hash:
            return self._loaded.config, self._loaded.config_hash, False
        try:
            cfg = load_config(self.root)
        except CalreportError as exc:
            if self._view is None and self._loaded.config_hash is None:
                raise
            self._loaded.bad_config_hash = h
            self._report_error(exc)
            return self._loaded.config, self._loaded.config_hash, False
        self._loaded.bad_config_hash = None
        return cfg, h, True

    def _reload(self, initial: bool = False) -> bool:
        with self._lock:
            self.reload_count += 1
            path = self.root.applied
            for _ in range(READ_RETRIES):
                # outside the try: a config that cannot be read at start is the caller's error (a
                # CalreportError naming the file), not an UnboundLocalError from the handler below
                cfg, cfg_hash, cfg_changed = self._load_config()
                try:
                    before = _read_bytes(path)
                    h = _digest(before)
                    if not initial and not cfg_changed and h == self._loaded.applied_hash:
                        return False  # same bytes as last time (good or bad): nothing to do
                    if before is None and self._view is not None:
                        self._loaded.applied_hash = None
                        self._report_error(
                            CalreportError("file disappeared; keeping the last good values until it reappears", path)
                        )
                        return False
                    doc = read_applied(self.root, cfg)
                    after = _read_bytes(path)
                except CalreportError as exc:
                    if _digest(_read_bytes(path)) != h:
                        continue  # replaced while we read it: read the new file
                    self._loaded.applied_hash = h
                    self._report_error(exc)
                    return False
                if _digest(after) != h:
                    continue  # replaced between our reads: the parse may be of either file
                self._loaded.applied_hash = h
                self._loaded.config_hash, self._loaded.config = cfg_hash, cfg
                return self._install(doc, cfg, h)
            return False

    def _install(self, doc: AppliedDocument, cfg: CalibrationConfig, content_hash: str | None) -> bool:
        current = self._view
        self.last_error = None
        view = EngineView.from_document(
            doc, cfg, version=(current.version + 1) if current else 1, content_hash=content_hash, loaded_at=iso_utc(utc_now())
        )
        if current is not None and (current.document, current.bands, current.smile_enabled, current.sigma_modes) == (
            view.document, view.bands, view.smile_enabled, view.sigma_modes
        ):
            return False
        with self._version_cond:
            self._view = view
            self._version_cond.notify_all()
        for cb in list(self._change_callbacks):
            try:
                cb(self.snapshot())
            except Exception as exc:  # noqa: BLE001 - a bad callback must not stop reloading
                self.callback_errors.append(exc)
        return True

    def _report_error(self, exc: CalreportError) -> None:
        self.last_error = exc
        self.error_count += 1
        for cb in list(self._error_callbacks):
            try:
                cb(exc)
            except Exception as cb_exc:  # noqa: BLE001
                self.callback_errors.append(cb_exc)

