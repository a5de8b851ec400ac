"""nginx adapter for rendering: asks the installed nginx whether ssl.conf may say `ssl on;`.

Settings say `nginx_ssl_on = "auto" | true | false`; render() takes a plain bool in its Layout. This
module turns "auto" into that bool by running `nginx -v` and reading the version with the pure
core.ssl_on_supported(). The answer is kept per binary and its identity on disk (inode, size,
mtime), so an nginx upgraded or installed later is asked again without anyone clearing a cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from typing import Literal

from reconciler.core.render import ssl_on_supported
from reconciler.errors import SettingsError

VERSION_TIMEOUT_S = 10.0


def detect_ssl_on(setting: bool | Literal["auto"], nginx_binary: str = "nginx") -> bool:
    """Whether ssl.conf gets `ssl on;`: the setting itself, or for "auto" what nginx accepts.

    With "auto", nginx is asked once per binary file. When `nginx_binary` is not installed the
    answer is False: the file then works on any nginx whose `listen` says `ssl`. An nginx version
    string this module cannot read also gives False (see ssl_on_supported).
    Raises SettingsError when nginx exists but `nginx -v` fails or hangs.
    """
    if setting != "auto":
        return setting
    output = nginx_version(nginx_binary)
    return output is not None and ssl_on_supported(output)


def nginx_version(nginx_binary: str = "nginx") -> str | None:
    """What `nginx -v` prints (it writes to stderr), or None when the binary is not installed."""
    found = shutil.which(nginx_binary)
    if found is None:
        return None
    try:
        info = os.stat(found)
    except OSError:
        return None
    return _asked(found, (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns))


@lru_cache(maxsize=8)
def _asked(nginx_binary: str, identity: tuple[int, int, int, int]) -> str | None:
    """`nginx -v` of one binary file as it is on disk (`identity` keys the cache)."""
    argv = [nginx_binary, "-v"]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=VERSION_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return None
    except subprocess.TimeoutExpired as exc:
        raise SettingsError(
            f"nginx_ssl_on = 'auto': `{nginx_binary} -v` did not answer within "
            f"{VERSION_TIMEOUT_S:g} s; set nginx_ssl_on to true or false"
        ) from exc
    except OSError as exc:
        raise SettingsError(
            f"nginx_ssl_on = 'auto': cannot run `{nginx_binary} -v`: {exc.strerror or exc}; "
            "set nginx_ssl_on to true or false"
        ) from exc
    output = (done.stderr + done.stdout).strip()
    if done.returncode != 0:
        raise SettingsError(
            f"nginx_ssl_on = 'auto': `{nginx_binary} -v` exited with {done.returncode}"
            f" ({output[-200:] or 'no output'}); set nginx_ssl_on to true or false"
        )
    return output
