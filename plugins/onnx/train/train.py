#!/usr/bin/env python3
"""Train the netmix `onnx` strategy's model from connection logs.

    ./plugins/onnx/train/train.sh --log conns.jsonl [--log more.jsonl] --out model.onnx

(train.sh installs the pinned tools of requirements.txt into .deps/train, then runs this file.)

Input: the engine's connection log (top-level config key `connection_log = "file.jsonl"`), one
JSON object per connection with every candidate's stats at decision time, the chosen interface
and the outcome. Output: an ONNX regressor from the plugin's features (one row per candidate)
to ln(1 + completion ms), with metadata `netmix.features`, `netmix.version`, `netmix.target`.

The features are NOT in the log as such: some of them are the plugin's own online state
(expected size per destination, measured capacity per interface, bytes in flight). This
script replays each log in decision order and rebuilds that state with the same rules and
constants as plugins/onnx/src/features.rs, which is the reference. Keep the two in step and
bump FEATURE_VERSION in both when a rule changes.

Each connection gives one training row: the chosen interface's features and the measured
completion time (connect + duration). Exploration in the plugin (or `epsilon = 1` while
collecting data) is what makes rows for the other interfaces exist.
"""

import argparse
import json
import math
import sys

# === Keep in step with plugins/onnx/src/features.rs ===
FEATURES = [
    "latency_ms",
    "jitter_ms",
    "success_rate",
    "active",
    "down_mbps",
    "capacity_mbps",
    "capacity_known",
    "expected_kb",
    "inflight_kb",
    "transfer_ms",
    "queue_ms",
]
FEATURE_VERSION = "1"
DEFAULT_UNKNOWN_LATENCY_MS = 50.0
DEFAULT_EXPECTED_BYTES = 16384.0
OPTIMISTIC_CAPACITY_BPS = 100e6
BIG_TRANSFER_BYTES = 256 * 1024
SIZE_ALPHA = 0.5
RATE_ALPHA = 0.5


def dest_key(rec):
    host = rec.get("host") or rec.get("addr") or "?"
    return f"{host.lower()}:{rec['port']}"


class Replay:
    """The plugin's FeatureState, rebuilt from the log."""

    def __init__(self):
        self.dest_bytes = {}
        self.global_bytes = None
        self.rate_bps = {}  # interface name -> bit/s
        self.inflight = {}  # interface name -> bytes

    def expected_bytes(self, rec):
        v = self.dest_bytes.get(dest_key(rec))
        if v is None:
            v = self.global_bytes
        return DEFAULT_EXPECTED_BYTES if v is None else v

    def capacity(self, cand):
        rate = self.rate_bps.get(cand["name"])
        if rate is not None and rate > 0:
            return max(rate, float(cand.get("peak_down_bps") or 0)), True
        return OPTIMISTIC_CAPACITY_BPS, False

    def open(self, iface, expected):
        self.inflight[iface] = self.inflight.get(iface, 0.0) + expected

    def close(self, rec, iface, expected):
        self.inflight[iface] = max(0.0, self.inflight.get(iface, 0.0) - expected)
        if not rec.get("ok"):
            return
        b = float(rec.get("bytes_down") or 0)
        key = dest_key(rec)
        e = self.dest_bytes.get(key, b)
        self.dest_bytes[key] = e + SIZE_ALPHA * (b - e)
        g = b if self.global_bytes is None else self.global_bytes
        self.global_bytes = g + SIZE_ALPHA * (b - g)
        duration_us = float(rec.get("duration_ms") or 0) * 1000.0
        if b >= BIG_TRANSFER_BYTES and duration_us > 0:
            rate = b * 8.0 / (duration_us / 1e6)
            r = self.rate_bps.get(iface, rate)
            self.rate_bps[iface] = r + RATE_ALPHA * (rate - r)

    def row(self, rec, cand, usable):
        known = [c["latency_ewma_us"] / 1000.0 for c in usable if c.get("latency_ewma_us") is not None]
        known.sort()
        neutral = known[len(known) // 2] if known else DEFAULT_UNKNOWN_LATENCY_MS
        lat = cand.get("latency_ewma_us")
        latency_ms = lat / 1000.0 if lat is not None else neutral
        total = cand.get("successes", 0) + cand.get("failures", 0)
        success_rate = 1.0 if total == 0 else cand.get("successes", 0) / total
        cap, cap_known = self.capacity(cand)
        expected = self.expected_bytes(rec)
        inflight = self.inflight.get(cand["name"], 0.0)
        capc = max(cap, 1e3)
        return [
            latency_ms,
            cand.get("jitter_us", 0) / 1000.0,
            success_rate,
            float(cand.get("active", 0)),
            float(cand.get("down_bps", 0)) / 1e6,
            cap / 1e6,
            1.0 if cap_known else 0.0,
            expected / 1024.0,
            inflight / 1024.0,
            expected * 8.0 / capc * 1000.0,
            (inflight + expected) * 8.0 / capc * 1000.0,
        ]


def completion_ms(rec):
    return float(rec.get("connect_us") or 0) / 1000.0 + float(rec.get("duration_ms") or 0)


def rows_from_log(path):
    """(X, y, strategy) for every connection of one log, replayed in decision order."""
    recs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON: {e}")
    recs.sort(key=lambda r: (r["unix_ms"], r.get("id", 0)))
    replay = Replay()
    pending = []  # (close time ms, rec, iface, expected)
    X, y = [], []
    for rec in recs:
        t = rec["unix_ms"]
        pending.sort(key=lambda p: p[0])
        while pending and pending[0][0] <= t:
            _, r, iface, expected = pending.pop(0)
            replay.close(r, iface, expected)
        chosen = rec.get("chosen")
        usable = [c for c in rec.get("candidates", []) if c.get("health") != "down"]
        cand = next((c for c in usable if c["name"] == chosen), None)
        if cand is None:
            continue
        expected = replay.expected_bytes(rec)
        if rec.get("ok"):
            X.append(replay.row(rec, cand, usable))
            y.append(math.log1p(completion_ms(rec)))
        replay.open(chosen, expected)
        pending.append((t + completion_ms(rec), rec, chosen, expected))
    return X, y


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", action="append", required=True, help="connection log (JSON lines); repeatable")
    ap.add_argument("--out", required=True, help="where to write the .onnx model")
    ap.add_argument("--kind", choices=["gbr", "linear"], default="gbr", help="regressor (default gbr)")
    ap.add_argument("--min-rows", type=int, default=20)
    args = ap.parse_args()

    import numpy as np
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import train_test_split

    X, y = [], []
    for path in args.log:
        xs, ys = rows_from_log(path)
        print(f"{path}: {len(xs)} connections", file=sys.stderr)
        X += xs
        y += ys
    if len(X) < args.min_rows:
        sys.exit(f"only {len(X)} usable connections in the logs; need at least {args.min_rows}")
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)

    def make():
        if args.kind == "linear":
            return Ridge(alpha=1.0)
        return GradientBoostingRegressor(
            n_estimators=150, max_depth=3, learning_rate=0.08, subsample=0.9, random_state=0
        )

    xt, xv, yt, yv = train_test_split(X, y, test_size=0.2, random_state=0)
    held = make().fit(xt, yt)
    mae = float(np.mean(np.abs(held.predict(xv) - yv)))
    print(f"hold-out: {len(xv)} rows, mean |error| {mae:.3f} in ln(1+ms) (×{math.exp(mae):.2f})", file=sys.stderr)

    reg = make().fit(X, y)
    onx = convert_sklearn(
        reg,
        initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    for key, value in (
        ("netmix.features", ",".join(FEATURES)),
        ("netmix.version", FEATURE_VERSION),
        ("netmix.target", "log1p_completion_ms"),
        ("netmix.rows", str(len(X))),
        ("netmix.kind", args.kind),
    ):
        p = onx.metadata_props.add()
        p.key, p.value = key, value
    onx.producer_name = "netmix plugins/onnx/train/train.py"
    onnx.checker.check_model(onx)
    with open(args.out, "wb") as f:
        f.write(onx.SerializeToString())
    print(f"wrote {args.out}: {args.kind} on {len(X)} rows, features {','.join(FEATURES)}", file=sys.stderr)


if __name__ == "__main__":
    main()
