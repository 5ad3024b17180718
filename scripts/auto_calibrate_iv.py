#!/usr/bin/env python3
"""One auto-calibrate run over the harvest (the same as `calreport auto-calibrate`).

    python scripts/auto_calibrate_iv.py --underlying BTC [--root DIR] [--dte 3-10] [--lookback 14d] [--as-of T]

Appends one row to history/auto_calibrate.jsonl with status ok / degraded / failed from
calreport.realism.assess_calibration_realism, then re-renders the dashboard. It never changes
config/applied_multipliers.yaml. Errors are one line on stderr with a non-zero exit.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from calreport.commands.cli import main

if __name__ == "__main__":
    sys.exit(main(["auto-calibrate", *sys.argv[1:]]))
