"""Where the shared data lives for the tests, and how the shipped specs point at the fixtures.

The full-size public datasets behind ``aliexpress``, ``ali_ccp`` and ``kuairand`` cannot be downloaded
here; ``../shared/data/fixtures`` holds samples in their layouts, and these overrides are the same
``--set`` flags the specs' own descriptions and the README give users.
"""

from __future__ import annotations

from msmtrec.data.spec import data_root

ROOT = data_root()
HAVE_DATA = (ROOT / "hillstrom" / "hillstrom.csv").exists()

FIXTURE_OVERRIDES: dict[str, dict[str, str]] = {
    "aliexpress": {
        "split.train": "fixtures/aliexpress_train_sample.csv",
        "split.test": "fixtures/aliexpress_test_sample.csv",
        "scenario.default": "NL",
    },
    "ali_ccp": {"split.method": "random", "files.path": "fixtures/ali_ccp_sample.csv"},
    "kuairand": {"files.path": "fixtures/kuairand_sample.csv"},
}
