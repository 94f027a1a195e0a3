"""Output shared by the command line and the experiments: aligned tables, atomic result files,
and the provenance every result file carries (fedaudit version, git commit, UTC time)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def table(headers: List[str], rows: List[List[Any]]) -> str:
    """Rows as a right-aligned text table with a rule under the header; floats to 4 decimals."""
    cells = [[str(h) for h in headers]] + [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` so that a reader (or a crash) sees the old file or the new
    one, never half of it: a temporary file in the same folder, flushed and fsynced, then
    ``os.replace`` (atomic on POSIX and Windows), then the folder fsynced where the OS allows."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:   # the rename itself survives a power cut only once the folder is synced (POSIX)
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
    return path


def atomic_write_json(path: PathLike, obj: Any, indent: Optional[int] = 2) -> Path:
    """``obj`` as JSON (``default=str`` for paths, numpy scalars and the like), written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


def provenance() -> Dict[str, Any]:
    """Where a result comes from: fedaudit's version, the git commit of the source tree when it
    is a git checkout (None otherwise, with ``dirty`` when uncommitted changes exist), and the
    UTC time, ISO 8601."""
    import datetime
    import subprocess
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            ver: Optional[str] = version("fedaudit")
        except PackageNotFoundError:
            ver = None
    except ImportError:   # pragma: no cover
        ver = None
    root = Path(__file__).resolve().parent.parent
    commit: Optional[str] = None
    dirty: Optional[bool] = None
    if (root / ".git").exists():
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}   # read-only: never refresh the index
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                    timeout=5, env=env).stdout.strip() or None
            if commit:
                status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                        capture_output=True, text=True, timeout=5, env=env).stdout
                dirty = bool(status.strip())
        except (OSError, subprocess.SubprocessError):
            commit = None
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return {"fedaudit_version": ver, "git_commit": commit, "git_dirty": dirty,
            "utc": now.isoformat().replace("+00:00", "Z")}
