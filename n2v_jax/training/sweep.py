"""Ablation sweeps: `python -m n2v_jax.sweep --config experiments/<study>/config.py
--workdir DIR`.

A study's `config.py` has `get_config()` (the base config) and `sweep()`, the list of
points as config overrides, e.g. `[{"mask.perc_pix": 0.5, "seed": 0}, ...]`. Every point
trains into `DIR/<point-name>/` (a normal workdir: resume, predict, summary.json). A point
whose `summary.json` exists is finished and skipped on a rerun; an interrupted one resumes
from its checkpoint. Points that differ only in `seed`, `opt.learning_rate` and masking
settings (`mask.*`, e.g. perc_pix, strategy) train together in one compiled program
(`training.multi`; `--no_vmap` trains one at a time). Then the runner writes:

- `DIR/points.csv`: one row per point (its overrides and its summary.json / metrics.jsonl),
- `DIR/results.csv`, `DIR/results.md`: points that differ only in `seed` grouped,
  mean and sample standard deviation (n-1) over the seeds of PSNR (when the data has
  clean ground truth: synthetic data or `data.clean_path`) and final losses,
- `DIR/results.png`: the main metric per group, mean ± std.

A study may also define `evaluate(point_dir) -> dict` of extra metrics (e.g. PSNR on a
test set); the runner calls it once per point, stores `DIR/<point>/eval.json` (so a rerun
does not evaluate again) and adds the metrics to the tables; the first one is the
plotted metric.
"""

import importlib.util
import json
import math
import os
import re
import time
from typing import Any, Callable

import ml_collections
import numpy as np

from n2v_jax import reporter
from n2v_jax.errors import N2VError, NotFoundError
from n2v_jax.io import figures, files
from n2v_jax.preemption import Preemption
from n2v_jax.training import config as config_lib, multi, trainer

METRICS = (("psnr_denoised", "PSNR denoised (dB)"), ("psnr_noisy", "PSNR noisy (dB)"),
           ("val_loss", "final val loss"), ("train_loss", "final train loss"))


def _load(path: str):
  if not os.path.isfile(path):
    raise NotFoundError(f"--config {path}: no such file")
  spec = importlib.util.spec_from_file_location("n2v_study_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for fn in ("get_config", "sweep"):
    if not callable(getattr(module, fn, None)):
      raise N2VError(f"{path}: a study config needs get_config() and sweep()")
  points = list(module.sweep())
  if not points or not all(isinstance(p, dict) for p in points):
    raise N2VError(f"{path}: sweep() must return a non-empty list of override dicts")
  evaluate = getattr(module, "evaluate", None)
  return module.get_config(), points, evaluate if callable(evaluate) else None


def apply_overrides(base: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(base.to_dict())  # a deep copy
  for dotted, value in overrides.items():
    *groups, field = dotted.split(".")
    node = config
    for g in groups:
      if g not in node or not isinstance(node[g], ml_collections.ConfigDict):
        raise N2VError(f"sweep override {dotted!r}: no config group {g!r}")
      node = node[g]
    if field not in node:
      raise N2VError(f"sweep override {dotted!r}: no such config field")
    if isinstance(node[field], tuple) and isinstance(value, list):
      value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if isinstance(node[field], float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    node[field] = value
  return config


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, (tuple, list)):
    return "x".join(_fmt(v) for v in value)
  return str(value)


def point_names(points: list[dict]) -> list[str]:
  """Readable, unique folder names: 'perc_pix=0.5__strategy=median__seed=1'."""
  keys = {k for p in points for k in p}
  short = {k: k.split(".")[-1] for k in keys}
  if len(set(short.values())) < len(keys):  # ambiguous last parts: use the dotted keys
    short = {k: k for k in keys}
  names = []
  for p in points:
    name = "__".join(f"{short[k]}={_fmt(v)}" for k, v in p.items()) or "base"
    names.append(re.sub(r"[^A-Za-z0-9._=+-]", "_", name))
  if len(set(names)) < len(names):
    dup = sorted({n for n in names if names.count(n) > 1})
    raise N2VError(f"sweep(): duplicate points {dup}")
  return names


def is_done(point_dir: str) -> bool:
  return os.path.exists(os.path.join(point_dir, "summary.json"))


def vmap_groups(configs: list[ml_collections.ConfigDict], max_vmap: int) -> list[list[int]]:
  """Indices of points that can share one program (differ only in what multi allows)."""
  groups: dict[str, list[int]] = {}
  for i, c in enumerate(configs):
    key = json.dumps(multi.static_part(c), sort_keys=True, default=str)
    groups.setdefault(key, []).append(i)
  out = []
  for members in groups.values():
    out += [members[j:j + max_vmap] for j in range(0, len(members), max(1, max_vmap))]
  return out


def _write_point_json(point_dir: str, overrides: dict, group: list[str], seconds: float) -> None:
  files.write_json_atomic(os.path.join(point_dir, "point.json"), {
      "overrides": overrides, "trained_with": group, "group_wall_seconds": seconds})


def run_sweep(config_path: str, workdir: str, vmap: bool = True, max_vmap: int = 16,
              log: Callable[[str], None] = reporter.status,
              preemption: Preemption | None = None) -> dict:
  """Trains every unfinished point, then writes the tables and the plot; returns counts.
  preemption: an active Preemption: on SIGTERM/SIGINT the running point(s) checkpoint and
  the sweep returns {'stopped_at': step, 'signal': signum} before the next point."""
  base, points, evaluate = _load(config_path)
  names = point_names(points)
  configs = [apply_overrides(base, p) for p in points]
  for c, n in zip(configs, names):
    try:
      config_lib.validate(c)
    except N2VError as e:
      raise N2VError(f"point {n}: {e}") from None
  os.makedirs(workdir, exist_ok=True)
  dirs = [os.path.join(workdir, n) for n in names]
  pending = [i for i, d in enumerate(dirs) if not is_done(d)]
  skipped = len(points) - len(pending)
  log(f"{len(points)} points: {skipped} finished (skipped), {len(pending)} to train")
  groups = (vmap_groups([configs[i] for i in pending], max_vmap) if vmap
            else [[j] for j in range(len(pending))])
  for g in groups:
    idx = [pending[j] for j in g]
    t0 = time.perf_counter()
    if len(idx) > 1:
      log(f"training {len(idx)} points in one program: {', '.join(names[i] for i in idx)}")
      try:
        results = multi.train_many([configs[i] for i in idx], [dirs[i] for i in idx],
                                   preemption=preemption)
      except N2VError as e:  # e.g. data shapes differ, checkpoints at different steps
        log(f"  not as one program ({e}); one by one")
        results = []
        for i in idx:
          results.append(trainer.train_and_evaluate(configs[i], dirs[i], preemption=preemption))
          if "signal" in results[-1]:
            break
    else:
      log(f"training {names[idx[0]]}")
      results = [trainer.train_and_evaluate(configs[idx[0]], dirs[idx[0]], preemption=preemption)]
    stopped = [r for r in results if "signal" in r]
    if stopped:  # preempted: the point's checkpoint is saved; a rerun resumes it
      return stopped[0]
    seconds = time.perf_counter() - t0
    for i in idx:
      _write_point_json(dirs[i], points[i], [names[j] for j in idx], seconds)
  extra = []
  if evaluate is not None:
    for n, d in zip(names, dirs):
      path = os.path.join(d, "eval.json")
      if is_done(d) and not os.path.exists(path):
        log(f"evaluating {n}")
        files.write_json_atomic(path, {k: float(v) for k, v in evaluate(d).items()})
      if os.path.exists(path):
        extra += [k for k in files.read_json(path) if k not in extra]
  rows = point_rows(points, names, dirs, base)
  tables = write_results(workdir, rows, points, base, config_path, extra)
  log(f"wrote {os.path.join(workdir, 'results.md')} ({len(tables)} rows)")
  return {"points": len(points), "skipped": skipped, "trained": len(pending)}


def _last_metrics(point_dir: str) -> dict:
  path = os.path.join(point_dir, "metrics.jsonl")
  out = {}
  if os.path.exists(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    if rows:
      out["train_loss"] = rows[-1]["train_loss"]
      vals = [r["val_loss"] for r in rows if "val_loss" in r]
      if vals:
        out["val_loss"] = vals[-1]
  return out


def _value(base: ml_collections.ConfigDict, overrides: dict, key: str) -> Any:
  if key in overrides:
    return overrides[key]
  node = base
  for part in key.split("."):
    node = node[part]
  return node


def point_rows(points: list[dict], names: list[str], dirs: list[str],
               base: ml_collections.ConfigDict) -> list[dict]:
  """One dict per finished point: name, overrides (all sweep keys) and its metrics."""
  keys = list(dict.fromkeys(k for p in points for k in p))
  rows = []
  for p, n, d in zip(points, names, dirs):
    if not is_done(d):
      continue
    with open(os.path.join(d, "summary.json")) as f:
      summary = json.load(f)
    row = {"point": n, **{k: _value(base, p, k) for k in keys}}
    row.update({m: summary[m] for m, _ in METRICS if m in summary})
    row.update(_last_metrics(d))
    if os.path.exists(os.path.join(d, "eval.json")):
      row.update(files.read_json(os.path.join(d, "eval.json")))
    rows.append(row)
  return rows


def _stats(values: list[float]) -> tuple[float, float]:
  a = np.asarray(values, np.float64)
  return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else math.nan)


def aggregate(rows: list[dict], keys: list[str], metrics: list[str]) -> list[dict]:
  """Rows grouped by every sweep key except seed: n, mean and std (n-1) of each metric."""
  group_keys = [k for k in keys if k != "seed"]
  groups: dict[str, list[dict]] = {}
  for r in rows:
    groups.setdefault(json.dumps([r[k] for k in group_keys], default=str), []).append(r)
  out = []
  for members in groups.values():
    g = {k: members[0][k] for k in group_keys}
    g["seeds"] = len(members)
    for m in metrics:
      vals = [r[m] for r in members if m in r]
      if vals:
        g[f"{m}_mean"], g[f"{m}_std"] = _stats(vals)
    out.append(g)
  return out


def _pm(mean: float, std: float, digits: int) -> str:
  return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def write_results(workdir: str, rows: list[dict], points: list[dict],
                  base: ml_collections.ConfigDict, config_path: str,
                  extra: list[str] = ()) -> list[dict]:
  keys = list(dict.fromkeys(k for p in points for k in p))
  metric_cols = list(extra) + [m for m, _ in METRICS if m not in extra]
  files.write_csv_atomic(os.path.join(workdir, "points.csv"), ["point", *keys, *metric_cols],
                         rows)
  table = aggregate(rows, keys, metric_cols)
  group_keys = [k for k in keys if k != "seed"]
  present = [m for m in metric_cols if any(f"{m}_mean" in g for g in table)]
  stat_cols = [f"{m}_{s}" for m in present for s in ("mean", "std")]
  files.write_csv_atomic(os.path.join(workdir, "results.csv"),
                         [*group_keys, "seeds", *stat_cols], table)
  labels = {**{m: m for m in extra}, **dict(METRICS)}
  lines = [f"# Sweep results: `{config_path}`", "",
           f"{len(rows)} of {len(points)} points finished; mean ± sample std (n-1) over seeds.",
           "", "| " + " | ".join([*group_keys, "seeds", *[labels[m] for m in present]]) + " |",
           "|" + "---|" * (len(group_keys) + 1 + len(present))]
  for g in table:
    cells = [_fmt(g[k]) for k in group_keys] + [str(g["seeds"])]
    cells += [_pm(g[f"{m}_mean"], g[f"{m}_std"], 2 if m.startswith("psnr") else 4)
              if f"{m}_mean" in g else "" for m in present]
    lines.append("| " + " | ".join(cells) + " |")
  files.write_text_atomic(os.path.join(workdir, "results.md"), "\n".join(lines) + "\n")
  if table:
    main = next(m for m in (*extra, "psnr_denoised", "val_loss", "train_loss") if m in present)
    _plot(table, group_keys, main, labels[main], os.path.join(workdir, "results.png"))
  return table


def _plot(table: list[dict], group_keys: list[str], metric: str, label: str, out: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  varying = [k for k in group_keys if len({_fmt(g[k]) for g in table}) > 1] or group_keys
  names = [", ".join(f"{k.split('.')[-1]}={_fmt(g[k])}" for k in varying) or "base"
           for g in table]
  means = [g.get(f"{metric}_mean", math.nan) for g in table]
  stds = [0.0 if math.isnan(g.get(f"{metric}_std", math.nan)) else g[f"{metric}_std"]
          for g in table]
  fig, ax = plt.subplots(figsize=(5 + 0.075 * max(map(len, names)), 0.45 * len(table) + 1.5))
  y = np.arange(len(table))
  ax.barh(y, means, xerr=stds, capsize=3, color="tab:blue", alpha=0.8)
  ax.set_yticks(y, names)
  ax.invert_yaxis()
  finite = [m for m in means if not math.isnan(m)]
  if finite and metric.startswith("psnr"):
    lo = min(m - s for m, s in zip(means, stds) if not math.isnan(m))
    hi = max(m + s for m, s in zip(means, stds) if not math.isnan(m))
    ax.set_xlim(max(0.0, lo - 1.0), hi + 0.5)
  ax.set_xlabel(f"{label}, mean ± std over seeds ({table[0]['seeds']} seeds)")
  fig.tight_layout()
  figures.save_figure(fig, out)
