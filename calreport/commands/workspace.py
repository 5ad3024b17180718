"""One workspace per command: the root, its config read once, and what runs after a write.

The CLI opens one `Workspace` and passes it to the use cases, so a command reads
config/calibration.yaml at most once (on first use: `doctor`, `render` and `watch` must still run
when that file is broken, and report it themselves). What happens after an apply (the git audit
commit when `git_commit: true`) and after any write (the dashboard re-render) are explicit hooks
of the workspace, never side effects of importing a module: calling a use case with a workspace
is all it takes to get the audit commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

from calreport.errors import CalreportError
from calreport.model import ApplyEvent, CalibrationConfig
from calreport.report import render_site
from calreport.store.config import load_config
from calreport.store.paths import Root

AfterApply = Callable[[ApplyEvent], None]
Renderer = Callable[[Root, CalibrationConfig | None], object]
Warn = Callable[[str], None]

_log = logging.getLogger("calreport")
ROOT_MARKERS = ("config/calibration.yaml", "config/applied_multipliers.yaml")  # what `calreport init` writes


def is_root(root: Root) -> bool:
    """A calreport root is a directory `calreport init` (or `demo`) set up: it has one of ROOT_MARKERS."""
    return any((root.path / marker).is_file() for marker in ROOT_MARKERS)


def render_dashboard(root: Root, config: CalibrationConfig | None = None) -> None:
    """The default re-render: site/ from the files of record (calreport.report)."""
    render_site(root, config)


def log_warning(message: str) -> None:
    """Where a workspace's warnings go unless the command says otherwise (the CLI prints them)."""
    _log.warning("%s", message)


class Workspace:
    """A calibration root with its config (read once, when first needed) and the hooks a command runs.

    `after_apply=None` means the hooks the config asks for (default_after_apply); `renderer=None`
    means no re-render (benchmarks, tests that time the core).
    """

    def __init__(
        self,
        root: Root,
        *,
        config: CalibrationConfig | None = None,
        after_apply: Sequence[AfterApply] | None = None,
        renderer: Renderer | None = render_dashboard,
        warn: Warn = log_warning,
    ) -> None:
        self.root = root
        self.renderer = renderer
        self.warn = warn
        self.stale: CalreportError | None = None  # set when a re-render after a write failed
        if config is not None:
            self.__dict__["config"] = config
        if after_apply is not None:
            self.__dict__["after_apply"] = tuple(after_apply)

    @classmethod
    def open(
        cls,
        root: Root | str | Path,
        *,
        after_apply: Sequence[AfterApply] | None = None,
        renderer: Renderer | None = render_dashboard,
        warn: Warn = log_warning,
        existing: bool = False,
    ) -> Workspace:
        """The workspace of `root`; with `existing`, refuse a directory that is not a calreport root
        (every command but `init` and `demo`: a mistyped --root must not read as defaults or get a site/)."""
        root = root if isinstance(root, Root) else Root.resolve(root)
        if existing and not is_root(root):
            raise CalreportError(
                f"not a calreport root (no {ROOT_MARKERS[0]} or {ROOT_MARKERS[1]}); "
                "check --root / $CALREPORT_ROOT, or create one with `calreport init`",
                root.path,
            )
        return cls(root, after_apply=after_apply, renderer=renderer, warn=warn)

    @cached_property
    def config(self) -> CalibrationConfig:
        """config/calibration.yaml, read and validated once for the whole command."""
        return load_config(self.root)

    @cached_property
    def after_apply(self) -> tuple[AfterApply, ...]:
        return default_after_apply(self.root, self.config, self.warn)

    def applied(self, event: ApplyEvent) -> None:
        """Run the after-apply hooks for an apply that just happened."""
        for hook in self.after_apply:
            hook(event)

    def rerender(self, *, strict: bool = False) -> None:
        """Regenerate site/ after a write (nothing when the workspace has no renderer).

        The write before it stands whatever happens here: a dashboard that cannot be written
        (full disk, read-only, `site` a file) is recorded in `stale` and warned about, never
        raised, so an apply that happened is never reported as a failure. The CLI
        exits 3 (EXIT_STALE_DASHBOARD) when `stale` is set; `calreport render` retries, with
        `strict`: there rendering is the command, so its failure is raised.
        """
        if self.renderer is None:
            return
        try:
            config: CalibrationConfig | None = self.config
        except CalreportError:  # the dashboard shows the broken config as a banner
            config = None
        try:
            self.renderer(self.root, config)
        except (CalreportError, OSError) as exc:
            err = exc if isinstance(exc, CalreportError) else CalreportError(
                f"cannot write the dashboard ({exc.strerror or exc})", getattr(exc, "filename", None) or self.root.site_dir
            )
            if strict:
                raise err from None
            self._stale(err)

    def _stale(self, exc: CalreportError) -> None:
        self.stale = exc
        self.warn(f"the dashboard is stale: {exc.one_line()}; run `calreport render` once site/ can be written")


def default_after_apply(root: Root, config: CalibrationConfig, warn: Warn) -> tuple[AfterApply, ...]:
    """The hooks the config asks for: the git audit commit when `git_commit: true`.

    Imported here: a command that never applies (status, --help) does not load the audit module.
    """
    from calreport.commands.adapters.gitaudit import GitAudit

    return (GitAudit(root, config, warn),) if config.git_commit else ()

