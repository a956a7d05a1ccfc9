"""Installing seqwatch adds exactly one top-level name, ``seqwatch``: never ``models``, ``schemas``,
``pipelines`` or ``tests`` (wheel, sdist as Beam workers install it, and the editable install)."""
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _top_level_packages(wheel: Path) -> set:
    names = zipfile.ZipFile(wheel).namelist()
    return {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}


@pytest.mark.slow
def test_wheel_and_sdist_install_only_the_seqwatch_namespace(tmp_path):
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "sdist")], cwd=REPO,
                   check=True, capture_output=True)
    sdist = next((tmp_path / "sdist").glob("seqwatch-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    assert any(m.endswith("schemas/suites/sensor.json") for m in members)
    # A Beam worker given --setup_file builds this sdist; build a wheel from it, as pip does.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(sdist)], check=True, capture_output=True)
    wheel = next((tmp_path / "wheel").glob("seqwatch-*.whl"))
    assert _top_level_packages(wheel) == {"seqwatch"}
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("models", "schemas", "pipelines"):
        assert f"seqwatch/{package}/__init__.py" in names
    assert "seqwatch/schemas/suites/energy.json" in names
    assert not any(n.startswith("seqwatch/tests") for n in names)


def test_installed_environment_has_no_bare_top_level_packages(tmp_path):
    code = ("import importlib.util as u, json; "
            "print(json.dumps({n: u.find_spec(n) is not None for n in "
            "['models', 'schemas', 'pipelines', 'tests', 'seqwatch.models', 'seqwatch.pipelines']}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ('{"models": false, "schemas": false, "pipelines": false, "tests": false, '
                                  '"seqwatch.models": true, "seqwatch.pipelines": true}')


def test_importing_models_does_not_import_beam():
    code = "import seqwatch.models.detector, seqwatch.models.evaluation, sys; print('apache_beam' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_keras_backend_defaults_to_jax_and_can_be_overridden():
    code = "import seqwatch.models, os; print(os.environ['KERAS_BACKEND'])"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "jax"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "KERAS_BACKEND": "torch"})
    assert out.stdout.strip() == "torch"
