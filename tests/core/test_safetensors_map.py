import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from garrison.core.safetensors_map import map_safetensors


def test_the_map_reads_what_safetensors_wrote_without_copying(tmp_path):
    path = tmp_path / "t.safetensors"
    tensors = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "h": np.linspace(0, 1, 5, dtype=np.float16),
        "ids": np.array([[1, 2], [3, 4]], dtype=np.int64),
    }
    save_file(tensors, str(path), metadata={"format": "np"})
    mapped = map_safetensors(str(path))
    expected = load_file(str(path))
    assert set(mapped) == set(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(mapped[name], array)
        assert mapped[name].dtype == array.dtype and isinstance(mapped[name].base, np.memmap | np.ndarray)
    with pytest.raises(ValueError):
        mapped["w"][0, 0] = 1.0  # read-only map
    writable = map_safetensors(str(path), mode="c")
    writable["w"][0, 0] = 7.0  # copy-on-write: the file keeps its value
    assert load_file(str(path))["w"][0, 0] == 0.0
