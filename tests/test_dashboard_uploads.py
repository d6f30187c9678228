"""dashboard.uploads: a private upload directory per session, the size limit, and the files a scenario may
read in the dashboard (uploads of the same session and what capsim ships, nothing else)."""

from __future__ import annotations

import gc
import os

import pytest

from dashboard import uploads
from sim.errors import CapsimError, ScenarioError
from sim.profiles.profile import BUILTIN_DIR
from sim.scenario.examples import EXAMPLES_DIR

BASE = str(EXAMPLES_DIR)


@pytest.fixture
def upload_dir():
    d = uploads.UploadDir()
    yield d
    d.remove()


def test_upload_dir_is_private_and_content_addressed(upload_dir):
    assert upload_dir.path.stat().st_mode & 0o777 == 0o700
    assert upload_dir.path.name.startswith("capsim-dashboard-")
    first = upload_dir.store(b"arrival_s\n0.1\n", ".csv", "t.csv")
    assert upload_dir.store(b"arrival_s\n0.1\n", ".csv", "again.csv") == first
    assert first.parent == upload_dir.path and first.read_bytes() == b"arrival_s\n0.1\n"
    assert [p.name for p in upload_dir.path.iterdir()] == [first.name]  # no .part left behind


def test_upload_dir_goes_with_its_owner():
    d = uploads.UploadDir()
    path = d.store(b"{}", ".json", "p.json")
    assert path.is_file()
    where = d.path
    del d
    gc.collect()
    assert not where.exists()


def test_upload_dir_remove_is_idempotent():
    d = uploads.UploadDir()
    d.remove()
    d.remove()
    assert not d.path.exists()


def test_size_limit_names_the_file(upload_dir):
    uploads.check_size(uploads.MAX_UPLOAD_BYTES, "ok.csv")
    with pytest.raises(CapsimError, match=r"big\.csv: 50\.0 MB; .* at most 50 MB"):
        uploads.check_size(uploads.MAX_UPLOAD_BYTES + 1, "big.csv")
    with pytest.raises(CapsimError, match="big.json"):
        upload_dir.store(b"x" * (uploads.MAX_UPLOAD_BYTES + 1), ".json", "big.json")
    assert not any(upload_dir.path.iterdir())


def _scenario(**sections) -> dict:
    data = {"workload": {"arrivals": {"process": "poisson", "rate_rps": 10}},
            "service": {"type": "profile", "profile": "cpu-mlp-fp32"}, "run": {"duration_s": 1}}
    data.update(sections)
    return data


def test_shipped_files_and_this_sessions_uploads_are_allowed(upload_dir):
    trace = upload_dir.store(b"arrival_s\n0.1\n", ".csv", "t.csv")
    allowed = [
        _scenario(),
        _scenario(service={"type": "profile", "profile": str(BUILTIN_DIR / "cpu-mlp-fp32.json")}),
        _scenario(service={"type": "profile", "profile": "../sim/data/profiles/cpu-mlp-fp32.json"}),
        _scenario(workload={"arrivals": {"process": "trace", "path": str(trace)}}),
        _scenario(autoscaler={"from_manifest": "k8s/hpa.yaml", "deployment": "k8s/deployment.yaml"}),
        _scenario(autoscaler={"type": "hpa", "from_manifest": str(EXAMPLES_DIR / "autoscaling/../k8s/hpa.yaml")}),
        _scenario(service={"type": "parametric", "base_s": 0.001}),
    ]
    for data in allowed:
        uploads.check_files(data, BASE, upload_dir.path)
    uploads.check_files("not a mapping", BASE, upload_dir.path)  # the scenario reader reports that


@pytest.mark.parametrize("sections,key", [
    ({"workload": {"arrivals": {"process": "trace", "path": "/etc/passwd"}}}, "workload.arrivals.path"),
    ({"workload": {"arrivals": {"process": "trace", "path": "../../etc/passwd"}}}, "workload.arrivals.path"),
    ({"workload": {"arrivals": {"process": "trace", "path": "~/trace.csv"}}}, "workload.arrivals.path"),
    ({"workload": {"arrivals": {"process": "trace", "path": "bad\x00name.csv"}}}, "workload.arrivals.path"),
    ({"service": {"type": "profile", "profile": "/etc/profile.json"}}, "service.profile"),
    ({"service": {"type": "profile", "profile": "../../../tmp/evil"}}, "service.profile"),
    ({"autoscaler": {"from_manifest": "/etc/hpa.yaml"}}, "autoscaler.from_manifest"),
    ({"autoscaler": {"from_manifest": "k8s/hpa.yaml", "deployment": "/srv/deploy.yaml"}}, "autoscaler.deployment"),
])
def test_other_files_are_refused_with_one_message(upload_dir, sections, key):
    with pytest.raises(ScenarioError) as info:
        uploads.check_files(_scenario(**sections), BASE, upload_dir.path, "uploaded s.yaml")
    message = str(info.value)
    assert message.startswith(f"uploaded s.yaml: {key} = ")
    assert "files uploaded in this session or shipped with capsim" in message
    assert message.count("\n") == 0


def test_every_refused_file_is_named_once(upload_dir):
    data = _scenario(workload={"arrivals": {"process": "trace", "path": "/a.csv"}},
                     service={"type": "profile", "profile": "/b.json"})
    with pytest.raises(ScenarioError, match=r"workload.arrivals.path = '/a.csv', service.profile = '/b.json': "):
        uploads.check_files(data, BASE, upload_dir.path)


def test_another_sessions_upload_is_refused(upload_dir):
    other = uploads.UploadDir()
    try:
        trace = other.store(b"arrival_s\n0.1\n", ".csv", "t.csv")
        with pytest.raises(ScenarioError, match="workload.arrivals.path"):
            uploads.check_files(_scenario(workload={"arrivals": {"process": "trace", "path": str(trace)}}),
                                BASE, upload_dir.path)
    finally:
        other.remove()


def test_a_link_out_of_the_upload_dir_is_followed_and_refused(upload_dir, tmp_path):
    outside = tmp_path / "secret.csv"
    outside.write_text("arrival_s\n0.1\n")
    link = upload_dir.path / "link.csv"
    os.symlink(outside, link)
    with pytest.raises(ScenarioError, match="workload.arrivals.path"):
        uploads.check_files(_scenario(workload={"arrivals": {"process": "trace", "path": str(link)}}),
                            BASE, upload_dir.path)


def test_a_file_named_like_a_shipped_profile_beside_the_scenario_is_a_path(tmp_path, upload_dir):
    (tmp_path / "cpu-mlp-fp32").write_text("{}")  # the simulator would read this file first
    with pytest.raises(ScenarioError, match="service.profile"):
        uploads.check_files(_scenario(), str(tmp_path), upload_dir.path)
    assert uploads.referenced_files(_scenario(), BASE) == {}
