"""File output that appears whole or not at all.

Every stage writes through these helpers: a file (or a whole output
directory) is built under a temporary name beside its target and renamed
into place only when complete, so a crash, Ctrl-C or full disk never leaves
a half-written output for DVC or the next stage to trust.

A target that is a symlink (a user keeps `data/` or `data/cifar10` on another
disk) stays a symlink: the new output is built beside the link's real target
and replaces that. Two runs writing one directory at once take turns on the
final swap (an exclusive lock on its parent directory) and each succeeds; the
last one's output is what stays.
"""
import contextlib
import csv
import errno
import glob
import io
import json
import os
import secrets
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from core import StageError

# A full disk or quota: the one write failure the user fixes by freeing space.
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class DiskFullError(StageError):
    pass


class OutputError(StageError):
    pass


# Other write failures the user fixes on their side of the file.
UNWRITABLE = {
    errno.EACCES: "check that you may write there",
    errno.EPERM: "check that you may write there",
    errno.EROFS: "that file system is read-only: keep the outputs on a writable disk (a symlink to one works)",
}


def _disk_full(path, e):
    return DiskFullError(f"{path}: disk full while writing it ({e.strerror or e}); free space on that disk and "
                         "run again (the previous output, if any, is unchanged)")


def _write_error(path, e):
    """The StageError for an OSError while writing the output `path` (named, not our temporary), or None."""
    if e.errno in DISK_FULL:
        return _disk_full(path, e)
    if e.errno in UNWRITABLE:
        return OutputError(f"{path}: cannot write it ({e.strerror or e}); {UNWRITABLE[e.errno]} (the previous "
                           "output, if any, is unchanged)")
    return None


def _temp_prefix(path):
    # The pid in the name lets a later run remove what a killed run (SIGKILL, power cut) left behind.
    return f".{path.name}.{os.getpid()}."


def _remove_stale(path):
    """Remove temporary siblings of `path` left by processes that no longer run."""
    if os.name != "posix":  # os.kill(pid, 0) is a liveness probe on POSIX only
        return
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.*.tmp*"):
        pid = stale.name[len(path.name) + 2:].split(".")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running: not ours to touch
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, another user's
            continue
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def real_target(path):
    """Where `path` really is, every symlink on the way followed (a dangling one too):
    the new output must be built on that disk and replace that entry, not the link."""
    return Path(os.path.realpath(path))


@contextlib.contextmanager
def _swap_lock(directory):
    """An exclusive lock on `directory` (flock on the directory itself: no lock file to leave behind)."""
    import fcntl  # POSIX only: imported here so that on Windows a stage reaches core.cli's one-line refusal
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _as_if_created(path, mode):
    """mkstemp / mkdtemp make private (0600 / 0700) temporaries; an output renamed into
    place must have the mode open() or mkdir() would give it, i.e. follow the umask
    (shared DVC caches and teams rely on it)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (beside its real target, if a symlink); rename it onto that on success."""
    path = Path(path)
    target = real_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    # Keep the suffix: some writers (Keras) insist on it.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=_temp_prefix(target), suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp = Path(tmp)
    _as_if_created(tmp, 0o666)
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as e:
        error = _write_error(path, e)
        if error is None:
            raise
        raise error from e
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield an empty temporary directory that replaces `path` (its real target, if a symlink) on success.

    The old directory (if any) stays untouched until the new one is complete;
    the swap itself is two renames under a lock, so concurrent runs take turns.
    """
    path = Path(path)
    target = real_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=_temp_prefix(target), suffix=".tmp"))
    _as_if_created(tmp, 0o777)
    # Unique per run, and named like a temporary so that a killed run's is cleaned up by the next.
    old = target.with_name(f"{_temp_prefix(target)}{secrets.token_hex(4)}.old.tmp")
    try:
        yield tmp
        with _swap_lock(target.parent):
            if os.path.lexists(target):
                os.replace(target, old)
            os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except (DiskFullError, OutputError) as e:  # raised for a file inside: name the output the user knows
        raise _write_error(path, e.__cause__) from e.__cause__
    except OSError as e:
        error = _write_error(path, e)
        if error is None:
            raise
        raise error from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + "\n")


# Zip member headers with every field pinned that zipfile would otherwise take from the moment or the machine
# (writestr and write stamp the current time or the file's mtime and mode; ZipInfo records Windows or Unix),
# so an output's bytes, and DVC's hash of it, depend on its content only. The values are those np.savez
# and Keras' own members get on Linux: .npz files written before keep their hashes.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip header can hold
ZIP_UNIX = 3  # create_system
ZIP_FILE_MODE = 0o600 << 16  # -rw-------, what zipfile gives a member written through ZipFile.open
ZIP_DIR_MODE = 0o40755 << 16 | 0x10  # drwxr-xr-x and the MS-DOS directory flag


def zip_member(name):
    """A ZipInfo for an uncompressed member `name` whose header depends on the name only."""
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.create_system = ZIP_UNIX
    info.external_attr = ZIP_DIR_MODE if name.endswith("/") else ZIP_FILE_MODE
    info.compress_type = zipfile.ZIP_STORED
    return info


def write_npz(f, arrays):
    """np.savez's archive of `arrays` ({name: array}, in that order) to the binary file `f`, byte for byte
    what it writes on Linux, whatever the platform or time. No pickles: load_npz refuses them anyway."""
    with zipfile.ZipFile(f, "w") as zf:
        for name, array in arrays.items():
            # zip64 always, as np.savez: the header is written before the size is known (numpy gh-10776).
            with zf.open(zip_member(f"{name}.npy"), "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def save_npz(path, **arrays):
    """An .npz whose bytes depend on `arrays` only (write_npz): a rerun keeps its DVC hash."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write_npz(f, arrays)


KERAS_DATE_SAVED = "1980-01-01@00:00:00"  # ZIP_EPOCH, written as Keras writes metadata.json's date_saved


def _numbered_shared_objects(node, numbers):
    """A Keras config with each shared_object_id (id(obj): a memory address, new in every process) replaced
    by 1, 2, ... in order of first appearance. Loading uses the ids only as keys within the one file."""
    if isinstance(node, dict):
        return {k: numbers.setdefault(v, len(numbers) + 1) if k == "shared_object_id"
                else _numbered_shared_objects(v, numbers) for k, v in node.items()}
    if isinstance(node, list):
        return [_numbered_shared_objects(v, numbers) for v in node]
    return node


def _keras_config(data):
    # Keras writes json.dumps(config) and reads it back with json.loads: the same defaults here.
    return json.dumps(_numbered_shared_objects(json.loads(data), {})).encode()


def _keras_metadata(data):
    return json.dumps({**json.loads(data), "date_saved": KERAS_DATE_SAVED}).encode()


# The members of a .keras file that hold more than the model: the moment it was saved, memory addresses.
KERAS_MEMBER_FIXES = {"metadata.json": _keras_metadata, "config.json": _keras_config}


def save_keras(model, path):
    """model.save(path), atomically, with bytes that depend on the model only, so a rerun keeps its DVC hash.

    Keras stamps the time into metadata.json (date_saved) and into the weights member's zip header, and
    names objects shared between layers (a dtype policy) by their memory address in config.json; those are
    pinned, members kept in Keras' order, uncompressed as Keras stores them. The weights (model.weights.h5)
    are kept as written: h5py creates datasets without timestamps (track_times=False), and groups in Keras'
    HDF5 files (libver "earliest") hold none either (every object's ctime and mtime read 0)."""
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp) as zf:
            members = [(info.filename, zf.read(info)) for info in zf.infolist()]
        with zipfile.ZipFile(tmp, "w") as zf:
            for name, data in members:
                zf.writestr(zip_member(name), KERAS_MEMBER_FIXES.get(name, bytes)(data))


# What zipfile raises for a damaged archive, beyond BadZipFile: a flipped bit in a header can name an
# unsupported compression method (NotImplementedError) or set the encryption flag (RuntimeError), and
# in the data it breaks the deflate stream (zlib.error).
ZIP_ERRORS = (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError, zlib.error)


def load_npz(path):
    """Load every array of an .npz; pickled objects are refused."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except FileNotFoundError as e:
        raise StageError(f"{path}: missing; run the stage that writes it first (dvc repro)") from e
    except ValueError as e:  # numpy's answer to pickled content (object arrays, or not an .npz at all)
        raise StageError(f"{path}: not a plain .npz of arrays ({e}); nothing is unpickled: delete it and run "
                         "the stage that writes it again") from e
    except ZIP_ERRORS as e:
        raise StageError(f"{path}: not a readable .npz ({e}); delete it and run the stage that writes it again") from e


def csv_text(header, rows):
    """CSV text with a header row and "\n" line ends (DVC plots and pandas read it alike)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()
