"""calreport: the calibration control plane for a synthetic crypto options pricing engine.

The applied multipliers live in one file (config/applied_multipliers.yaml); every reader
(dashboard, state document, `calreport status`, the engine) derives from it.
"""

__version__ = "0.1.0"
SCHEMA_VERSION = 1
