"""Every real mail in ../shared/corpus goes through the pipe: exit 0 or 75, never a traceback."""
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # the installed pipe, for every mail of the corpus

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def corpus_files():
    return sorted(CORPUS.glob("*.eml")) if CORPUS.is_dir() else []


@pytest.mark.skipif(not corpus_files(), reason=f"{CORPUS} is absent (as in a user's clone)")
def test_every_corpus_mail_goes_through_without_a_traceback(run_pipe, pipe_env, smtp_sink):
    files = corpus_files()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda path: (path.name, run_pipe(path.read_bytes())), files))
    problems = [(name, done.returncode, done.stderr[-300:]) for name, done in results
                if done.returncode not in (0, 75) or b"Traceback" in done.stderr]
    assert problems == []
    log = (pipe_env.log_dir / "torokiki-pipe.log").read_text()
    assert "outcome=crashed" not in log, log
    assert len([line for line in log.splitlines() if " message-id=" in line]) == len(files)
