"""Getting an archive: download with resume, retries and mirrors, then verify.

Nothing downloaded is used before its checksum matches the one pinned in
params.yaml. A local path or file:// URL is used in place (air-gapped sites
keep their own copy) and verified the same way.
"""
import hashlib
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from core import StageError
from core.params import check_section, get, sources, spec_number
from core.io import DISK_FULL, DiskFullError

CHUNK_BYTES = 1 << 20
# A download with no `size_bytes` pin stops here: past any archive this pipeline reads (CINIC-10 is 0.7 GB), so a
# server that never stops sending cannot fill the disk before the checksum could refuse what it sent.
MAX_UNPINNED_BYTES = 8 << 30
# Client errors that another try at the same mirror cannot fix.
PERMANENT_HTTP = {400, 401, 403, 404, 405, 410, 451}
HEX_DIGITS = {"sha256": 64, "md5": 32}


class DownloadError(StageError):
    pass


class ChecksumError(StageError):
    pass


class OversizeError(Exception):
    """A server sends (or announces) more than the pinned `size_bytes`: not retried, the part file is deleted."""


def parse_checksum(spec, key="checksum"):
    """"sha256:<hex>" or "md5:<hex>" -> (algorithm, hex digest); None -> None.

    A digest of the wrong length is refused here: it could never match, and
    the user would be told the download is corrupt when the pin is.
    """
    if spec is None:
        return None
    algo, _, digest = str(spec).partition(":")
    digest = digest.lower()
    if algo not in HEX_DIGITS or len(digest) != HEX_DIGITS[algo] or digest.strip("0123456789abcdef"):
        raise StageError(f"params.yaml: `{key}` is {spec!r}; it must look like sha256:<hex> or md5:<hex> "
                         "(64 or 32 hex digits)")
    return algo, digest


def file_digest(path, algo):
    h = hashlib.new(algo)
    size = os.path.getsize(path)
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"{algo} {Path(path).name}",
                                     leave=False, disable=size < 64 * CHUNK_BYTES) as bar:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def verify(path, checksum, size_bytes=None):
    """Raise ChecksumError unless `path` has the pinned size and checksum."""
    if size_bytes is not None and os.path.getsize(path) != size_bytes:
        raise ChecksumError(f"{path}: size is {os.path.getsize(path):,} bytes, expected {size_bytes:,} "
                            "(truncated or wrong file)")
    parsed = parse_checksum(checksum)
    if parsed:
        algo, expected = parsed
        actual = file_digest(path, algo)
        if actual != expected:
            raise ChecksumError(f"{path}: {algo} is {actual}, expected {expected} (corrupt or wrong file)")


def local_path(url):
    """The filesystem path a source names, or None for an http(s) URL."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if scheme and len(scheme) > 1:  # one letter is a Windows drive
        raise StageError(f"{url}: unsupported URL scheme {scheme!r} (use http, https, file or a path)")
    return Path(url)


def fetch(urls, checksum, download_dir, size_bytes=None, retries=3, backoff_s=2.0, timeout_s=60, key="urls"):
    """Return the path of a verified copy of the file that `urls` name.

    `urls` are mirrors of one file, tried in order. A local path is checked
    and returned as is (a directory is returned unchecked, for class-folder
    datasets). A download goes to `download_dir`, is resumed from a previous
    partial file, retried with exponential backoff on network errors, and
    renamed to its final name only once its checksum matches. `key` is the
    params key that names `urls`, for the fix in error messages.
    """
    if not urls:
        raise StageError(f"params.yaml: `{key}` names no source")
    failures = []
    remote = [u for u in urls if local_path(u) is None]
    dest = Path(download_dir) / (Path(urllib.parse.urlparse(remote[0]).path).name if remote else "unused")
    for url in urls:
        path = local_path(url)
        if path is not None:
            if path.is_dir():
                return path
            if not path.exists():
                failures.append(f"{url}: no such file")
                continue
            if not path.is_file():  # /dev/zero, a FIFO: read forever
                failures.append(f"{url}: not a regular file (a device, FIFO or socket)")
                continue
            try:
                verify(path, checksum, size_bytes)
            except ChecksumError as e:
                raise ChecksumError(f"{e}; point `{key}` at an intact copy") from None
            return path
        if parse_checksum(checksum) is None:
            raise StageError(f"{url}: a download needs a pinned checksum; set the `checksum` beside `{key}` "
                             "to sha256:<hex> or md5:<hex>")
        if dest.exists():
            try:
                verify(dest, checksum, size_bytes)
                return dest
            except ChecksumError:
                dest.unlink()
        part = dest.with_name(dest.name + ".part")
        error = _download_with_retries(url, part, size_bytes, retries, backoff_s, timeout_s)
        if error:
            failures.append(f"{url}: {error}")
            continue
        try:
            verify(part, checksum, size_bytes)
        except ChecksumError as e:
            part.unlink(missing_ok=True)  # a bad file must not be resumed from
            failures.append(f"{url}: {e}")
            continue
        os.replace(part, dest)
        return dest
    # One line: every source with its reason, then the fix.
    raise DownloadError(f"could not get a verified copy from any source: {'; '.join(failures)}; check `{key}` "
                        f"and the network, or download the file yourself and set `{key}` to its local path")


def _download_with_retries(url, part, size_bytes, retries, backoff_s, timeout_s):
    """Download `url` into `part`; return None on success or the last error."""
    error = None
    for attempt in range(retries):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            _download(url, part, size_bytes, timeout_s)
            return None
        except urllib.error.HTTPError as e:
            error = f"HTTP {e.code} {e.reason}"
            if e.code in PERMANENT_HTTP:
                return error
        except OversizeError as e:  # the same server would send the same bytes again
            part.unlink(missing_ok=True)
            return str(e)
        except (urllib.error.URLError, OSError) as e:  # refused, reset, timeout, cut short
            if isinstance(e, OSError) and e.errno in DISK_FULL:  # another try cannot help
                raise DiskFullError(f"{part}: disk full while downloading ({e.strerror}); free space under `fetch.dir` "
                                    "and run again (the download resumes where it stopped)") from e
            error = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
    return f"{error} (after {retries} tries)"


def _download(url, part, size_bytes, timeout_s):
    """One attempt: append to `part` from where it stops (HTTP Range)."""
    have = part.stat().st_size if part.exists() else 0
    if size_bytes is not None and have >= size_bytes:
        if have == size_bytes:
            return  # complete; the caller verifies it
        part.unlink()
        have = 0
    part.parent.mkdir(parents=True, exist_ok=True)
    headers = {"User-Agent": "cnn-backbone-bench"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the part file is whole (or wrong)
            return
        raise
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the Range header: start over
        remaining = response.headers.get("Content-Length")
        remaining = int(remaining) if remaining is not None and remaining.isdigit() else None
        total = have + remaining if remaining is not None else size_bytes
        if size_bytes is not None:
            limit, announced, sent = size_bytes, f" but `size_bytes` pins {size_bytes:,}", "pinned in `size_bytes`"
        else:
            limit, sent = MAX_UNPINNED_BYTES, "allowed without a `size_bytes` pin"
            announced = f", over the {limit:,} {sent}"
        if total is not None and total > limit:  # refused before a byte is written
            raise OversizeError(f"the server announces {total:,} bytes{announced} (wrong file, or a wrong pin)")
        received = 0
        with open(part, "ab" if have else "wb") as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=part.name.removesuffix(".part")) as bar:
            # Never read past the limit, whatever the server announced (or did not).
            while chunk := response.read(min(CHUNK_BYTES, limit - have - received + 1)):
                if have + received + len(chunk) > limit:
                    raise OversizeError(f"the server sent more than the {limit:,} bytes {sent} (wrong file, or a "
                                        "wrong pin)")
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    # urllib returns b"" on a cut connection instead of raising: check the length ourselves.
    if remaining is not None and received < remaining:
        raise ConnectionError(f"connection closed after {have + received:,} of {have + remaining:,} bytes")


def fetch_section(params, section):
    """`fetch` with the sources of params[section] and the settings of params["fetch"]."""
    checksum = params[section].get("checksum")
    parse_checksum(checksum, f"{section}.checksum")  # a malformed pin is named before anything is fetched
    size_bytes = spec_number(params, f"{section}.size_bytes") if "size_bytes" in params[section] else None
    fetch_params = check_section(params, "fetch")
    return fetch(sources(params, f"{section}.urls"), checksum, get(params, "fetch.dir"),
                 size_bytes=size_bytes, retries=fetch_params["fetch.retries"],
                 backoff_s=fetch_params["fetch.backoff_s"], timeout_s=fetch_params["fetch.timeout_s"],
                 key=f"{section}.urls")
