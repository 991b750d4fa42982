import subprocess
import sys


def test_importing_core_and_backend_never_imports_torch():
    code = (
        "import sys, slimpipe.spec, slimpipe.cli, slimpipe.client, backend.main; "
        "bad = [m for m in ('torch', 'transformers', 'worker') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_help_is_torch_free():
    code = "import sys; from slimpipe.cli import build_parser; build_parser(); sys.exit('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
