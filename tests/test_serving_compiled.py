"""The ``compiled`` serving backend (torch.compile): same predictions as eager PyTorch at every batch size.

Marked slow: a cold Inductor compile of HEF takes one to two minutes on two cores (run with ``-m slow``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msmtrec.serving.scorer import Scorer
from msmtrec.serving.testing import make_run_dir, raw_rows

pytestmark = pytest.mark.slow


def test_compiled_backend_matches_eager_at_every_batch_size(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "hef", "hef")
    eager = Scorer.load(run)
    compiled = Scorer.load(run)
    compiled.use_compiled()
    assert compiled.backend == "compiled"
    frame = raw_rows(300)
    for n in (1, 2, 37, 300):  # 1 row is padded to 2 inside the compiled path
        want = eager.score_frame(frame.iloc[:n]).predictions
        got = compiled.score_frame(frame.iloc[:n]).predictions
        for task in eager.task_names:
            assert got[task].shape == (n,)
            np.testing.assert_allclose(got[task], want[task], rtol=1e-4, atol=1e-5)
