"""The server process's settings."""

import subprocess
import sys


def test_a_serving_process_runs_torch_on_one_thread():
    code = (
        "import torch; torch.set_num_threads(2)\n"
        "from garrison.server.app import configure_server_process\n"
        "configure_server_process(); print(torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "1"
