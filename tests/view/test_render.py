"""What pages make of stored values: images only from validated PNG/JPEG bytes, tool
results split into readable parts, LIKE searches that take ``%`` and ``_`` literally,
and the package carrying its templates and static files."""
from __future__ import annotations

import base64
import configparser
import fnmatch
import io
import json
from pathlib import Path

from agentflow.view import create_app
from agentflow.view.render import find_image, message_parts, result_parts
from tests.support.server import REPO

from .scenario import png_base64


def _jpeg() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 10, 10)).save(buf, format="JPEG")
    return base64.b64encode(buf.getvalue()).decode()


def test_images_are_rebuilt_from_validated_png_or_jpeg_bytes():
    png = find_image(png_base64(24, 16))
    assert png and png.mime == "image/png" and (png.width, png.height) == (24, 16)
    assert png.data_url == "data:image/png;base64," + png_base64(24, 16)
    jpeg = find_image("data:image/jpeg;base64," + _jpeg())
    assert jpeg and jpeg.mime == "image/jpeg" and (jpeg.width, jpeg.height) == (30, 20)
    svg = base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>' * 3).decode()
    assert find_image(svg) is None and find_image("data:image/svg+xml;base64," + svg) is None
    assert find_image(base64.b64encode(b"x" * 200).decode()) is None  # base64, but not an image
    assert find_image('" onerror="alert(1)' + "A" * 100) is None
    assert find_image(png_base64()[:40]) is None  # too short to be one


def test_results_are_split_into_parts_with_images_replaced():
    result = json.dumps({"stdout": "line 1\nline 2\n", "exit_code": 0,
                         "images": [{"mime": "image/png", "data": png_base64()}]})
    parts, images = result_parts(result)
    assert dict(parts)["stdout"] == "line 1\nline 2\n"
    assert '"[image 1: PNG 24×16' in dict(parts)["data"] and len(images) == 1 and images[0].where == "images[0].data"
    parts, images = result_parts('Error 2001: asked to fail\n{"value": "boom"}')
    assert parts[0] == ("error", "Error 2001: asked to fail") and parts[1] == ("data", '{"value": "boom"}')
    assert result_parts("plain <b>text</b>") == ([("result", "plain <b>text</b>")], [])
    text, images, urls = message_parts(json.dumps([
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64," + png_base64()}},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]))
    assert text == "look" and len(images) == 1 and urls == ["https://example.com/x.png"]


def test_search_takes_like_wildcards_literally(built):
    client = create_app({"DATABASE_URL": built.url}).test_client()
    html = client.get(f"/rollout/{built.rollout_a}?q=_").get_data(as_text=True)
    assert "page 1 of 1 · 2 tasks" in html  # "loops" (its error names max_turns) and "hostile" (window.__pwned)
    assert 'data-task="loops"' in html and 'data-task="hostile"' in html
    assert "page 1 of 1 · 0 tasks" in client.get(f"/rollout/{built.rollout_a}?q=%25").get_data(as_text=True)
    assert client.get("/runs?q=_").get_data(as_text=True).count('class="run-link"') == 0


def test_every_template_and_static_file_ships_in_the_package():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["agentflow.view"].split(",")]
    package = REPO / "agentflow" / "view"
    files = [str(p.relative_to(package)) for folder in ("templates", "static") for p in (package / folder).iterdir()]
    assert files and [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)] == []
    manifest = (REPO / "MANIFEST.in").read_text()
    assert "graft agentflow/view/templates" in manifest and "graft agentflow/view/static" in manifest
    assert Path(package / "static" / "view.js").stat().st_size < 4000  # the one script stays small


def test_newest_attempts_are_the_highest_attempt_of_each_sample(built):
    """The condition the viewer pages and sorts with (the store's, shared with exports)
    picks, per task sample, the attempt with the highest number — counted here in
    plain SQL — on real runs, one of them resumed after an infra error."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from agentflow.db.rollout import RolloutAttempt as A
    from agentflow.rollout.store import latest_attempts
    from agentflow.view.db import make_readonly_engine

    engine = make_readonly_engine(built.url)
    try:
        with Session(engine) as session:
            for run_id in (built.rollout_a, built.rollout_b, built.demo_rollout):
                highest = dict(((t, s), n) for t, s, n in session.execute(
                    select(A.task_id, A.sample_index, func.max(A.attempt)).where(A.run_id == run_id)
                    .group_by(A.task_id, A.sample_index)))
                newest = latest_attempts(session, run_id)
                assert {key: a.attempt for key, a in newest.items()} == highest
            assert latest_attempts(session, built.rollout_b)[("loops", 0)].attempt == 2
    finally:
        engine.dispose()
