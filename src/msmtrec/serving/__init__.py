"""Export, batch prediction and the HTTP service for trained runs.

* :mod:`msmtrec.serving.export`  — ONNX / TorchScript with a flat named signature (``msmtrec export``);
* :mod:`msmtrec.serving.predict` — streamed CSV / Parquet scoring (``msmtrec predict``);
* :mod:`msmtrec.serving.schemas` — the service's request/response contract: body → validated request;
* :mod:`msmtrec.serving.ranking` — objective values, ad revenue and page assembly;
* :mod:`msmtrec.serving.app`     — the FastAPI service (``msmtrec serve``): the steps of a request and the routes.

Request values are encoded by :class:`msmtrec.data.records.RecordEncoder`, beside the training transform.

Submodules are imported lazily so that ``import msmtrec.serving`` does not pull in FastAPI or ONNX.
"""

from __future__ import annotations

from msmtrec.serving.scorer import Scorer

__all__ = ["Scorer"]
