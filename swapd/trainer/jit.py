"""How swapd's compiled kernels (numba: :mod:`swapd.trainer.triangulation`,
:mod:`swapd.trainer.landmark_kernels`) are compiled: without the GIL (loader threads run them
side by side) and kept on disk between processes where a folder can be written.

Compiling them takes about 8 s of a process's first warp_to_landmarks batch; loaded from the
disk cache, 0.7 s (docs/benchmarks.md, "warp_to_landmarks, compiled end to end"). The cache
is a folder of its own under swapd's cache folder (``~/.cache/swapd/kernels`` on Linux), or
under its data folder where the cache folder cannot be written (systemd's
``ProtectHome=read-only`` leaves ``~/.local/share/swapd`` writable to the user service);
``SWAPD_KERNEL_CACHE`` names another folder, or ``off``; a ``NUMBA_CACHE_DIR`` set for
numba is used before swapd's own folders (numba keeps one cache folder per process, and this
module sets it). With none writable the kernels are compiled in memory, every process, as
numba's cache would otherwise refuse to compile.

numba checks a cached function against its own source only (not the functions it calls,
nor the options it was compiled with): a kernel that calls one from the other module would
stay compiled with the callee's old code. So the folder's name carries a digest of this
module, every kernel module, numba's version and the numba settings that change the code
made; any change starts a new folder. The folder in use is touched at each start, and a
sibling folder no swapd has used for :data:`STALE_DAYS` days (an older version's) is removed
then, so upgrades do not pile up compiled code (the whole cache folder is safe to delete).
``tests/test_kernel_cache.py`` checks that every module compiling with :data:`njit` is in
:data:`KERNEL_MODULES`.

Importing this module imports numba (about 100-150 MB of resident memory with LLVM).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numba
import platformdirs

log = logging.getLogger(__name__)

# Every module whose functions are compiled with :data:`njit` (they call one another).
KERNEL_MODULES = ("triangulation.py", "landmark_kernels.py")
ENV = "SWAPD_KERNEL_CACHE"
STALE_DAYS = 30
_DIGEST_NAME = re.compile(r"[0-9a-f]{16}")


def code_digest() -> str | None:
    """What the compiled code depends on, as a folder name: this module, the kernel modules,
    numba's version and settings. None where a module's source is not there to read (an
    install of compiled ``.pyc`` files only: numba cannot cache without it either)."""
    here = Path(__file__).parent
    config = numba.config
    digest = hashlib.sha256(repr((numba.__version__, str(config.OPT), config.BOUNDSCHECK,
                                  config.DEBUGINFO_DEFAULT, config.CPU_NAME,
                                  config.CPU_FEATURES)).encode())
    for name in ("jit.py", *KERNEL_MODULES):
        try:
            digest.update((here / name).read_bytes())
        except OSError:
            return None
    return digest.hexdigest()[:16]


def cache_folder() -> Path | None:
    """The first writable of the candidate folders (see the module doc), this code's
    subfolder of it, or None: compile in memory."""
    chosen = os.environ.get(ENV, "").strip()
    if chosen.lower() == "off":
        return None
    candidates = [Path(chosen)] if chosen else [
        *([Path(os.environ["NUMBA_CACHE_DIR"]) / "swapd"] if os.environ.get("NUMBA_CACHE_DIR")
          else []),
        Path(platformdirs.user_cache_dir("swapd", appauthor=False)) / "kernels",
        Path(platformdirs.user_data_dir("swapd", appauthor=False)) / "kernels"]
    digest = code_digest()
    if digest is None:
        log.info("compiled kernels are not cached: their sources are not installed")
        return None
    for folder in candidates:
        version = folder / digest
        try:
            version.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=version):
                pass
            os.utime(version)  # in use: keeps it from looking stale to another version
        except OSError as exc:
            log.debug("kernel cache: %s is not writable (%s)", version, exc)
            continue
        remove_stale(folder, keep=version)
        return version
    log.info("compiled kernels are not cached: no writable folder among %s (set %s)",
             ", ".join(str(c) for c in candidates), ENV)
    return None


def remove_stale(folder: Path, keep: Path, days: float = STALE_DAYS) -> None:
    """Remove ``folder``'s code-digest subfolders, other than ``keep``, that no process has
    started with for ``days`` days. Only names of the digest's form are touched: ``folder`` may
    be one the user named."""
    oldest = time.time() - days * 86400
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        try:
            stale = (entry.name != keep.name and _DIGEST_NAME.fullmatch(entry.name) is not None
                     and entry.is_dir(follow_symlinks=False)
                     and entry.stat(follow_symlinks=False).st_mtime < oldest)
        except OSError:
            continue
        if stale:
            log.info("kernel cache: removing %s, unused for %d days", entry.path, days)
            shutil.rmtree(entry.path, ignore_errors=True)


FOLDER = cache_folder()
if FOLDER is not None:
    # numba keeps one cache folder per process: set before the kernels are decorated
    numba.config.CACHE_DIR = str(FOLDER)
njit = numba.njit(nogil=True, cache=FOLDER is not None)
