"""Where everything lives inside a workspace.

    faces/<set>/        aligned faces, one folder per identity/set
    jobs/               job files (*.toml); swapd writes <name>.status.json beside them
    footage/<job>/      new footage for a merge
    models/<job>/       model.pt, exports/, previews/
    output/<job>/       merged results
    .swapd/             state.db, logs/, quarantine/, cache/
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import platformdirs


def default_workspace() -> Path:
    """The platform's data dir for swapd (e.g. ~/.local/share/swapd on Linux)."""
    return Path(platformdirs.user_data_dir("swapd", appauthor=False))


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def open(cls, root: Path | str | None = None, create: bool = True) -> Workspace:
        ws = cls(Path(root).expanduser().resolve() if root else default_workspace())
        if create:
            ws.create()
        return ws

    def create(self) -> None:
        for folder in (self.faces, self.jobs, self.footage, self.models, self.output,
                       self.internal, self.logs, self.quarantine, self.cache):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def faces(self) -> Path:
        return self.root / "faces"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def footage(self) -> Path:
        return self.root / "footage"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def internal(self) -> Path:
        return self.root / ".swapd"

    @property
    def state_db(self) -> Path:
        return self.internal / "state.db"

    @property
    def logs(self) -> Path:
        return self.internal / "logs"

    @property
    def quarantine(self) -> Path:
        return self.internal / "quarantine"

    @property
    def cache(self) -> Path:
        return self.internal / "cache"

    def face_set(self, name: str) -> Path:
        """faces/<name>/; ValueError unless ``name`` is one plain folder name."""
        if (not name or name in (".", "..") or "/" in name or "\\" in name
                or name != name.strip() or name.startswith(".")):
            raise ValueError(f"face set name {name!r} must be a plain folder name "
                             "(no slashes, not empty, not starting with a dot)")
        return self.faces / name

    def model_dir(self, job: str) -> Path:
        return self.models / job

    def exports_dir(self, job: str) -> Path:
        return self.models / job / "exports"

    def previews_dir(self, job: str) -> Path:
        return self.models / job / "previews"

    def merge_preview_dir(self, job: str, request_id: int) -> Path:
        """Where the service renders the merge preview the dashboard asked for (request
        ``request_id`` of the control queue)."""
        return self.output / job / "previews" / str(int(request_id))

    def resolve(self, relative: str | Path) -> Path:
        """A path from a job file: relative ones are relative to the workspace root."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.root / path

    def relative(self, path: Path) -> str:
        """A path as shown to the user: relative to the workspace when inside it."""
        try:
            return str(self.resolve(path).resolve().relative_to(self.root))
        except ValueError:
            return str(path)
