"""Service configuration with defaults; overridden by a key = value file."""

import os

DEFAULTS = {
    "window": 32,            # samples in the moving-average window
    "decimate": 8,           # keep one sample in this many after smoothing
    "clip_sigma": 3.5,       # samples further than this many sigmas are outliers
    "precision": 3,          # decimals in the summary
    "spool": "/var/spool/telemetry",
}


def load(path=None):
    cfg = dict(DEFAULTS)
    path = path or os.environ.get("TELEMETRY_CONF")
    if not path or not os.path.exists(path):
        return cfg
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line or "=" not in line:
                continue
            key, value = (s.strip() for s in line.split("=", 1))
            if key not in DEFAULTS:
                raise KeyError(f"unknown setting {key!r} in {path}")
            cfg[key] = type(DEFAULTS[key])(value)
    return cfg
