"""Start the web app: caption aerial images in the browser, see why, change the why.

    python -m app                                   # runs/demo's models, http://localhost:8501
    python -m app --port 8600 --address 0.0.0.0     # reachable from other machines
    python -m app --segmentation DIR --llm DIR --run-dir RUN --captions data/rsicd/dataset_rsicd.json

The models load once per app process. Nothing is fetched: the Hugging Face libraries run offline, and Streamlit's
usage statistics are off.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

from app.core import MAX_UPLOAD_MB, Settings
from segcap.cli import run
from segcap.errors import ConfigError
from segcap.options import Port, checked

PAGE = Path(__file__).resolve().parent / "page.py"
REPO = PAGE.parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1",
           "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}


def command(settings: Settings, port: int = 8501, address: str = "localhost") -> list[str]:
    """The ``streamlit run`` command line of the page with these settings."""
    page_args = ["--segmentation", str(settings.segmentation), "--llm", str(settings.llm),
                 "--run-dir", "null" if settings.run_dir is None else str(settings.run_dir),
                 "--num-beams", str(settings.num_beams), "--scale", repr(settings.scale),
                 "--threads", "null" if settings.threads is None else str(settings.threads)]
    if settings.captions is not None:
        page_args += ["--captions", str(settings.captions)]
    return [sys.executable, "-m", "streamlit", "run", str(PAGE), "--server.port", str(port),
            "--server.address", address, "--server.headless", "true", "--server.fileWatcherType", "none",
            "--server.maxUploadSize", str(MAX_UPLOAD_MB), "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal", "--global.developmentMode", "false", "--", *page_args]


def address_problems(address: str, port: int) -> list[str]:
    """Why the server could not listen on ``address``:``port`` (empty: it can): a name that does not resolve, an
    address of no interface of this machine, a port another program holds or that needs privileges. Each address the
    name resolves to is tried as Streamlit's server binds it (SO_REUSEADDR: a port in TIME_WAIT is free)."""
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        why = e.strerror if isinstance(e, socket.gaierror) and e.strerror else str(e)
        return [f"--address {address} does not resolve ({why}); give a host name or IP address of this machine: "
                "localhost (this machine only) or 0.0.0.0 (every interface)"]
    problems: list[str] = []
    for family, kind, proto, _, sockaddr in dict.fromkeys((i[0], i[1], i[2], None, i[4]) for i in infos):
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        except OSError as e:
            host = sockaddr[0]
            if e.errno == errno.EADDRINUSE:
                problems.append(f"--port {port}: already in use on {host} (another app or server listens there); "
                                f"stop it, or choose another port (--port {port + 1})")
            elif e.errno == errno.EADDRNOTAVAIL:
                problems.append(f"--address {address} ({host}) is not an address of this machine; give localhost, "
                                "0.0.0.0 (every interface) or one of this machine's own addresses")
            elif e.errno in (errno.EACCES, errno.EPERM):
                problems.append(f"--port {port}: this user may not listen on it (ports below 1024 need privileges); "
                                "choose a port from 1024 up (default 8501)")
            elif e.errno == errno.EAFNOSUPPORT:
                continue  # e.g. IPv6 off: Streamlit listens on the other addresses
            else:
                problems.append(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --address or "
                                "--port")
            break
    return problems


@checked
def main(settings: Settings = Settings(), port: Port = 8501, address: str = "localhost") -> None:
    """Serve the web app until interrupted (Ctrl-C). The address and port are checked before the app starts (a name
    that does not resolve, a port in use: one message, exit code 2).

    The app settings (app.core.Settings: segmentation, llm, run_dir, captions, num_beams, scale, threads) are flags
    like the others: --num-beams 2.

    Args:
        port: the port to serve on.
        address: the address to serve on (localhost: this machine only; 0.0.0.0: every interface).
    """
    problems = settings.problems() + address_problems(address, port)
    if problems:
        raise ConfigError(problems)
    env = dict(os.environ)
    for key, value in OFFLINE.items():
        env.setdefault(key, value)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    print(f"segcap app: http://{address}:{port}  (Ctrl-C stops it)", flush=True)
    cmd = command(settings, port, address)
    os.execve(cmd[0], cmd, env)  # this process becomes the server: Ctrl-C and kill reach it directly


if __name__ == "__main__":

    run(main)
