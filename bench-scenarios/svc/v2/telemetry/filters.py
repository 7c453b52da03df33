"""Signal processing on housekeeping channels."""

import numpy as np


def clip_outliers(x, sigma):
    """Replace samples further than `sigma` standard deviations from the median by the median."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    med = np.median(x)
    dev = 1.4826 * np.median(np.abs(x - med))  # MAD: robust against the outliers themselves
    if dev == 0:
        return x
    out = x.copy()
    out[np.abs(x - med) > sigma * dev] = med
    return out


def smooth(x, window):
    """Moving average with a window of `window` samples (valid part only)."""
    if window <= 1 or len(x) < window:
        return np.asarray(x, dtype=np.float64)
    kernel = np.ones(window) / window
    return np.convolve(x, kernel, mode="valid")


def decimate(x, factor):
    return np.asarray(x)[:: max(1, factor)]


def summarize(x, precision):
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {"n": 0}
    return {
        "n": int(x.size),
        "min": round(float(x.min()), precision),
        "max": round(float(x.max()), precision),
        "mean": round(float(x.mean()), precision),
        "p95": round(float(np.percentile(x, 95)), precision),
    }
