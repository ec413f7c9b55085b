"""The snapshot store: `<run>/analysis/step_<step>.{json,safetensors}`, the one writer and the one reader of them.

A snapshot is the contract between training and every reader (analyze, the notebook API, the
reports, the sweep objective). The summary JSON is strict JSON (NaN and infinities as null) and
follows the schema `check_summary` enforces; the tensors file beside it is safetensors, fp32. The
tensors are written first and the JSON last, each atomically, so a JSON file marks a whole snapshot.
Readers choose what a damaged file does: `on_damaged="raise"` (one line naming it) or `"skip"`
(left out, and listed with its reason in `RunSnapshots.damaged`: never silently).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lit_interp.errors import ConfigError
from lit_interp.files import atomic_write, json_text, read_regular_file

if TYPE_CHECKING:
    import numpy as np
    import torch

ANALYSIS_DIR = "analysis"
ERRORS_LOG = "errors.log"
STEP_FILE = re.compile(r"step_(?P<step>\d{7,})\.json")
MAX_SUMMARY_BYTES = 256 * 2**20
MAX_STEP = 2**63 - 1
# Sections of numbers that every reader may draw as such (others are free-form, e.g. composition matrices).
ROW_SECTIONS = ("heads", "layers", "hooks")  # name -> {score: number or null}
NUMBER_SECTIONS = ("metrics", "adversarial", "term_importance")  # name -> number or null
OnDamaged = Literal["raise", "skip"]


def analysis_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / ANALYSIS_DIR


def snapshot_path(run_dir: str | Path, step: int, suffix: str) -> Path:
    """`<run>/analysis/step_<7-digit step><suffix>`, suffix `.json` or `.safetensors`."""
    return analysis_dir(run_dir) / f"step_{step:07d}{suffix}"


def errors_log(run_dir: str | Path) -> Path:
    return analysis_dir(run_dir) / ERRORS_LOG


def write_snapshot(run_dir: str | Path, step: int, summary: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write step_<step>.safetensors then step_<step>.json, each atomically; the JSON marks the snapshot done."""
    from safetensors.torch import save_file

    json_path = snapshot_path(run_dir, step, ".json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in tensors.items()}
    atomic_write(snapshot_path(run_dir, step, ".safetensors"), lambda path: save_file(tensors, str(path)))
    text = json_text(summary)
    atomic_write(json_path, lambda path: path.write_text(text))
    return json_path


@dataclass(frozen=True)
class Snapshot:
    """One snapshot: its step, its checked summary, and where its tensors are."""

    path: Path  # the step_*.json file
    summary: dict[str, Any]

    @property
    def step(self) -> int:
        return self.summary["step"]

    @property
    def tensor_path(self) -> Path:
        return self.path.with_suffix(".safetensors")

    def tensors(self, wanted: Callable[[str], bool] = lambda name: True) -> dict[str, np.ndarray]:
        """The tensors whose names pass `wanted`, as fp32 numpy arrays (no torch import); {} without a tensors file."""
        import numpy as np
        from safetensors import safe_open

        if not self.tensor_path.exists():
            return {}
        try:
            _require_regular(self.tensor_path)
            with safe_open(str(self.tensor_path), framework="np") as file:
                return {name: file.get_tensor(name).astype(np.float32) for name in file.keys() if wanted(name)}
        except ConfigError:
            raise
        except Exception:  # safetensors reports a bad header or truncation with several exception types
            raise ConfigError(
                f"snapshot tensors {self.tensor_path} are unreadable (truncated or not safetensors); delete them and "
                "rerun analyze"
            ) from None

    def torch_tensors(self) -> dict[str, torch.Tensor]:
        import torch

        return {name: torch.from_numpy(array) for name, array in self.tensors().items()}


def _require_regular(path: Path) -> None:
    """A tensors file must be a regular file (never a FIFO or device, which would block or fill memory)."""
    import stat

    if not stat.S_ISREG(path.stat().st_mode):
        raise ConfigError(f"snapshot tensors {path} are not a regular file; delete them and rerun analyze")


@dataclass
class Damaged:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class RunSnapshots:
    """A run's readable snapshots by step, and the files left out as damaged (only with on_damaged="skip")."""

    run_dir: Path
    snapshots: list[Snapshot] = field(default_factory=list)
    damaged: list[Damaged] = field(default_factory=list)

    @property
    def summaries(self) -> list[dict[str, Any]]:
        return [snapshot.summary for snapshot in self.snapshots]

    @property
    def steps(self) -> list[int]:
        return [snapshot.step for snapshot in self.snapshots]

    def __len__(self) -> int:
        return len(self.snapshots)

    def __iter__(self) -> Iterator[Snapshot]:
        return iter(self.snapshots)

    def __getitem__(self, index: int) -> Snapshot:
        return self.snapshots[index]

    def __bool__(self) -> bool:
        return bool(self.snapshots)


def read_snapshot(path: Path) -> Snapshot:
    """The snapshot whose summary is `path` (a step_*.json file), or a one-line ConfigError saying what is wrong."""
    data = read_regular_file(path, MAX_SUMMARY_BYTES, "snapshot")
    try:
        summary = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        kind = "nested too deeply" if isinstance(error, RecursionError) else "not valid JSON (interrupted write?)"
        raise ConfigError(f"snapshot {path} is {kind}; delete it and rerun analyze") from None
    checked = check_summary(summary, path)
    match = STEP_FILE.fullmatch(path.name)
    if match and int(match["step"]) != checked["step"]:
        raise _schema_error(path, f"has step {checked['step']} but its name says {int(match['step'])}")
    return Snapshot(path, checked)


def read_snapshots(run_dir: str | Path, on_damaged: OnDamaged = "raise") -> RunSnapshots:
    """Every snapshot of the run, sorted by step (none when it wrote none); damaged files raise or are listed."""
    run_dir = Path(run_dir)
    found = RunSnapshots(run_dir)
    files = sorted(path for path in analysis_dir(run_dir).glob("step_*.json") if STEP_FILE.fullmatch(path.name))
    for path in files:
        try:
            found.snapshots.append(read_snapshot(path))
        except ConfigError as error:
            if on_damaged == "raise":
                raise
            found.damaged.append(Damaged(path, str(error).removeprefix(f"snapshot {path} ")))
    found.snapshots.sort(key=lambda snapshot: snapshot.step)
    return found


def is_number_or_null(value: Any) -> bool:
    """A JSON number, or null (NaN and infinities are written as null)."""
    return value is None or isinstance(value, (int, float)) and not isinstance(value, bool)


def _schema_error(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"snapshot {path} {problem}; it was not written by lit_interp's snapshots: delete it and rerun")


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_summary(summary: Any, path: Path) -> dict[str, Any]:
    """The summary if it follows the snapshot schema (numbers where numbers belong), else a one-line ConfigError."""
    if not isinstance(summary, dict):
        raise _schema_error(path, f"holds a JSON {type(summary).__name__}, not an object")
    step = summary.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= MAX_STEP:
        raise _schema_error(path, f"has step {short(step)}, not a non-negative integer")
    if not isinstance(summary.get("task"), str):
        raise _schema_error(path, f"has task {short(summary.get('task'))}, not a string")
    if not is_number_or_null(summary.get("loss")):
        raise _schema_error(path, f"has loss {short(summary.get('loss'))}, not a number")
    for section in ROW_SECTIONS:
        rows = summary.get(section, {})
        if not isinstance(rows, dict) or not all(
            isinstance(row, dict) and all(map(is_number_or_null, row.values())) for row in rows.values()
        ):
            raise _schema_error(path, f"has a '{section}' section that is not a mapping of names to numbers")
    for section in NUMBER_SECTIONS:
        values = summary.get(section, {})
        if not isinstance(values, dict) or not all(map(is_number_or_null, values.values())):
            raise _schema_error(path, f"has a '{section}' section that is not a mapping of names to numbers")
    if "composition" in summary and not is_composition(summary["composition"]):
        raise _schema_error(path, "has a 'composition' section that is not labels and square [writer reader] scores")
    return summary


def is_composition(section: Any) -> bool:
    """`{"labels": [head, ...], "q"|"k"|"v": [[score or null, ...], ...]}`, every matrix labels x labels."""
    if not isinstance(section, dict) or not isinstance(section.get("labels"), list):
        return False
    labels = section["labels"]
    if not all(isinstance(label, str) for label in labels):
        return False
    matrices = [value for key, value in section.items() if key != "labels"]
    return all(
        isinstance(matrix, list)
        and len(matrix) == len(labels)
        and all(
            isinstance(row, list) and len(row) == len(labels) and all(map(is_number_or_null, row)) for row in matrix
        )
        for matrix in matrices
    )


def snapshot_probe_size(checkpoint: dict[str, Any]) -> int | None:
    """The probe batch size the run's snapshots used, from the AnalysisSnapshots state in its checkpoint."""
    for name, state in (checkpoint.get("callbacks") or {}).items():
        if isinstance(state, dict) and str(name).startswith("AnalysisSnapshots"):
            size = state.get(PROBE_STATE_KEY)
            if isinstance(size, int) and not isinstance(size, bool) and size >= 1:
                return size
    return None


PROBE_STATE_KEY = "probe_batch_size"  # what AnalysisSnapshots.state_dict records for snapshot_probe_size
