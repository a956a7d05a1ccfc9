"""Keras and JAX come in without matplotlib and pygments (``seqwatch.models.quiet_imports``), which they would load
for helpers seqwatch never uses, and both packages still import afterwards. In a fresh interpreter: the test
process has Keras already."""
import json
import subprocess
import sys

import pytest

CHECK = """
import json, sys
from seqwatch.models import compile_cache
assert compile_cache.enable_compile_cache() is not None  # imports JAX (its persistent cache)
after_jax = {name: name in sys.modules for name in ("jax", "pygments")}
from seqwatch.models import builders
after_keras = {name: name in sys.modules for name in ("keras", "jax", "matplotlib", "pygments")}
import matplotlib, pygments.lexers
print(json.dumps({"after_jax": after_jax, "after_keras": after_keras, "later": matplotlib.__name__ + " " + pygments.lexers.__name__}))
"""


@pytest.mark.parametrize("first", ["", "import matplotlib.pyplot\n"])
def test_keras_and_jax_import_without_matplotlib_and_pygments_which_import_later(first, tmp_path):
    done = subprocess.run([sys.executable, "-c", first + CHECK], capture_output=True, text=True, timeout=120,
                          env={"KERAS_BACKEND": "jax", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["after_jax"] == {"jax": True, "pygments": False}
    # imported by the user before: left as it was (and Keras's gallery helpers get it)
    assert said["after_keras"] == {"keras": True, "jax": True, "matplotlib": bool(first), "pygments": False}
    assert said["later"] == "matplotlib pygments.lexers"
