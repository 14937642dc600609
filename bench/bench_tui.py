"""TUI responsiveness: first frame of `loradeck`, the dataset screen of a 10 000-image project, scrolling.

    python bench/bench_tui.py [--runs 5] [--images 10000]

1. first frame: `python -m loradeck.tui --root R` is started in a pseudo-terminal (80×24) the way a user starts
   it; the clock runs from spawn until the first screen (header + footer) has been written to the
   terminal, and until the projects list is filled.
2. dataset ready: same process, Enter on the project; the clock runs from the key until the dataset
   summary ("10000 images · ...") and the list are on screen.
3. scrolling: same process, a burst of Down keys (as when the key is held), then of PgDn keys and
   End; the clock stops when the last key's result is on screen. Reported per key.

The 10 000-image project is made once in bench/cache/ (small PNGs, half of them captioned).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import shutil
import statistics
import struct
import sys
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CACHE = REPO / "bench" / "cache" / "tui"


def make_big_project(root: Path, images: int) -> str:
    """A project with `images` prepared images (every other one captioned); reused when present."""
    from loradeck.trainer.dataset.project import Project, create_project

    name = f"big{images}"
    project = Project(root, name)
    marker = root / f".{name}.done"
    if marker.exists() and project.exists():
        return name
    if project.path.exists():
        shutil.rmtree(project.path)
    project = create_project(name, root, trigger_word="zxq", base_model="synthetic:tiny")
    from PIL import Image

    png = project.dataset / "img_00000.png"
    Image.new("RGB", (64, 64), (200, 80, 40)).save(png)
    data = png.read_bytes()
    for i in range(1, images):
        (project.dataset / f"img_{i:05d}.png").write_bytes(data)
    for i in range(0, images, 2):
        (project.dataset / f"img_{i:05d}.txt").write_text(f"zxq, tag{i % 37}, tag{i % 11}\n")
    marker.write_text("ok\n")
    return name


class Terminal:
    """A child process in an 80×24 pseudo-terminal; collects everything it writes."""

    def __init__(self, argv: list[str], env: dict):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child
            os.execvpe(argv[0], argv, env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.output = b""

    def wait_for(self, *needles: str, timeout: float = 20.0) -> float:
        """Read until every needle has appeared in the output; returns the time it happened."""
        deadline = time.perf_counter() + timeout
        wanted = [n.encode() for n in needles]
        while not all(w in self.output for w in wanted):
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"{needles} not seen; last output: {self.output[-400:]!r}")
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.05))
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    break
                self.output += chunk
                # Answer the terminal queries Textual sends, as a real terminal would.
                if b"\x1b[6n" in chunk:
                    os.write(self.fd, b"\x1b[1;1R")
        return time.perf_counter()

    def cpu_seconds(self) -> float:
        """User + system CPU time the child has used so far (less sensitive to a busy machine)."""
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def close(self) -> None:
        try:
            self.send(b"\x11")  # Ctrl+Q
            deadline = time.time() + 5
            while time.time() < deadline:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    break
                try:
                    os.read(self.fd, 65536)
                except OSError:
                    pass
                time.sleep(0.05)
            else:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
        finally:
            os.close(self.fd)


def start_tui(root: Path) -> tuple[Terminal, float]:
    env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor", PYTHONPATH=str(REPO),
               LORADECK_ROOT=str(root), XDG_CONFIG_HOME=str(CACHE / "config"))
    env.pop("TMUX", None)
    t0 = time.perf_counter()
    term = Terminal([sys.executable, "-m", "loradeck.tui", "--root", str(root)], env)
    return term, t0


# The floor: the smallest Textual app with a header and a footer, started the same way.
HELLO_TEXTUAL = """
from textual.app import App
from textual.widgets import Footer, Header
class Hello(App):
    TITLE = "loradeck"
    BINDINGS = [("ctrl+q", "quit", "Quit")]
    def compose(self):
        yield Header()
        yield Footer()
Hello().run()
"""


def bench_first_frame(root: Path, runs: int) -> dict:
    frames, listed, hello, cpu, hello_cpu = [], [], [], [], []
    for _ in range(runs):
        term, t0 = start_tui(root)
        try:
            frames.append(term.wait_for("loradeck", "Quit") - t0)
            cpu.append(term.cpu_seconds())
            listed.append(term.wait_for("project(s) in") - t0)
        finally:
            term.close()
        env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor")
        t0 = time.perf_counter()
        term = Terminal([sys.executable, "-c", HELLO_TEXTUAL], env)
        try:
            hello.append(term.wait_for("loradeck", "Quit") - t0)
            hello_cpu.append(term.cpu_seconds())
        finally:
            term.close()
    return {"first_frame_s": frames, "projects_listed_s": listed, "hello_textual_s": hello,
            "first_frame_cpu_s": cpu, "hello_textual_cpu_s": hello_cpu}


def bench_dataset_ready(root: Path, images: int, runs: int) -> dict:
    ready = []
    for _ in range(runs):
        term, t0 = start_tui(root)
        try:
            term.wait_for("project(s) in")
            term.output = b""
            t1 = time.perf_counter()
            term.send(b"\r")
            ready.append(term.wait_for(f"{images} images", "img_00000.png") - t1)
        finally:
            term.close()
    return {"dataset_ready_s": ready}


def bench_scroll(root: Path, images: int, downs: int, pages: int) -> dict:
    """Keys sent in a burst, as when a key is held down; the clock stops when the last one's
    result is on screen (Textual may skip intermediate frames, as a terminal user would want)."""
    term, _ = start_tui(root)
    try:
        term.wait_for("project(s) in")
        term.send(b"\r")
        term.wait_for(f"{images} images", "img_00000.png")
        time.sleep(0.5)
        term.output = b""
        t = time.perf_counter()
        term.send(b"\x1b[B" * downs)
        down_s = term.wait_for(f"img_{downs:05d}.png") - t
        time.sleep(0.5)
        term.output = b""
        t = time.perf_counter()
        term.send(b"\x1b[6~" * pages + b"\x1b[F")  # PgDn ×pages, then End
        page_s = term.wait_for(f"img_{images - 1:05d}.png") - t
    finally:
        term.close()
    return {"down_ms_per_key": down_s / downs * 1000, "page_ms_per_key": page_s / (pages + 1) * 1000,
            "downs": downs, "pages": pages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=300, help="Down keys in the burst (PgDn: a third)")
    args = parser.parse_args()
    root = CACHE / "projects"
    root.mkdir(parents=True, exist_ok=True)
    name = make_big_project(root, args.images)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, project {name}")
    first = bench_first_frame(root, args.runs)
    ready = bench_dataset_ready(root, args.images, args.runs)
    scroll = bench_scroll(root, args.images, args.keys, args.keys // 3)

    def fmt(values):
        return f"median {statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f})"

    print(f"first frame of loradeck:           {fmt(first['first_frame_s'])}")
    print(f"  CPU time used by then:           {fmt(first['first_frame_cpu_s'])}")
    print(f"  (bare Textual app, header+footer: {fmt(first['hello_textual_s'])};"
          f" CPU {fmt(first['hello_textual_cpu_s'])})")
    print(f"projects listed:                   {fmt(first['projects_listed_s'])}")
    print(f"dataset screen, {args.images} images ready: {fmt(ready['dataset_ready_s'])}")
    print(f"scroll, keys sent in a burst: {scroll['downs']} Down {scroll['down_ms_per_key']:.1f} ms/key;"
          f" {scroll['pages']} PgDn + End {scroll['page_ms_per_key']:.1f} ms/key")


if __name__ == "__main__":
    main()
