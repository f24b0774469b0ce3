#!/usr/bin/env python3
"""Runs a test script in a virtual environment that has charts/requirements-test.txt (or
another requirements file).

    python3 charts/tests/run_in_venv.py [--requirements FILE] VENV_DIR SCRIPT [ARGS...]

The Rust tests that run the chart scripts (controller/tests/chart.rs, cli/tests/manifests.rs)
call this with a directory under the target dir, so `cargo nextest run --workspace` needs only
python3 (with its venv module) and access to PyPI the first time. The environment is made once
and reused while the requirements file and the interpreter are unchanged; an exclusive lock on
VENV_DIR.lock keeps nextest's test processes from building it at the same time. The stamp (the
interpreter and a copy of the requirements) is written last, so an interrupted install is redone
on the next run. `--requirements` names another file (cli/tests/console_browser.rs passes
console/tests/requirements-browser.txt); give each file its own VENV_DIR, since an environment
made for one is remade for the other.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(HERE, "..", "requirements-test.txt")


def prepare(env_dir: str, requirements: str = REQUIREMENTS) -> str:
    """The environment's interpreter, after making the environment if it is not current."""
    python = os.path.join(env_dir, "bin", "python")
    stamp = os.path.join(env_dir, "requirements-test.txt")
    with open(requirements, encoding="utf-8") as f:
        # A different python3 (another version, a moved pyenv) needs its own environment.
        wanted = f"# {os.path.realpath(sys.executable)} {sys.version}\n" + f.read()
    os.makedirs(os.path.dirname(os.path.abspath(env_dir)), exist_ok=True)
    with open(env_dir + ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(stamp, encoding="utf-8") as f:
                if f.read() == wanted and os.path.exists(python):
                    return python
        except FileNotFoundError:
            pass
        print(f"run_in_venv.py: installing {requirements} into {env_dir}", file=sys.stderr)
        shutil.rmtree(env_dir, ignore_errors=True)
        install = [python, "-m", "pip"]
        try:
            venv.EnvBuilder(with_pip=True).create(env_dir)
        except subprocess.CalledProcessError:
            # Debian's python3 has no ensurepip without python3-venv: make the environment
            # without pip and install into it with this interpreter's pip (pip >= 22.3).
            shutil.rmtree(env_dir, ignore_errors=True)
            venv.EnvBuilder(with_pip=False).create(env_dir)
            install = [sys.executable, "-m", "pip", "--python", python]
        subprocess.run(
            [*install, "install", "--quiet", "--disable-pip-version-check", "-r", requirements],
            check=True,
        )
        with open(stamp, "w", encoding="utf-8") as f:
            f.write(wanted)
        return python


def main() -> None:
    args = sys.argv[1:]
    requirements = REQUIREMENTS
    if args[:1] == ["--requirements"] and len(args) > 1:
        requirements = os.path.abspath(args[1])
        args = args[2:]
    if len(args) < 2:
        sys.exit(__doc__)
    python = prepare(args[0], requirements)
    os.execv(python, [python, *args[1:]])


if __name__ == "__main__":
    main()
