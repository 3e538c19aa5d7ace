"""COCO caption metrics through pycocoevalcap 1.2, as the COCO caption evaluation computes them.

The scorers are pycocoevalcap's own classes (``Bleu(4)``, ``Meteor``, ``Rouge``, ``Cider``, optionally ``Spice``);
nothing here re-implements a metric. What this module adds around them:

- **one tokenizer pass**: every caption of every job (references, all systems, the human rounds) goes through the
  Stanford PTB tokenizer once, in one Java process, with pycocoevalcap's own jar, options and punctuation list.
  pycocoevalcap's ``PTBTokenizer`` writes its temporary file inside its own package folder, which fails when
  site-packages is read-only; :func:`ptb_tokenize` runs the same command on a temporary file in the system temp
  folder instead (the test suite checks that both give the same tokens);
- **one METEOR JVM for many jobs**, started first and in the background: loading METEOR's 61 MB paraphrase table
  takes seconds, so BLEU, ROUGE-L and CIDEr (pure Python) are computed meanwhile, and the Java process is closed at
  the end (context manager) instead of whenever the garbage collector gets to it;
- BLEU's console output is switched off (``verbose=0``); the numbers are unchanged;
- clear errors: Java missing (how to install it), a job whose predictions and references do not match, an image
  without references, a METEOR process that died;
- SPICE only when asked: it needs the Stanford CoreNLP 3.6.0 jars, which pycocoevalcap downloads on first use;
  offline they are absent, and SPICE is reported as unavailable with the reason instead of failing.

Library use::

    from evaluation.metrics import score_captions
    score_captions({"a.jpg": "a red roof"}, {"a.jpg": ["a red roof .", "a house with a red roof ."]})
    # {'Bleu_1': ..., 'Bleu_2': ..., 'Bleu_3': ..., 'Bleu_4': ..., 'METEOR': ..., 'ROUGE_L': ..., 'CIDEr': ...}

    with CocoScorer() as scorer:            # one JVM for several systems / subsets
        a, b = scorer.score_many([(preds_a, refs), (preds_b, refs)])
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pycocoevalcap
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice import get_stanford_models as gsm
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, STANFORD_CORENLP_3_4_1_JAR

from segcap.errors import DataError, SegcapError
from segcap.progress import Progress

# Output keys, in the order papers print them.
METRIC_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
SPICE_KEY = "SPICE"
# Scorer names accepted by ``metrics=`` and the keys each one produces.
SCORERS: dict[str, tuple[str, ...]] = {
    "bleu": ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"),
    "meteor": ("METEOR",),
    "rouge": ("ROUGE_L",),
    "cider": ("CIDEr",),
    "spice": ("SPICE",),
}
DEFAULT_METRICS = ("bleu", "meteor", "rouge", "cider")

JAVA_INSTALL_HINT = (
    "Java was not found on PATH: pycocoevalcap runs METEOR and the PTB tokenizer in a Java VM. Install a Java "
    "runtime (Debian/Ubuntu: `sudo apt-get install default-jre-headless`; Fedora: `sudo dnf install "
    "java-17-openjdk-headless`; macOS: `brew install openjdk`) and check that `java -version` works"
)


class JavaNotFoundError(SegcapError):
    """Java is needed (METEOR, PTB tokenizer, SPICE) but ``java`` is not on PATH."""

    def __init__(self, needed_for: str = "METEOR and the PTB tokenizer", problem: str | None = None):
        if problem:  # java is there but does not start
            super().__init__(f"Java does not start: {problem}. pycocoevalcap runs METEOR and the PTB tokenizer in a "
                             f"Java VM (needed for {needed_for}): repair or reinstall the Java runtime (Debian/Ubuntu: "
                             "`sudo apt-get install --reinstall default-jre-headless`), or put a working `java` "
                             "first on PATH, and check that `java -version` works")
        else:
            super().__init__(JAVA_INSTALL_HINT + f" (needed for {needed_for})")


class JavaRunError(SegcapError):
    """Java starts (``java -version`` works) but a scorer's Java program fails in it (the PTB tokenizer, METEOR)."""

    def __init__(self, program: str, exe: str, said: str, jar: Path | None = None):
        version = java_version() or "version unknown"
        jar_text = f", and that {jar} is intact (pip install --force-reinstall pycocoevalcap)" if jar else ""
        super().__init__(
            f"Java ({exe}, {version}) starts, but {program} failed in it ({said}). Check that this java is a complete "
            f"Java runtime (8 or later){jar_text}, or put another java first on PATH; free memory if it ran out"
        )


def _java_said(returncode: int | None, stderr: str) -> str:
    """One line of what a failed Java program said: its first exception or error line, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.strip().startswith("at ")]
    pick = next((line for line in lines if "Exception" in line or "Error" in line), lines[-1] if lines else "")
    pick = pick if len(pick) <= 200 else pick[:197] + "..."
    code = f"exit code {returncode}" if returncode is not None else "it stopped"
    return f"{code}: {pick}" if pick else f"{code}, no error output"


def _package_dir() -> Path:

    return Path(next(iter(pycocoevalcap.__path__)))


def scorer_versions(java: bool = True) -> dict[str, str]:
    """Versions of what computed the scores (for the report's metadata)."""
    try:
        pkg = version("pycocoevalcap")
    except PackageNotFoundError:  # pragma: no cover - installed with the project
        pkg = "unknown"
    out = {
        "pycocoevalcap": pkg,
        "tokenizer": "Stanford PTBTokenizer (stanford-corenlp-3.4.1.jar, -preserveLines -lowerCase, punctuation removed)",
        "bleu": "Bleu(4), option='closest'",
        "meteor": "meteor-1.5.jar -l en -norm",
        "rouge": "Rouge (ROUGE-L, beta=1.2)",
        "cider": "Cider (n=4, sigma=6.0; IDF from the scored set's references)",
    }
    if java:
        out["java"] = java_version() or "not found"
    return out


def java_version() -> str | None:
    """First line of ``java -version``, or None without Java."""
    exe = shutil.which("java")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (r.stderr or r.stdout).strip().splitlines()
    return lines[0] if lines else None


def require_java(needed_for: str = "METEOR and the PTB tokenizer") -> str:
    """Path of a ``java`` that starts; :class:`JavaNotFoundError` (exit code 2, install hint) when it is missing or
    fails to start (``java -version`` is run once per process)."""
    exe = shutil.which("java")
    if exe is None:
        raise JavaNotFoundError(needed_for)
    problem = _java_start_problem(exe)
    if problem:
        raise JavaNotFoundError(needed_for, problem)
    return exe


@functools.cache
def _java_start_problem(exe: str) -> str | None:
    """Why ``exe -version`` fails (None when it runs): a broken JVM, a wrapper without a JDK behind it..."""
    try:
        r = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return f"{exe} -version did not answer within 60 s"
    except OSError as e:
        return f"{exe} cannot be run ({e.strerror or e})"
    if r.returncode != 0:
        said = (r.stderr or r.stdout).strip().splitlines()
        return f"{exe} -version failed (exit code {r.returncode}" + (f": {said[-1][:200]}" if said else "") + ")"
    return None


# ---------------------------------------------------------------------------------------------- tokenizer
def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """Tokenize like pycocoevalcap's ``PTBTokenizer``: same jar, options and punctuation removal; one Java run.

    The only difference is where the temporary input file lives (the system temp folder, not site-packages).
    """
    # the constants of pycocoevalcap's PTBTokenizer, the reference implementation

    if not texts:
        return []
    java = require_java("the PTB tokenizer")
    jar = _package_dir() / "tokenizer" / STANFORD_CORENLP_3_4_1_JAR
    # 1. one sentence a line, as PTBTokenizer.tokenize writes them
    sentences = "\n".join(t.replace("\n", " ") for t in texts)
    fd, tmp = tempfile.mkstemp(prefix="segcap-ptb-", suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(sentences.encode())
        # 2. the same command line as PTBTokenizer (jar path made absolute)
        cmd = [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", tmp]
        proc = subprocess.run(cmd, capture_output=True)
    finally:
        os.unlink(tmp)
    program = "pycocoevalcap's Stanford PTB tokenizer"
    if proc.returncode != 0:
        raise JavaRunError(program, java, _java_said(proc.returncode, proc.stderr.decode(errors="replace")), jar)
    lines = proc.stdout.decode(errors="replace").split("\n")
    if len(lines) < len(texts):
        raise JavaRunError(program, java, f"it returned {len(lines)} lines for {len(texts)} captions", jar)
    # 3. drop punctuation tokens, as PTBTokenizer does
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS) for line in lines[: len(texts)]]


# ---------------------------------------------------------------------------------------------- METEOR
def _close_pipes(p: subprocess.Popen) -> None:
    """Close a process's pipes, ignoring a pipe that the process broke by stopping."""
    for stream in (p.stdin, p.stdout, p.stderr):
        if stream is not None and not stream.closed:
            try:
                stream.close()
            except OSError:
                pass


class _MeteorProcess:
    """pycocoevalcap's ``Meteor`` (its JVM and protocol), started in the background and closed explicitly."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meteor-start")
        self._future: Future = self._pool.submit(self._start)
        self.start_seconds = 0.0

    def _start(self):

        t0 = time.perf_counter()
        m = Meteor()
        try:
            m._stat("ready", ["ready"])  # answered once the JVM has loaded its paraphrase table
        except (ValueError, OSError) as e:  # the JVM stopped at once: say what it said, leave no pipe to break
            p = m.meteor_p
            if p.poll() is None:
                p.kill()
            err = p.stderr.read().decode(errors="replace") if p.stderr else ""
            _close_pipes(p)
            raise JavaRunError("pycocoevalcap's METEOR", str(p.args[0]), _java_said(p.wait(), err)) from e
        self.start_seconds = time.perf_counter() - t0
        return m

    def compute_score(self, gts: dict, res: dict) -> float:
        m = self._future.result()
        try:
            score, _ = m.compute_score(gts, res)
        except (ValueError, BrokenPipeError, OSError) as e:
            # the JVM died (out of memory, killed...): its readline returned nothing
            m.meteor_p.kill()
            err = m.meteor_p.stderr.read().decode(errors="replace") if m.meteor_p.stderr else ""
            _close_pipes(m.meteor_p)
            m.lock = threading.Lock()  # compute_score left its lock held; let Meteor.__del__ finish
            said = _java_said(m.meteor_p.wait(), err)
            raise JavaRunError("pycocoevalcap's METEOR", str(m.meteor_p.args[0]), said) from e
        return float(score)

    def close(self) -> None:
        try:
            m = self._future.result()
        except Exception:  # it never started: nothing to close
            m = None
        if m is not None:
            p = m.meteor_p
            _close_pipes(p)
            if p.poll() is None:
                p.kill()
            p.wait()
        self._pool.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------- SPICE
def spice_unavailable_reason() -> str | None:
    """Why SPICE cannot run here (None if it might): Java, or the Stanford CoreNLP 3.6.0 jars it downloads."""
    if shutil.which("java") is None:
        return "Java is not installed (" + JAVA_INSTALL_HINT.split(": ", 1)[1] + ")"

    lib = _package_dir() / "spice" / gsm.SPICELIB
    jar = lib / f"{gsm.JAR}.jar"
    if not jar.is_file():
        return (
            f"SPICE needs the Stanford CoreNLP jars {gsm.JAR}.jar and {gsm.JAR}-models.jar in {lib}, which "
            "pycocoevalcap downloads on first use; they are absent and nothing is downloaded at run time. With "
            "internet access run `python -c \"from pycocoevalcap.spice.get_stanford_models import "
            'get_stanford_models as g; g()"` once, or copy the two jars there'
        )
    if not os.access(lib.parent, os.W_OK):
        return f"SPICE writes its temporary and cache files inside {lib.parent}, which is not writable"
    return None


# ---------------------------------------------------------------------------------------------- scoring
Job = tuple[dict[str, str], dict[str, list[str]]]


def _check_job(i: int, preds: dict[str, str], refs: dict[str, list[str]]) -> None:
    if not preds:
        raise DataError(f"scoring job {i}: no predictions to score")
    missing = [k for k in refs if k not in preds]
    extra = [k for k in preds if k not in refs]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} image(s) with references but no prediction (e.g. {', '.join(missing[:3])})")
        if extra:
            parts.append(f"{len(extra)} prediction(s) for images without references (e.g. {', '.join(extra[:3])})")
        raise DataError(f"scoring job {i}: predictions and references must cover the same images: " + "; ".join(parts))
    empty = [k for k, v in refs.items() if not v]
    if empty:
        raise DataError(f"scoring job {i}: {len(empty)} image(s) have no reference caption (e.g. {', '.join(empty[:3])})")


class CocoScorer:
    """pycocoevalcap's scorers for many (predictions, references) jobs: one tokenizer pass, one METEOR JVM.

    Args:
        metrics: scorers to run, any of ``bleu``, ``meteor``, ``rouge``, ``cider``, ``spice``.
        tokenize: run the PTB tokenizer first (COCO evaluation does); False scores the strings as they are
            (stripped), as nlg-eval does for already tokenized, lower-case text.

    Use as a context manager (or call :meth:`close`) so that the METEOR JVM is shut down.
    """

    def __init__(self, metrics: Iterable[str] = DEFAULT_METRICS, tokenize: bool = True):
        metrics = tuple(m.lower() for m in metrics)
        unknown = [m for m in metrics if m not in SCORERS]
        if unknown or not metrics:
            raise DataError(f"unknown metric(s) {unknown or '(none given)'}; choose from {', '.join(SCORERS)}")
        self.metrics = metrics
        self.tokenize = tokenize
        self.timings: dict[str, float] = {}
        self.spice_status: str | None = None
        needs_java = [n for n, on in (("METEOR", "meteor" in metrics), ("the PTB tokenizer", tokenize)) if on]
        if needs_java:
            require_java(" and ".join(needs_java))
        # the slowest thing first: METEOR loads its paraphrase table while everything else runs
        self._meteor = _MeteorProcess() if "meteor" in metrics else None

    # -- context manager
    def __enter__(self) -> CocoScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Shut the METEOR JVM down (idempotent)."""
        if self._meteor is not None:
            self._meteor.close()
            self.timings["meteor_start"] = round(self._meteor.start_seconds, 3)
            self._meteor = None

    @property
    def meteor_start_seconds(self) -> float | None:
        """Seconds METEOR's JVM took to start and load its paraphrase table (None before it is ready)."""
        if self._meteor is None or not self._meteor._future.done():
            return self.timings.get("meteor_start")
        return round(self._meteor.start_seconds, 3)

    def _add_time(self, key: str, seconds: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + seconds

    # -- tokenizing
    @property
    def meteor(self):
        """pycocoevalcap's ``Meteor`` instance of this scorer (waits for its JVM to be ready); None without METEOR."""
        return None if self._meteor is None else self._meteor._future.result()

    def _prepare(self, jobs: Sequence[Job], tokenize: bool) -> list[tuple[dict[str, list[str]], dict[str, list[str]]]]:
        """Jobs -> pycocoevalcap's (gts, res) dicts, every distinct caption tokenized once."""
        texts: dict[str, str] = {}
        for preds, refs in jobs:
            for c in preds.values():
                texts.setdefault(c, c)
            for rs in refs.values():
                for c in rs:
                    texts.setdefault(c, c)
        t0 = time.perf_counter()
        if tokenize:
            keys = list(texts)
            texts = dict(zip(keys, ptb_tokenize(keys), strict=True))
        else:
            texts = {k: k.strip() for k in texts}
        self._add_time("tokenize", time.perf_counter() - t0)
        out = []
        for preds, refs in jobs:
            ids = list(refs)
            gts = {i: [texts[c] for c in refs[i]] for i in ids}
            res = {i: [texts[preds[i]]] for i in ids}
            out.append((gts, res))
        return out

    # -- scoring
    def score_many(
        self, jobs: Sequence[Job], progress: bool = False, tokenize: bool | None = None
    ) -> list[dict[str, float]]:
        """Score each (predictions, references) job as one corpus (BLEU, METEOR and CIDEr are corpus-level).

        Args:
            jobs: list of (``{image: caption}``, ``{image: [reference, ...]}``) with the same images.
            progress: show progress over the jobs (a bar on a terminal, one line in a log).
            tokenize: override the scorer's ``tokenize`` setting for this call.

        Returns:
            one ``{metric: score}`` per job, keys in :data:`METRIC_KEYS` order (plus ``SPICE`` when it ran).
        """

        for i, (preds, refs) in enumerate(jobs):
            _check_job(i, preds, refs)
        prepared = self._prepare(jobs, self.tokenize if tokenize is None else tokenize)
        results: list[dict[str, float]] = [{} for _ in prepared]

        # METEOR in its own thread: the work happens in the JVM, so it overlaps with the Python scorers below.
        meteor_future: Future | None = None
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meteor")
        if "meteor" in self.metrics:
            if self._meteor is None:
                raise RuntimeError("CocoScorer is closed")

            def run_meteor() -> list[float]:
                t0 = time.perf_counter()
                scores = [self._meteor.compute_score(gts, res) for gts, res in prepared]
                self._add_time("METEOR", time.perf_counter() - t0)
                return scores

            meteor_future = pool.submit(run_meteor)
        try:
            python_scorers = [(n, cls) for n, cls in (("bleu", Bleu), ("rouge", Rouge), ("cider", Cider)) if n in self.metrics]
            # one line in a log when METEOR is done too (a set counts when its Python scorers are)
            with Progress(total=len(prepared), desc="scoring", unit="set", enabled=progress) as bar:
                for j, (gts, res) in enumerate(prepared):
                    for name, cls in python_scorers:
                        t0 = time.perf_counter()
                        if name == "bleu":
                            score, _ = cls(4).compute_score(gts, res, verbose=0)
                            results[j].update({f"Bleu_{n + 1}": float(s) for n, s in enumerate(score)})
                        else:
                            score, _ = cls().compute_score(gts, res)
                            results[j][SCORERS[name][0]] = float(score)
                        self._add_time(SCORERS[name][0] if name != "bleu" else "Bleu", time.perf_counter() - t0)
                    bar.update()
                if meteor_future is not None:
                    for j, s in enumerate(meteor_future.result()):
                        results[j]["METEOR"] = s
        finally:
            pool.shutdown(wait=True)
        if "spice" in self.metrics:
            self._run_spice(prepared, results)
        order = {k: i for i, k in enumerate(METRIC_KEYS + (SPICE_KEY,))}
        return [dict(sorted(r.items(), key=lambda kv: order[kv[0]])) for r in results]

    def score(
        self, preds: dict[str, str], refs: dict[str, list[str]], tokenize: bool | None = None
    ) -> dict[str, float]:
        """Score one set of predictions; see :meth:`score_many`."""
        return self.score_many([(preds, refs)], tokenize=tokenize)[0]

    def _run_spice(self, prepared, results) -> None:
        reason = spice_unavailable_reason()
        if reason is None:
            t0 = time.perf_counter()
            try:
                from pycocoevalcap.spice.spice import Spice

                scorer = Spice()
                for j, (gts, res) in enumerate(prepared):
                    score, _ = scorer.compute_score(gts, res)
                    results[j][SPICE_KEY] = float(score)
            except Exception as e:  # SPICE is optional: report why, never crash
                reason = f"SPICE failed: {type(e).__name__}: {e}"
                for r in results:
                    r.pop(SPICE_KEY, None)
            self._add_time(SPICE_KEY, time.perf_counter() - t0)
        self.spice_status = "ok" if reason is None else f"unavailable: {reason}"


def score_captions(
    preds: dict[str, str],
    refs: dict[str, list[str]],
    tokenize: bool = True,
    metrics: Iterable[str] = DEFAULT_METRICS,
) -> dict[str, float]:
    """Score captions with pycocoevalcap as COCO caption evaluation does.

    Args:
        preds: image -> predicted caption.
        refs: image -> reference captions (the same images as ``preds``).
        tokenize: PTB-tokenize first (True, COCO); False scores the strings as given (nlg-eval on tokenized text).
        metrics: any of ``bleu``, ``meteor``, ``rouge``, ``cider``, ``spice``.

    Returns:
        ``{"Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}`` (those asked for; ``SPICE`` only when it could run,
        else a warning says why).
    """
    with CocoScorer(metrics, tokenize=tokenize) as scorer:
        out = scorer.score(preds, refs)
    if scorer.spice_status and scorer.spice_status != "ok":
        warnings.warn(f"SPICE {scorer.spice_status}", stacklevel=2)
    return out


# ---------------------------------------------------------------------------------------------- human ceiling
def human_rounds(refs: dict[str, list[str]]) -> list[Job]:
    """Leave-one-out jobs: round k takes reference k of every image as its prediction, the others as references.

    Images with fewer than two references cannot take part; an image with fewer than k+1 references sits out
    round k (RSICD has five for every image: five rounds over all images).
    """
    usable = {k: v for k, v in refs.items() if len(v) >= 2}
    if not usable:
        raise DataError("the human-agreement ceiling needs images with at least 2 reference captions; none has")
    rounds: list[Job] = []
    for k in range(max(len(v) for v in usable.values())):
        preds = {i: v[k] for i, v in usable.items() if len(v) > k}
        rest = {i: v[:k] + v[k + 1 :] for i, v in usable.items() if len(v) > k}
        rounds.append((preds, rest))
    return rounds


def average_rounds(scores: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the rounds."""
    keys = [k for k in scores[0] if all(k in s for s in scores)]
    return {k: sum(s[k] for s in scores) / len(scores) for k in keys}


def human_ceiling(
    refs: dict[str, list[str]],
    tokenize: bool = True,
    metrics: Iterable[str] = DEFAULT_METRICS,
    scorer: CocoScorer | None = None,
) -> dict[str, float]:
    """Human-agreement ceiling: each reference scored against the other references of its image.

    Round k scores reference k of every image (as the hypothesis) against the remaining references, as one corpus;
    the result is the mean over the rounds. A system is scored against all references, one more than a human in
    these rounds, so the ceiling is slightly conservative (the usual leave-one-out convention).

    Args:
        refs: image -> reference captions (at least 2 for an image to count).
        tokenize: PTB-tokenize first (COCO).
        metrics: scorers to run (see :func:`score_captions`).
        scorer: an open :class:`CocoScorer` to reuse (its JVM); a new one is opened and closed otherwise.
    """
    rounds = human_rounds(refs)
    if scorer is not None:
        return average_rounds(scorer.score_many(rounds))
    with CocoScorer(metrics, tokenize=tokenize) as own:
        return average_rounds(own.score_many(rounds))
