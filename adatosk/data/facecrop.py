"""The ``adatosk face-crop`` stage: face crops of raw videos, and the packed clip cache of every clip.

Raw videos (DFEW ``Clip/original``, MAFW ``data/clips``, any folder of user videos; ``data.face_crop.videos_dir``)
are decoded twice as a stream, so that memory does not grow with a video's length: the first pass detects and
tracks the main face (:func:`adatosk.data.tracking.track_faces`, keeping only its boxes), the second crops each
frame by its box. Crops are written as JPEG in DFEW's layout, ``{data.crops_dir}/<clip>/<clip>_NNNNN.jpg``
(outside ``data.root``; the manifest reads them there), in a folder marked as ours so that frames it did not write
are never overwritten; a clip's folder appears complete or not at all.

Datasets that ship crops (DFEW ``Clip/clip_224x224``, FERV39K ``2_ClipsforFaceCrop``, MAFW ``data/faces``, the
demo) set ``data.face_crop.precropped: true``: their frame folders are read as they are.

Either way every clip is packed: all its frames resized straight to ``data.img_size``, uint8 ``[T, S, S, 3]`` in
``{data.cache_dir}/{clip_id}.npy`` (:mod:`adatosk.data.cache`). The clip id is the clip's folder (or video) path
relative to its root, without suffix, ``/`` replaced by ``_`` (DFEW ``00001``, FERV39K ``Action_Sad_0010``, MAFW
``00025``), as in the manifest. Symbolic links to clip folders or videos are followed (data trees are often link
farms); a link back to a folder already seen is not.

The stage runs clips in parallel (``--jobs``) and is resumable: ``{cache_dir}/face_crop_log.jsonl`` gets one line
per finished clip (clip, frames, detected fraction, status, seconds, and the size and modification time of its
source and outputs); a clip is done when its line says ok or excluded and neither its source nor (ok) its cache file
and frame folder changed since: a changed, replaced or lost file makes the clip due again. The cache directory and
the frames directory are locked while the stage runs: a second run on either fails at once, naming it. The report
(``{cache_dir}/face_crop_report.json``) lists the excluded and failed clips; the command prints one line per failed
clip (``adatosk face-crop: <clip source>: <what is wrong>``) and exits 1 when any failed, after doing all others.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from adatosk.data.cache import CorruptClipError, pack_clip, pack_frames
from adatosk.data.faces import CropParams, FaceDetector, make_detector
from adatosk.data.tracking import NoFaceError, crop_frames, track_faces
from adatosk.data.video import (
    VIDEO_EXTENSIONS,
    VideoDecodeError,
    atomic_directory,
    frame_files,
    iter_video,
    read_frames_dir,
    remove_stale_directories,
    write_frame_image,
)
from adatosk.data.workers import worker_context
from adatosk.progress import available_cores

OURS_MARKER = ".adatosk_face_crop"   # in a frames_dir written by this stage
LOG_NAME = "face_crop_log.jsonl"
REPORT_NAME = "face_crop_report.json"


@dataclass(frozen=True)
class ClipTask:
    clip_id: str
    source: str                      # frame folder (precropped) or video file
    frames_out: str | None           # folder to write the crops into (raw videos), else None
    cache: str                       # packed cache file
    img_size: int
    params: CropParams

    @property
    def key(self) -> str:
        """What the outputs depend on: a changed source, size or crop (raw videos) makes a done clip stale."""
        crop = asdict(self.params) if self.frames_out else None
        blob = json.dumps([self.source, self.frames_out, self.img_size, crop], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stamp(path: str | os.PathLike[str] | None) -> str | None:
    """What changes when a file or folder's content does: size and modification time of the file, or of each
    (non-hidden) file in the folder, hashed; None for a path that does not exist."""
    if path is None or not os.path.exists(path):
        return None
    if os.path.isfile(path):
        info = os.stat(path)
        return f"{info.st_size}:{info.st_mtime_ns}"
    entries = sorted((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns) for entry in os.scandir(path)
                     if entry.is_file() and not entry.name.startswith("."))
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def _output_stamps(task: ClipTask) -> list[str | None]:
    return [stamp(task.cache), stamp(task.frames_out)]


def clip_id_of(path: Path, root: Path) -> str:
    """``root/Action/Sad/0010`` -> ``Action_Sad_0010``; ``root/00025.mp4`` -> ``00025`` (the manifest's clip ids)."""
    relative = path.relative_to(root)
    return (relative.with_suffix("") if path.is_file() else relative).as_posix().replace("/", "_")


def find_clips(root: Path, precropped: bool) -> dict[str, Path]:
    """clip id -> frame folder (``precropped``: every folder under ``root`` holding frame images) or video file.
    Links to folders are followed, except a link back to a folder above it (a loop)."""
    if not root.is_dir():
        what = "frame folders (data.frames_dir)" if precropped else "raw videos (data.face_crop.videos_dir)"
        raise FileNotFoundError(f"the directory of {what} {root} does not exist (run `adatosk verify`)")
    clips: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in sorted(dirs) if not d.startswith(".") and not _loops_back(Path(folder, d))]
        folder = Path(folder)
        if precropped:
            found = [folder] if folder != root and frame_files(folder) else []
        else:
            found = [folder / f for f in sorted(files) if Path(f).suffix.lower() in VIDEO_EXTENSIONS
                     and not f.startswith(".")]
        for path in found:
            clip_id = clip_id_of(path, root)
            if clip_id in clips:
                raise ValueError(f"two clips have the id {clip_id}: {clips[clip_id]} and {path}")
            clips[clip_id] = path
    if not clips:
        raise FileNotFoundError(f"no clips ({'frame folders' if precropped else 'videos'}) found under {root}")
    return clips


def _loops_back(folder: Path) -> bool:
    """``folder`` is a link to its own parent or a folder above it: following it would never end."""
    target, parent = Path(os.path.realpath(folder)), Path(os.path.realpath(folder.parent))
    return folder.is_symlink() and (target == parent or target in parent.parents)


_DETECTORS: dict[CropParams, FaceDetector] = {}  # one detector per worker process and params


def crop_video(task: ClipTask) -> tuple[int, float]:
    """Crop the main face of the raw video ``task.source`` into its frame folder and cache: (frames, detected
    fraction). Pass 1 tracks the face (boxes only), pass 2 decodes again and crops; memory holds a few frames."""
    from adatosk.data.transforms import resize_clip

    params = task.params
    if params not in _DETECTORS:
        _DETECTORS[params] = make_detector(params)
    faces = track_faces(iter_video(task.source), params, _DETECTORS[params])

    def written(crops: Iterable[np.ndarray], folder: Path) -> Iterator[np.ndarray]:
        for number, crop in enumerate(crops, 1):  # [size, size, 3]
            write_frame_image(folder, task.clip_id, number, crop, params.jpeg_quality)
            yield resize_clip(crop[None], task.img_size)[0]

    with atomic_directory(str(task.frames_out)) as folder:
        crops = crop_frames(iter_video(task.source), faces.boxes, params.size)
        pack_frames(written(crops, folder), len(faces.boxes), task.cache)
    return len(faces.boxes), faces.detected_fraction


def process_clip(task: ClipTask) -> dict[str, Any]:
    """Crop (raw video) or read (precropped) one clip, write its frames and cache; return its log record."""
    from adatosk.data.transforms import resize_clip

    start = time.perf_counter()
    record: dict[str, Any] = {"clip": task.clip_id, "source": task.source, "key": task.key,
                              "source_stamp": stamp(task.source)}
    try:
        if task.frames_out is None:
            frames = read_frames_dir(task.source)
            pack_clip(resize_clip(frames, task.img_size), task.cache)
            count, fraction = len(frames), None
        else:
            count, fraction = crop_video(task)
        record.update(frames=count, detected_fraction=fraction, status="ok")
    except NoFaceError as error:
        record.update(frames=None, detected_fraction=error.detected_fraction, status="excluded", reason=str(error))
    except (VideoDecodeError, CorruptClipError) as error:
        within = "" if error.path in (None, task.source) else f"{error.path}: "
        record.update(frames=None, detected_fraction=None, status="failed", reason=within + error.what)
    except FileNotFoundError as error:
        record.update(frames=None, detected_fraction=None, status="failed", reason=str(error))
    if record["status"] != "ok":  # no stale outputs of an earlier run may stay behind
        Path(task.cache).unlink(missing_ok=True)
        if task.frames_out:
            shutil.rmtree(task.frames_out, ignore_errors=True)
    record["output_stamps"] = _output_stamps(task)
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def read_log(path: Path) -> dict[str, dict[str, Any]]:
    """The last record of every clip in a JSON-lines log (a torn last line, from a killed run, is ignored)."""
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[record["clip"]] = record
    return records


def _is_done(task: ClipTask, record: dict[str, Any] | None) -> bool:
    """The log's record says the clip is done with this task's settings, from the source as it is now, and (ok)
    into the outputs as they are now."""
    if record is None or record.get("key") != task.key or record.get("source_stamp") != stamp(task.source):
        return False
    if record["status"] == "excluded":
        return True
    return record["status"] == "ok" and record.get("output_stamps") == _output_stamps(task)


def _claim_frames_dir(frames_root: Path) -> None:
    """Refuse to write crops into a folder holding frames this stage did not write (e.g. a dataset's own crops)."""
    if frames_root.is_dir() and any(p for p in frames_root.iterdir() if not p.name.startswith(".")) \
            and not (frames_root / OURS_MARKER).exists():
        raise FileExistsError(f"{frames_root} holds frame folders not written by `adatosk face-crop` (a dataset's own "
                              "crops?); set data.crops_dir to a new folder for the crops of the raw videos")
    frames_root.mkdir(parents=True, exist_ok=True)
    (frames_root / OURS_MARKER).touch()


def plan(data_cfg: Mapping[str, Any]) -> list[ClipTask]:
    """One task per clip of the dataset: its frame folders (precropped) or raw videos."""
    from adatosk.data.manifest import frames_dir

    face_cfg = dict(data_cfg.get("face_crop") or {})
    params = CropParams.from_config(face_cfg)
    root = Path(data_cfg["root"])
    frames_root = root / frames_dir(data_cfg)
    precropped = bool(face_cfg.get("precropped", False))
    if precropped:
        sources = find_clips(frames_root, precropped=True)
    else:
        if not face_cfg.get("videos_dir"):
            raise ValueError("data.face_crop.precropped is false but data.face_crop.videos_dir is not set")
        sources = find_clips(root / str(face_cfg["videos_dir"]), precropped=False)
    cache_dir = Path(data_cfg["cache_dir"])
    return [ClipTask(clip_id=clip_id, source=str(source),
                     frames_out=None if precropped else str(frames_root / clip_id),
                     cache=str(cache_dir / f"{clip_id}.npy"), img_size=int(data_cfg["img_size"]), params=params)
            for clip_id, source in sorted(sources.items())]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # parallelism comes from the processes


def _run_tasks(tasks: Sequence[ClipTask], jobs: int) -> Iterator[dict[str, Any]]:
    if jobs <= 1 or len(tasks) <= 1:
        yield from map(process_clip, tasks)
        return
    with worker_context(__name__, "adatosk.data.transforms").Pool(jobs, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(process_clip, tasks, chunksize=1)


@contextlib.contextmanager
def _locked_outputs(cache_dir: Path, frames_root: Path | None) -> Iterator[None]:
    """Lock the cache directory and (raw videos) the frames directory for the block, after removing what a killed
    run of this stage left in them."""
    from adatosk.io import locked_directory, remove_stale_temporaries

    with contextlib.ExitStack() as locks:
        locks.enter_context(locked_directory(cache_dir, "`adatosk face-crop`"))
        remove_stale_temporaries(cache_dir)
        if frames_root is not None:
            _claim_frames_dir(frames_root)
            locks.enter_context(locked_directory(frames_root, "`adatosk face-crop`"))
            remove_stale_directories(frames_root)
        yield


def run(data_cfg: Mapping[str, Any], jobs: int = 1, force: bool = False,
        report_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Process every clip not done yet; write the log and the report; return the report."""
    from adatosk.io import write_json_atomic
    from adatosk.progress import progress

    tasks = plan(data_cfg)  # never empty
    precropped = tasks[0].frames_out is None
    cache_dir = Path(data_cfg["cache_dir"])
    with _locked_outputs(cache_dir, None if precropped else Path(str(tasks[0].frames_out)).parent):
        log_path = cache_dir / LOG_NAME
        if force:
            log_path.unlink(missing_ok=True)
        records = read_log(log_path)
        todo = [task for task in tasks if not _is_done(task, records.get(task.clip_id))]
        start = time.perf_counter()
        with open(log_path, "a", encoding="utf-8") as log, \
                progress(total=len(todo), desc="face-crop", unit="clip") as bar:
            for record in _run_tasks(todo, jobs):
                log.write(json.dumps(record) + "\n")
                log.flush()
                records[record["clip"]] = record
                bar.update()
        seconds = time.perf_counter() - start
        current = [records[task.clip_id] for task in tasks]
        done_frames = sum(records[task.clip_id].get("frames") or 0 for task in todo)
        report = {
            "dataset": data_cfg["name"],
            "precropped": precropped,
            "clips": len(tasks),
            "processed": len(todo),
            "skipped_done": len(tasks) - len(todo),
            "ok": sum(r["status"] == "ok" for r in current),
            "excluded": [{k: r.get(k) for k in ("clip", "source", "detected_fraction", "reason")}
                         for r in current if r["status"] == "excluded"],
            "failed": [{k: r.get(k) for k in ("clip", "source", "reason")}
                       for r in current if r["status"] == "failed"],
            "seconds": round(seconds, 2),
            "frames_per_second": round(done_frames / seconds, 1) if done_frames else None,
            "crop_params": None if precropped else asdict(tasks[0].params),
            "log": str(log_path),
        }
        write_json_atomic(report_path or cache_dir / REPORT_NAME, report)
        return report



# --- the `adatosk face-crop` command ----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from adatosk.cli import add_config_arguments

    parser.add_argument("--jobs", type=int, default=available_cores(),
                        help="parallel processes (default: the cores this process may use)")
    parser.add_argument("--force", action="store_true", help="redo every clip, even those the log says are done")
    parser.add_argument("--report", default=None, metavar="FILE",
                        help=f"the JSON report of excluded/failed clips (default: {{data.cache_dir}}/{REPORT_NAME})")
    parser.add_argument("--bench", default=None, action="append", metavar="VIDEO",
                        help="only measure the face-crop speed and face coverage on VIDEO, per detect_every, and "
                             "print a table (repeat the option for more videos)")
    parser.add_argument("--bench-json", default=None, metavar="FILE", help="with --bench: also write the rows as JSON")
    parser.add_argument("--repeat", type=int, default=3, help="with --bench: runs, the best is reported")
    add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from adatosk.config import load_config, to_container
    from adatosk.io import write_json_atomic

    cfg = load_config(args.overrides, args.config)
    data_cfg = to_container(cfg.data)
    if args.bench:
        from adatosk.benchmarks.facecrop import benchmark, format_bench

        rows = benchmark(args.bench, CropParams.from_config(data_cfg.get("face_crop")), args.repeat)
        print(format_bench(rows))
        if args.bench_json:
            write_json_atomic(args.bench_json, rows)
        return 0
    report = run(data_cfg, jobs=args.jobs, force=args.force, report_path=args.report)
    print(f"face-crop {report['dataset']}: {report['clips']} clips, {report['processed']} processed, "
          f"{report['skipped_done']} already done; {report['ok']} ok, {len(report['excluded'])} excluded (no face), "
          f"{len(report['failed'])} failed; {report['seconds']} s"
          + (f", {report['frames_per_second']} frames/s" if report["frames_per_second"] else ""))
    for entry in report["failed"]:
        print(f"adatosk face-crop: {entry['source']}: {entry['reason']}", file=sys.stderr)
    return 1 if report["failed"] else 0
