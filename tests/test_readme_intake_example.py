"""The README's intake API example, run as a partner runs it right after ``disclosure up``.

``up`` drops the bundled example files into the partners' drop-off folders and takes them in
(``flows.pipeline.take_in``: each file's requests recorded under the file's intake key). The
README's curl block is then read as a shell user reads it — a ``sed`` that rewrites the example
file, piped into ``curl … -d @-``, or a ``curl … -d @FILE`` — and sent with the key the README's
``partners rotate-key belastingdienst`` prints. What the API answers must be what the README
says: ``202`` for the first call, ``200`` with the same id when it is sent again.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import TEST_CHAIN_KEY_RING

from cli.api_server import serve_in_thread
from cli.main import main
from connectors.intake_api import create_app
from flows.pipeline.take_in import take_in_file
from flows.runtime import EXAMPLES_DIR, Runtime
from records.settings import load_settings

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text("utf-8")


def curl_block() -> list[str]:
    """The README's first shell block with a curl in it, one command per entry (continuation
    lines joined, pipes kept)."""
    for block in re.findall(r"```sh\n(.*?)```", README, re.DOTALL):
        if "curl " in block:
            text = re.sub(r"\\\n\s*", " ", block)  # backslash-newline continues a line
            text = re.sub(r"\|\s*\n\s*", "| ", text)  # so does a trailing pipe
            return [line.strip() for line in text.splitlines() if line.strip()]
    raise AssertionError("the README has no curl example")


def body_of(command: str) -> bytes:
    """The body ``curl -d`` sends: ``@FILE``, or ``@-`` after ``sed 's/OLD/NEW/' FILE |``."""
    stages = [shlex.split(stage) for stage in command.split("|")]
    curl = stages[-1]
    assert curl[0] == "curl", command
    data = curl[curl.index("-d") + 1]
    if data != "@-":
        assert data.startswith("@"), command
        return (ROOT / data[1:]).read_bytes()
    assert len(stages) == 2, f"only a sed may feed curl here: {command}"
    sed, script, file = stages[0]
    match = re.fullmatch(r"s/([^/]*)/([^/]*)/", script)
    assert sed == "sed", command
    assert match, command
    text = (ROOT / file).read_text("utf-8")
    assert match[1] in text, f"the sed changes nothing in {file}"
    return text.replace(match[1], match[2], 1).encode()


@pytest.fixture
def after_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[str, str]]:
    """The intake API over a ledger that has taken in every bundled example through the
    drop-off folders, as ``disclosure up`` does; yields its URL and belastingdienst's key."""
    for name in ("DISCLOSURE_DATABASE_URL", "DISCLOSURE_REGISTER_URL", "DISCLOSURE_PARTNERS_FILE",
                 "DISCLOSURE_DROPOFF_DIR", "DISCLOSURE_OUTBOX_DIR", "DISCLOSURE_GROUNDS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("DISCLOSURE_CHAIN_KEY", TEST_CHAIN_KEY_RING)
    monkeypatch.setenv("DISCLOSURE_PSEUDONYM_KEY", "7e" * 32)
    monkeypatch.setenv("DISCLOSURE_REGISTER_PERSONS", "40")
    rt = Runtime.from_settings(load_settings())
    try:
        for example in sorted((EXAMPLES_DIR / "requests").glob("*/*.json")):
            folder = rt.settings.resolved_dropoff_dir / example.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(example, folder / example.name)
        waiting = rt.dropbox.waiting()
        assert len(waiting) == len(list((EXAMPLES_DIR / "requests").glob("*/*.json")))
        for drop in waiting:
            take_in_file(rt, drop)
        capsys.readouterr()
        assert main(["partners", "rotate-key", "belastingdienst"]) == 0
        [key] = re.findall(r"\bdk_[A-Za-z0-9_-]+", capsys.readouterr().out)
        app = create_app(engine=rt.ledger, partners=rt.partners, pseudonymizer=rt.pseudonymizer,
                         table=rt.table, nudge=lambda: None)
        with serve_in_thread(app) as url:
            yield url, key
    finally:
        rt.ledger.dispose()
        rt.register_engine.dispose()


def test_the_readmes_first_call_after_up_is_accepted_as_new(after_up: tuple[str, str]) -> None:
    url, key = after_up
    post, get = curl_block()
    assert "-X POST" in post, post
    assert "/v1/requests" in post, post
    body = body_of(post)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    first = requests.post(f"{url}/v1/requests", data=body, headers=headers, timeout=30)
    assert first.status_code == 202, first.text  # the README: "The first answers `202`"
    answer = first.json()
    assert answer["state"] == "received"
    assert answer["status_url"].endswith(f"/v1/requests/{answer['id']}")
    again = requests.post(f"{url}/v1/requests", data=body, headers=headers, timeout=30)
    assert (again.status_code, again.json()["id"]) == (200, answer["id"])
    path = shlex.split(get)[2].replace("http://127.0.0.1:8000", "").replace("$ID", answer["id"])
    status = requests.get(f"{url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert (status.status_code, status.json()["reference"]) == (200, answer["reference"])


def test_the_example_file_as_it_is_is_the_repeat_the_readme_says(
        after_up: tuple[str, str]) -> None:
    url, key = after_up
    [as_it_is] = re.findall(r"`-d @(examples/[^`]+)`", README)
    answer = requests.post(f"{url}/v1/requests", data=(ROOT / as_it_is).read_bytes(),
                           headers={"Authorization": f"Bearer {key}",
                                    "Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 200, answer.text  # `up` took in this reference and body
