"""Entry point: `telemetry-svc CHANNEL_FILE...` prints one JSON summary per channel."""

import json
import sys

from . import __version__, config, filters


def condense(samples, cfg):
    x = filters.clip_outliers(samples, cfg["clip_sigma"])
    x = filters.smooth(x, cfg["window"])
    x = filters.decimate(x, cfg["decimate"])
    return filters.summarize(x, cfg["precision"])


def selftest():
    import numpy as np

    rng = np.random.default_rng(7)
    samples = 20.0 + rng.normal(0, 0.5, 4096)
    samples[100] = 1e6
    s = condense(samples, config.load())
    assert s["max"] < 100, s
    print(json.dumps({"selftest": "ok", "version": __version__, "numpy": np.__version__}))


def main(argv):
    if argv[1:] == ["--selftest"]:
        selftest()
        return 0
    cfg = config.load()
    for path in argv[1:]:
        with open(path, encoding="utf-8") as f:
            samples = [float(line) for line in f if line.strip()]
        print(json.dumps({"channel": path, **condense(samples, cfg)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
