"""Telemetry condenser: the small Python service of the 'python service' scenario.

It reads raw housekeeping samples (one float per line per channel), smooths and decimates them
with numpy, and writes a compact summary that fits the downlink budget.
"""

__version__ = "1.4.1"
